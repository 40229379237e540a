"""Identifiers in Anthropic's shapes: msg_01…, toolu_01…, req_01…, msgbatch_01…."""

from __future__ import annotations

import re
import secrets

__all__ = [
    "is_tool_use_id",
    "is_valid_tool_id",
    "new_batch_id",
    "new_message_id",
    "new_request_id",
    "new_tool_use_id",
]

_BASE58 = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+")
_TOOL_USE_ID = re.compile(r"toolu_[a-zA-Z0-9_-]{1,122}")  # 128 characters at most
# A random byte below 232 (4 x 58) is an unbiased base-58 digit; bytes from 232 up are dropped.
_DIGIT_OF_BYTE = bytes(_BASE58[byte % 58] for byte in range(256))
_UNEVEN_BYTES = bytes(range(4 * 58, 256))


def _suffix(length: int = 22) -> str:
    digits = b""
    while len(digits) < length:
        digits += secrets.token_bytes(length + 8).translate(_DIGIT_OF_BYTE, _UNEVEN_BYTES)
    return digits[:length].decode()


def new_message_id() -> str:
    return "msg_01" + _suffix()


def new_tool_use_id() -> str:
    return "toolu_01" + _suffix()


def new_request_id() -> str:
    return "req_01" + _suffix()


def new_batch_id() -> str:
    """The shape of the API's own batch ids (`msgbatch_013Zva2CMHLNnXjNJJKqJ2EF`)."""
    return "msgbatch_01" + _suffix()


def is_valid_tool_id(value: object) -> bool:
    """Anthropic's tool id pattern `^[a-zA-Z0-9_-]+$` (the whole string: no newline at its end)."""
    return isinstance(value, str) and _TOOL_ID.fullmatch(value) is not None


def is_tool_use_id(value: object) -> bool:
    """An id in the shape of Anthropic's own tool_use ids: `toolu_` and that pattern, 128 characters
    at most. A worker's id that is one is kept in answers; any other (vLLM's `chatcmpl-tool-…`,
    `call_…`) is replaced, so clients see the ids they would see from Anthropic."""
    return isinstance(value, str) and _TOOL_USE_ID.fullmatch(value) is not None
