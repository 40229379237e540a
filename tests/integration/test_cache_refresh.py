"""A key, its account and the routes in steady use are read again in the background before their
cache entries expire, so no request waits on DynamoDB for them, while a revoked key or a changed
route still takes effect within the cache time."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator

import httpx
import pytest

from parley.io import background, expiring
from parley.io.routes import Route, Worker
from parley.settings import Settings
from tests.stack import RunningParley, parley_stack, tables_named

from .helpers import MODEL, WORKER_MODEL, assert_error, request

CACHE_SECONDS = 2.0
# How long a test waits for something that takes milliseconds before it fails: a safety net, so
# a defect fails the test instead of hanging it. It measures nothing.
SAFETY_NET = 30.0
_READS = ("get_item", "scan", "query", "batch_get_item")
# What a request re-reads, in the background, once its entries are due.
REREADS = {"refresh-keys", "refresh-routes", "refresh-accounts", "refresh-policies"}


class CacheClock:
    """The clock of Parley's caches (parley.io.expiring), stopped: it moves only when a test moves
    it, so an entry is due or expired exactly when the test says, however slow the machine."""

    def __init__(self) -> None:
        self._now = time.monotonic()

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class GatedDynamoDB:
    """The suite's DynamoDB client, whose reads can be held: while `hold()` is on, every read
    waits until `release()` (or longer than any safety net), so a request that needs one cannot
    answer meanwhile."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._open = threading.Event()
        self._open.set()
        self._changed = threading.Condition()
        self.waiting = 0
        self.reads: list[str] = []

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def wait_for(self, condition: Callable[[], bool]) -> bool:
        """Whether `condition` (on `reads` and `waiting`) came true within the safety net."""
        with self._changed:
            return self._changed.wait_for(condition, SAFETY_NET)

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._client, name)
        if name not in _READS:
            return call

        def read(**kwargs: Any) -> Any:
            with self._changed:
                self.reads.extend([kwargs["TableName"]] if "TableName" in kwargs else kwargs["RequestItems"])
                self.waiting += 1
                self._changed.notify_all()
            try:
                self._open.wait(SAFETY_NET * 2)
                return call(**kwargs)
            finally:
                with self._changed:
                    self.waiting -= 1
                    self._changed.notify_all()

        return read


@pytest.fixture(scope="module")
def gated(dynamodb) -> GatedDynamoDB:
    return GatedDynamoDB(dynamodb)


@pytest.fixture(scope="module")
def clock() -> Iterator[CacheClock]:
    stopped = CacheClock()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(expiring, "time", stopped)
        yield stopped


@pytest.fixture(scope="module")
def stack(gated, worker, clock) -> Iterator[RunningParley]:
    settings = Settings(
        **tables_named("refresh"),
        key_cache_seconds=CACHE_SECONDS,
        route_cache_seconds=CACHE_SECONDS,
        account_cache_seconds=CACHE_SECONDS,
        policy_cache_seconds=CACHE_SECONDS,
    )
    route = Route(model=MODEL, workers=(Worker(base_url=worker.base_url, model=WORKER_MODEL),))
    with parley_stack(gated, settings, [route], account="refresh") as running:
        yield running


def _post(stack: RunningParley, key: str | None = None) -> httpx.Response:
    return httpx.post(f"{stack.url}/v1/messages", json=request(), headers={"x-api-key": key or stack.key}, timeout=30)


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SAFETY_NET
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {SAFETY_NET:g} s")
        time.sleep(0.01)


def test_entries_in_use_are_refreshed_without_a_request_waiting(stack, gated, clock):
    clock.advance(CACHE_SECONDS * 2)  # whatever was cached before has expired
    assert _post(stack).status_code == 200  # reads key, account, routes and policy into the caches
    clock.advance(CACHE_SECONDS * 0.6)  # past half the cache time: the entries are due for a re-read

    gated.hold()
    try:
        before = len(gated.reads)
        # A request that waited for a held read would not answer before its client gave up.
        assert _post(stack).status_code == 200
        started = gated.wait_for(lambda: REREADS <= set(gated.reads[before:]))
        assert started, f"the request did not re-read its key, account, routes and policy: {gated.reads[before:]}"
        # The answer came while the re-reads it started are still held: it did not wait for them.
        assert gated.waiting >= len(REREADS)
    finally:
        gated.release()
    # The refreshes (each a read, then its cache's put) run as background tasks.
    _wait_for(lambda: not background._background, "the released re-reads did not finish")

    # 1.05 cache times after the first reads, which have expired; the re-reads (at 0.6) have not,
    # nor are they due yet (at 1.1).
    clock.advance(CACHE_SECONDS * 0.45)
    gated.hold()
    try:
        before = len(gated.reads)
        assert _post(stack).status_code == 200  # answered from the refreshed entries
        assert gated.reads[before:] == []
    finally:
        gated.release()


def test_a_revoked_key_stops_within_the_cache_time_on_another_instance(stack, gated, clock, worker):
    # Revoked through a store of its own: this instance's cache is not told.
    from parley.io.keys import KeyStore

    keys = KeyStore(gated, stack.services.settings.keys_table)
    key, record = keys.create(account="refresh", name="revoked elsewhere")
    assert _post(stack, key).status_code == 200  # the key is in this instance's cache now
    assert keys.revoke(record.key_id)
    worker.reset()
    clock.advance(CACHE_SECONDS * 1.05)  # the cache time is up: the cached key has expired
    message = assert_error(_post(stack, key), 401, "authentication_error")
    assert message == "This API key has been revoked."
    assert not worker.requests, "the revoked key's request reached the worker"
