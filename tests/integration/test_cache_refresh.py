"""A key, its account and the routes in steady use are read again in the background before their
cache entries expire, so no request waits on DynamoDB for them, while a revoked key or a changed
route still takes effect within the cache time."""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import httpx
import pytest

from parley.io.routes import Route, Worker
from parley.settings import Settings
from tests.stack import RunningParley, parley_stack, tables_named

from .helpers import MODEL, WORKER_MODEL, request

CACHE_SECONDS = 2.0
_READS = ("get_item", "scan", "query", "batch_get_item")


class GatedDynamoDB:
    """A real (moto) client whose reads can be held: while `hold()` is on, every read waits
    until `release()` (or 10 s), so a request that needs one cannot answer meanwhile."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self.waiting = 0
        self.reads: list[str] = []

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._client, name)
        if name not in _READS:
            return call

        def read(**kwargs: Any) -> Any:
            with self._lock:
                self.reads.append(kwargs["TableName"])
                self.waiting += 1
            try:
                self._open.wait(10)
                return call(**kwargs)
            finally:
                with self._lock:
                    self.waiting -= 1

        return read


@pytest.fixture(scope="module")
def gated(dynamodb) -> GatedDynamoDB:
    return GatedDynamoDB(dynamodb)


@pytest.fixture(scope="module")
def stack(gated, worker) -> Iterator[RunningParley]:
    settings = Settings(
        **tables_named("refresh"),
        key_cache_seconds=CACHE_SECONDS,
        route_cache_seconds=CACHE_SECONDS,
        account_cache_seconds=CACHE_SECONDS,
    )
    route = Route(model=MODEL, workers=(Worker(base_url=worker.base_url, model=WORKER_MODEL),))
    with parley_stack(gated, settings, [route], account="refresh") as running:
        yield running


def _post(stack: RunningParley, key: str | None = None) -> httpx.Response:
    return httpx.post(f"{stack.url}/v1/messages", json=request(), headers={"x-api-key": key or stack.key}, timeout=30)


def _wait_for(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_entries_in_use_are_refreshed_without_a_request_waiting(stack, gated):
    assert _post(stack).status_code == 200  # reads key, account and routes into the caches
    warmed = time.monotonic()
    time.sleep(CACHE_SECONDS * 0.6)  # past half the cache time: the entries are due for a re-read

    gated.hold()
    try:
        before = len(gated.reads)
        assert _post(stack).status_code == 200
        # The answer came while the re-reads it started are still held: it did not wait for them.
        assert gated.waiting >= 1
        refreshed = set(gated.reads[before:])
        assert {"refresh-keys", "refresh-routes", "refresh-accounts"} <= refreshed
    finally:
        gated.release()
    _wait_for(lambda: gated.waiting == 0)

    time.sleep(max(0.0, warmed + CACHE_SECONDS + 0.2 - time.monotonic()))  # the first reads have expired
    gated.hold()
    try:
        before = len(gated.reads)
        assert _post(stack).status_code == 200  # answered from the refreshed entries
        assert gated.reads[before:] == []
    finally:
        gated.release()


def test_a_revoked_key_stops_within_the_cache_time_on_another_instance(stack, gated):
    # Revoked through a store of its own: this instance's cache is not told.
    from parley.io.keys import KeyStore

    keys = KeyStore(gated, stack.services.settings.keys_table)
    key, record = keys.create(account="refresh", name="revoked elsewhere")
    assert _post(stack, key).status_code == 200
    assert keys.revoke(record.key_id)
    deadline = time.monotonic() + CACHE_SECONDS + 1.0
    while (status := _post(stack, key).status_code) == 200:
        assert time.monotonic() < deadline, "a revoked key kept working past the cache time"
        time.sleep(0.1)
    assert status == 401
