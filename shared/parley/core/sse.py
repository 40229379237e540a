"""Server-sent events: a byte-safe, line-fed decoder for worker streams and the encoder for ours."""

from __future__ import annotations

from typing import Any, Iterable

import orjson

from .errors import ApiError

__all__ = ["MAX_EVENT_BYTES", "SSEDecoder", "encode_event", "encode_events"]

MAX_EVENT_BYTES = 16 * 1024 * 1024

# Anthropic's own ping, byte for byte.
_PING = b'event: ping\ndata: {"type": "ping"}\n\n'


def encode_event(name: str, data: dict[str, Any]) -> bytes:
    if name == "ping":
        return _PING
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def encode_events(events: Iterable[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(encode_event(name, data) for name, data in events)


class SSEDecoder:
    """Feed it bytes as they arrive; it returns the `data` payload of each complete event.

    Lines are split on bytes before decoding, so a UTF-8 character cut across two reads is
    whole when decoded. Comments (`: keep-alive`) and fields other than `data` are ignored;
    several `data` lines of one event are joined with newlines, as the SSE spec says.

    Linear in what it is fed: each read is searched once, for its own newlines; the start of a
    line that has not ended yet is kept as pieces, joined once when the line ends; an event's
    lines are joined once when it ends. One event (its lines so far) is capped at
    `max_event_bytes`.
    """

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._line: list[bytes] = []  # the pieces of a line not ended yet
        self._line_size = 0
        self._data: list[bytes] = []  # the data lines of the event so far
        self._size = 0
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[str]:
        payloads: list[str] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            line = chunk[start:end]
            start = end + 1
            if self._line:
                self._line.append(line)
                line = b"".join(self._line)
                self._line.clear()
                self._line_size = 0
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                    payloads.append(data.decode("utf-8", "replace"))
                    self._data = []
                    self._size = 0
            elif line.startswith(b"data:"):
                value = line[6:] if line.startswith(b"data: ") else line[5:]
                self._data.append(value)
                self._size += len(value)
                if self._size > self._max:
                    raise ApiError("The worker sent a stream event larger than Parley accepts.")
        if start < len(chunk):
            self._line.append(chunk[start:] if start else chunk)
            self._line_size += len(chunk) - start
            if self._size + self._line_size > self._max:
                raise ApiError("The worker sent a stream event larger than Parley accepts.")
        return payloads

    def close(self) -> list[str]:
        """The stream ended: an event not followed by a blank line still counts."""
        payloads = self.feed(b"\n\n") if (self._line or self._data) else []
        self._line.clear()
        self._line_size = 0
        return payloads
