"""A small per-instance cache whose entries expire, and are due for an early re-read before."""

from __future__ import annotations

import time
from typing import Generic, TypeVar

__all__ = ["ExpiringCache"]

V = TypeVar("V")
_MISSING = object()


class ExpiringCache(Generic[V]):
    """Entries live `seconds`; from half that age on, `due` asks for one re-read, made off the
    request's path, whose `put` starts the entry's life again. An entry in steady use is then
    never missing when a request needs it, and never older than `seconds`."""

    def __init__(self, seconds: float, max_entries: int = 10_000) -> None:
        self._seconds = seconds
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, float, V]] = {}  # key: (due at, expires at, value)

    def get(self, key: str) -> V | object:
        entry = self._entries.get(key)
        if entry is None:
            return _MISSING
        _, expires, value = entry
        if expires < time.monotonic():
            del self._entries[key]
            return _MISSING
        return value

    def due(self, key: str) -> bool:
        """True, once per entry's life, when the entry is past half its life and still valid."""
        entry = self._entries.get(key)
        if entry is None:
            return False
        due, expires, value = entry
        if not due <= time.monotonic() <= expires:
            return False
        self._entries[key] = (float("inf"), expires, value)
        return True

    def put(self, key: str, value: V) -> None:
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        now = time.monotonic()
        self._entries[key] = (now + self._seconds / 2, now + self._seconds, value)

    def clear(self) -> None:
        self._entries.clear()

    MISSING = _MISSING
