"""A small per-instance cache whose entries expire."""

from __future__ import annotations

import time
from typing import Generic, TypeVar

__all__ = ["ExpiringCache"]

V = TypeVar("V")
_MISSING = object()


class ExpiringCache(Generic[V]):
    def __init__(self, seconds: float, max_entries: int = 10_000) -> None:
        self._seconds = seconds
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, V]] = {}

    def get(self, key: str) -> V | object:
        entry = self._entries.get(key)
        if entry is None:
            return _MISSING
        expires, value = entry
        if expires < time.monotonic():
            del self._entries[key]
            return _MISSING
        return value

    def put(self, key: str, value: V) -> None:
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self._seconds, value)

    def clear(self) -> None:
        self._entries.clear()

    MISSING = _MISSING
