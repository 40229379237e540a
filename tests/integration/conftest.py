"""The integration stack: DynamoDB Local (tests/conftest.py), the fake worker, and Parley under uvicorn.

Everything is session-scoped and started once; `worker.reset()` runs before every test so each
test sees an empty script queue and an empty request log.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import anthropic
import httpx
import pytest

from parley.io.routes import Route, Timeouts, Worker
from parley.settings import Settings
from tests.fakeworker import FakeWorker
from tests.stack import RunningParley, free_port, parley_stack

from .helpers import (
    DOWN_MODEL,
    MAX_BODY_BYTES,
    MAX_OUTPUT_TOKENS,
    MODEL,
    PING_SECONDS,
    WORKER_MODEL,
)

# No test may hang for long: a stuck worker fails the test instead.
SAFETY_NET = Timeouts(connect=5.0, first_byte=20.0, idle=20.0, buffered=20.0)


@pytest.fixture(scope="session")
def parley(dynamodb: object, worker: FakeWorker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningParley]:
    settings = Settings(
        keys_table="it-keys",
        routes_table="it-routes",
        knowledge_bases_uri=str(tmp_path_factory.mktemp("knowledge")),
        ping_seconds=PING_SECONDS,
        max_body_bytes=MAX_BODY_BYTES,
        worker_attempts=1,  # one attempt: these tests see each worker error as the client would;
        # failover has its own stack in test_failover.py
    )
    routes = [
        Route(
            model=MODEL,
            workers=(Worker(base_url=worker.base_url, model=WORKER_MODEL, max_output_tokens=MAX_OUTPUT_TOKENS),),
            aliases=("claude-*",),
            timeouts=SAFETY_NET,
        ),
        Route(
            model=DOWN_MODEL,
            workers=(Worker(base_url=f"http://127.0.0.1:{free_port()}/v1", model="nobody"),),
            timeouts=SAFETY_NET,
        ),
    ]
    with parley_stack(dynamodb, settings, routes, key_name="t") as running:
        yield running


@pytest.fixture(scope="session")
def client(parley: RunningParley) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=parley.url, api_key=parley.key, max_retries=0, timeout=30)


@pytest.fixture(scope="session")
def http(parley: RunningParley) -> Iterator[httpx.Client]:
    """A raw client, authenticated, for byte-level checks."""
    with httpx.Client(
        base_url=parley.url,
        headers={"x-api-key": parley.key, "anthropic-version": "2023-06-01"},
        timeout=30,
    ) as raw:
        yield raw


@pytest.fixture(scope="session")
def anonymous_http(parley: RunningParley) -> Iterator[httpx.Client]:
    """A raw client with no key."""
    with httpx.Client(base_url=parley.url, timeout=30) as raw:
        yield raw


class OneInstant:
    """`time` as admission sees it, stopped inside one rate-limit window: however long a test takes
    on a busy machine, every request of it falls in the same window."""

    def __init__(self, at: float) -> None:
        self._at = at

    def time(self) -> float:
        return self._at

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def one_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    """Admission's clock stopped in the middle of the current rate-limit window (for the test)."""
    from parley.web import accounting

    monkeypatch.setattr(accounting, "time", OneInstant(time.time() // 60 * 60 + 30))


@pytest.fixture
def raw(parley: RunningParley) -> Iterator[Any]:
    """Plain httpx clients (no retries) of the session's Parley, one per API key: `raw(key)`."""
    clients: list[httpx.Client] = []

    def make(key: str) -> httpx.Client:
        made = httpx.Client(
            base_url=parley.url, headers={"x-api-key": key, "anthropic-version": "2023-06-01"}, timeout=30
        )
        clients.append(made)
        return made

    yield make
    for made in clients:
        made.close()
