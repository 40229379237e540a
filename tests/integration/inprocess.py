"""Parley in-process, for tests that send thousands of requests: the app on httpx's ASGITransport,
the real stores on DynamoDB Local, the real worker client calling the session's fake worker, and
the real metering path (a usage journal of its own, metered into DynamoDB Local).

Everything but the client's HTTP connection to Parley is the production code path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import threading
from typing import Any, Coroutine, Iterator, TypeVar

import httpx

from parley.web.app import create_app
from parley.web.services import Services

__all__ = ["InProcessParley", "in_process"]

T = TypeVar("T")


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
    def build(cls, base: Services, dynamodb: Any, key: str, journal: str) -> "InProcessParley":
        return cls(Services.build(dataclasses.replace(base.settings, usage_log=journal), dynamodb), key)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def close(self) -> None:
        self.call(self.client.aclose())
        self.call(self.services.worker.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self.services.close()


def in_process(base: Services, dynamodb: Any, key: str) -> Iterator[InProcessParley]:
    with tempfile.TemporaryDirectory(prefix="parley-inprocess-usage-") as journal:
        parley = InProcessParley.build(base, dynamodb, key, journal)
        try:
            yield parley
        finally:
            parley.close()
