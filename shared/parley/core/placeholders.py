"""Placeholders for masked values, and putting the values back into an answer.

A placeholder is `<LABEL_xxxxxxxxxx>`: the entity's label and the first 10 hex digits of
HMAC-SHA256(key, entity NUL value). The same key and value give the same placeholder on every
request, so a conversation resent each turn reads the same to the worker (its prefix cache keeps
working), and no store of clear values is needed: what the answer may restore travels with the
request, in its restore map (placeholder -> value), from which SSNs and secrets are left out.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Mapping, Sequence

import orjson

from .pii import Span
from .policy import NEVER_RESTORED

__all__ = ["LABELS", "PLACEHOLDER", "StreamRestorer", "mask", "placeholder", "restore"]

LABELS: dict[str, str] = {
    "email": "EMAIL",
    "phone": "PHONE",
    "card": "CARD",
    "iban": "IBAN",
    "national_id": "NATIONAL_ID",
    "ssn": "SSN",
    "ip": "IP",
    "secret": "SECRET",
}
"""Each entity's label in its placeholders."""

_DIGITS = 10
PLACEHOLDER: re.Pattern[str] = re.compile(rf"<(?:{'|'.join(LABELS.values())})_[0-9a-f]{{{_DIGITS}}}>")
"""Any placeholder, known to a restore map or not."""

_LABEL_OR_PART = "|".join(
    [f"{re.escape(label)}_[0-9a-f]{{0,{_DIGITS}}}" for label in LABELS.values()]
    + sorted({re.escape(label[:length]) for label in LABELS.values() for length in range(len(label) + 1)})
)
# A text ending in one of these may be the start of a placeholder the next chunk completes.
_PLACEHOLDER_START = re.compile(f"<(?:{_LABEL_OR_PART})")

# Inside JSON a worker may write "<" and ">" as \u003c and \u003e (Go's encoder does: Ollama).
_ESCAPE_PART = r"\\(?:u(?:0(?:0(?:3)?)?)?)?"  # "\", "\u", … "\u003": an escape not complete yet
_JSON_OPEN = r"(?:<|\\u003[cC])"
_JSON_PLACEHOLDER = re.compile(rf"{_JSON_OPEN}((?:{'|'.join(LABELS.values())})_[0-9a-f]{{{_DIGITS}}})(?:>|\\u003[eE])")
_JSON_PLACEHOLDER_START = re.compile(
    rf"{_ESCAPE_PART}|{_JSON_OPEN}(?:{_LABEL_OR_PART}|(?:{'|'.join(LABELS.values())})_[0-9a-f]{{{_DIGITS}}}{_ESCAPE_PART})"
)
_LONGEST_JSON_PLACEHOLDER = 6 + max(map(len, LABELS.values())) + 1 + _DIGITS + 6


def placeholder(key: bytes, entity: str, value: str) -> str:
    """The placeholder of `value` under `key`: "<EMAIL_3f9a0c1d2e>"."""
    message = entity.encode() + b"\0" + value.encode("utf-8", "surrogatepass")
    return f"<{LABELS[entity]}_{hmac.new(key, message, hashlib.sha256).hexdigest()[:_DIGITS]}>"


def mask(text: str, spans: Sequence[Span], key: bytes, restore_map: dict[str, str] | None = None) -> str:
    """`text` with each span (in order, none overlapping) replaced by its placeholder. With a
    `restore_map`, each placeholder an answer may restore is added to it, with its value."""
    parts, end = [], 0
    for span in spans:
        value = text[span.start : span.end]
        token = placeholder(key, span.entity, value)
        if restore_map is not None and span.entity not in NEVER_RESTORED:
            restore_map[token] = value
        parts.append(text[end : span.start])
        parts.append(token)
        end = span.end
    parts.append(text[end:])
    return "".join(parts)


def _json_escaped(value: str) -> str:
    return orjson.dumps(value)[1:-1].decode()


def restore(text: str, restore_map: Mapping[str, str], json_escape: bool = False) -> str:
    """`text` with every placeholder of `restore_map` back to its value (others left as they are).
    `json_escape`: the text is the inside of a JSON string (its brackets maybe written \u003c and
    \u003e), so values go in JSON-escaped."""
    if json_escape:
        if not restore_map or ("<" not in text and "\\u003" not in text):
            return text

        def escaped_value_of(match: re.Match[str]) -> str:
            value = restore_map.get(f"<{match.group(1)}>")
            return match.group() if value is None else _json_escaped(value)

        return _JSON_PLACEHOLDER.sub(escaped_value_of, text)
    if "<" not in text or not restore_map:
        return text

    def value_of(match: re.Match[str]) -> str:
        value = restore_map.get(match.group())
        if value is None:
            return match.group()
        return _json_escaped(value) if json_escape else value

    return PLACEHOLDER.sub(value_of, text)


class StreamRestorer:
    """`restore` for a text that arrives in chunks, such as a streamed content block: a placeholder
    split across chunks is restored once its last piece arrives."""

    def __init__(self, restore_map: Mapping[str, str], json_escape: bool = False) -> None:
        self._restore_map = restore_map
        self._json_escape = json_escape
        self._held = ""  # the end of what was fed that may still become a placeholder

    def feed(self, text: str) -> str:
        """What may be sent now, restored. Holds back only an ending that could still become a
        placeholder ("<EMA", "<EMAIL_3f9a")."""
        if self._json_escape:
            return self._feed_json(text)
        if not self._held and "<" not in text:
            return text
        text = self._held + text
        last = text.rfind("<")
        if last >= 0 and _PLACEHOLDER_START.fullmatch(text, last):
            self._held = text[last:]
            text = text[:last]
        else:
            self._held = ""
        return restore(text, self._restore_map, self._json_escape)

    def _feed_json(self, text: str) -> str:
        if not self._held and "<" not in text and "\\" not in text:
            return text
        text = self._held + text
        self._held = ""
        tail = max(0, len(text) - _LONGEST_JSON_PLACEHOLDER)
        for start in range(tail, len(text)):
            if text[start] in "<\\" and _JSON_PLACEHOLDER_START.fullmatch(text, start):
                self._held = text[start:]
                text = text[:start]
                break
        return restore(text, self._restore_map, True)

    def flush(self) -> str:
        """At the end of the block: whatever is held back, as it is."""
        held, self._held = self._held, ""
        return held
