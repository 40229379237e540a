"""Per-worker adjustments of a Chat Completions request, for servers stricter than the spec.

- Tool schemas: guided-decoding backends (llama.cpp's grammar converter, some vLLM and SGLang
  backends) reject keywords that Claude Code's tools carry (`$schema`, `format: uri`, schema-
  valued `additionalProperties`). `adapt_tool_schema` drops them, in schema positions only: a
  property *named* "format" is kept.
- Tool-call ids: Mistral's tokenizer (vLLM `--tokenizer-mode mistral`) takes only 9-character
  alphanumeric ids. `short_tool_id` maps each id to one deterministically, so a tool_use and
  its tool_result still pair up, across turns too.
- System messages: Mistral's and Gemma's chat templates refuse a system message anywhere but
  first, and Claude Code sends its reminders as system messages after the first user turn.
  `core.request` folds them into the neighbouring user turn for such a worker;
  `later_system_message` tells whether a prompt has one (so whether folding would change it).
"""

from __future__ import annotations

import hashlib
import string
from typing import Any

__all__ = ["adapt_tool_schema", "later_system_message", "short_tool_id", "shorten_tool_ids"]

_DROPPED_KEYWORDS = frozenset({"$schema", "$id", "$comment", "format", "propertyNames", "examples"})
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_VALUES = ("items", "not", "if", "then", "else", "contains", "additionalItems")
_ALPHABET = string.ascii_letters + string.digits


def adapt_tool_schema(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return schema
    adapted: dict[str, Any] = {}
    for keyword, value in schema.items():
        if keyword in _DROPPED_KEYWORDS:
            continue
        if keyword == "additionalProperties" and not isinstance(value, bool):
            continue
        if keyword in _SCHEMA_MAPS and isinstance(value, dict):
            value = {name: adapt_tool_schema(sub) for name, sub in value.items()}
        elif keyword in _SCHEMA_LISTS and isinstance(value, list):
            value = [adapt_tool_schema(sub) for sub in value]
        elif keyword in _SCHEMA_VALUES:
            value = [adapt_tool_schema(sub) for sub in value] if isinstance(value, list) else adapt_tool_schema(value)
        adapted[keyword] = value
    return adapted


def short_tool_id(tool_id: str) -> str:
    if len(tool_id) == 9 and tool_id.isascii() and tool_id.isalnum():
        return tool_id
    number = int.from_bytes(hashlib.sha256(tool_id.encode()).digest()[:8], "big")
    digits = []
    for _ in range(9):
        number, digit = divmod(number, len(_ALPHABET))
        digits.append(_ALPHABET[digit])
    return "".join(digits)


def shorten_tool_ids(messages: list[dict[str, Any]]) -> None:
    """Rewrite, in place, every tool call id and tool_call_id in `messages`."""
    for message in messages:
        for call in message.get("tool_calls") or ():
            call["id"] = short_tool_id(call["id"])
        if message.get("role") == "tool":
            message["tool_call_id"] = short_tool_id(message["tool_call_id"])


def later_system_message(messages: list[dict[str, Any]]) -> bool:
    """Whether a system message comes after the first turn, or after another system message."""
    return any(message["role"] == "system" for message in messages[1:])
