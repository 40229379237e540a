"""Parley in-process, for tests that send thousands of requests: the app on httpx's ASGITransport,
the real key and route stores (moto), the real worker client calling the session's fake worker,
and an in-memory usage store.

Everything but the client's HTTP connection to Parley and the usage table is the production code path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any, Coroutine, Iterator, TypeVar

import httpx

from parley.core.metering import UsageEvent
from parley.web.app import create_app
from parley.web.services import Services

__all__ = ["InProcessParley", "MemoryUsage"]

T = TypeVar("T")


class MemoryUsage:
    """The usage store's `record` contract (exactly once per request id) in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: dict[str, UsageEvent] = {}
        self.duplicates = 0

    def record(self, event: UsageEvent) -> bool:
        with self._lock:
            if event.request_id in self.events:
                self.duplicates += 1
                return False
            self.events[event.request_id] = event
            return True

    def month_spend_micros(self, scope: str, now: float) -> int:
        return 0

    def aggregates(self, scope: str, first_day: str, last_day: str) -> list[dict[str, Any]]:
        return []


class InProcessParley:
    """One event loop in a thread and an httpx.AsyncClient on the app; `call` runs a coroutine there."""

    def __init__(self, services: Services, key: str) -> None:
        self.services = services
        self.key = key
        self.app = create_app(lambda: services)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="parley-inprocess", daemon=True)
        self._thread.start()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://parley.test", timeout=30
        )

    @classmethod
    def build(cls, base: Services, dynamodb: Any, key: str) -> "InProcessParley":
        services = dataclasses.replace(Services.build(base.settings, dynamodb), usage=MemoryUsage())
        return cls(services, key)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def close(self) -> None:
        self.call(self.client.aclose())
        self.call(self.services.worker.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def in_process(base: Services, dynamodb: Any, key: str) -> Iterator[InProcessParley]:
    parley = InProcessParley.build(base, dynamodb, key)
    try:
        yield parley
    finally:
        parley.close()
