"""Identifiers in Anthropic's shapes: msg_01…, toolu_01…, req_01…."""

from __future__ import annotations

import re
import secrets

__all__ = ["is_valid_tool_id", "new_message_id", "new_request_id", "new_tool_use_id"]

_BASE58 = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
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


def is_valid_tool_id(value: object) -> bool:
    """Anthropic's tool_use id pattern, which clients send back verbatim."""
    return isinstance(value, str) and _TOOL_ID.match(value) is not None
