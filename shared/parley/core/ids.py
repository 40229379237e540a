"""Identifiers in Anthropic's shapes: msg_01…, toolu_01…, req_01…."""

from __future__ import annotations

import re
import secrets

__all__ = ["is_valid_tool_id", "new_message_id", "new_request_id", "new_tool_use_id"]

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def _suffix(length: int = 22) -> str:
    number = int.from_bytes(secrets.token_bytes(17), "big")
    digits = []
    for _ in range(length):
        number, digit = divmod(number, 58)
        digits.append(_BASE58[digit])
    return "".join(digits)


def new_message_id() -> str:
    return "msg_01" + _suffix()


def new_tool_use_id() -> str:
    return "toolu_01" + _suffix()


def new_request_id() -> str:
    return "req_01" + _suffix()


def is_valid_tool_id(value: object) -> bool:
    """Anthropic's tool_use id pattern, which clients send back verbatim."""
    return isinstance(value, str) and _TOOL_ID.match(value) is not None
