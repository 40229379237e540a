"""Which worker answers, and what happens when it cannot.

Workers are tried in a weighted random order, healthy ones first. A worker that fails (no
connection, no first byte in time, 5xx, 429) cools down for a while on this instance and the
next one is tried at once; the same worker is tried again only after a jittered backoff that
honours its `retry-after`. Attempts are bounded. A refusal the request itself caused (400, 413,
422) is final: every worker would refuse it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence, TypeVar

from ..core.errors import ParleyError
from .routes import Route, Worker
from .worker import WorkerFailure

__all__ = ["FailoverPolicy", "WorkerHealth", "attempt_order", "call_with_failover"]

T = TypeVar("T")
logger = logging.getLogger("parley.failover")


@dataclass(frozen=True, slots=True)
class FailoverPolicy:
    attempts: int = 3
    cooldown_seconds: float = 30.0
    backoff_seconds: float = 0.25
    max_backoff_seconds: float = 4.0
    # A worker asking for a longer pause than this is not waited for: its 429 goes to the client.
    max_retry_after_seconds: float = 10.0


class WorkerHealth:
    """This instance's memory of which workers failed recently, and until when they cool down."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cooling_until: dict[tuple[str, str], float] = {}

    def cooling_until(self, worker: Worker) -> float:
        until = self._cooling_until.get(worker.identity, 0.0)
        return until if until > self._clock() else 0.0

    def failed(self, worker: Worker, seconds: float) -> None:
        self._cooling_until[worker.identity] = self._clock() + seconds

    def succeeded(self, worker: Worker) -> None:
        self._cooling_until.pop(worker.identity, None)


def attempt_order(workers: Sequence[Worker], health: WorkerHealth, rng: random.Random) -> list[Worker]:
    """Healthy workers in a weighted random order (each first with probability weight/total),
    then cooling ones, the soonest recovered first."""
    healthy = [worker for worker in workers if not health.cooling_until(worker)]
    cooling = sorted((worker for worker in workers if health.cooling_until(worker)), key=health.cooling_until)
    healthy.sort(key=lambda worker: rng.random() ** (1.0 / worker.weight), reverse=True)
    return healthy + cooling


async def call_with_failover(
    route: Route,
    call: Callable[[Worker], Awaitable[T]],
    health: WorkerHealth,
    policy: FailoverPolicy,
    rng: random.Random,
    on_failure: Callable[[Worker, WorkerFailure], None] | None = None,
) -> tuple[Worker, T]:
    order = attempt_order(route.workers, health, rng)
    failures: dict[int, WorkerFailure] = {}  # position in `order` → its last failure
    failure: WorkerFailure | None = None
    for attempt in range(policy.attempts):
        position = attempt % len(order)
        worker = order[position]
        if position in failures:
            pause = _pause(attempt, failures[position], policy, rng)
            if pause is None:
                break
            await asyncio.sleep(pause)
        try:
            result = await call(worker)
        except WorkerFailure as failed:
            failure = failed
        except ParleyError as error:  # e.g. the worker's API key could not be read
            failure = WorkerFailure(error, retryable=True)
        else:
            health.succeeded(worker)
            return worker, result
        if not failure.retryable:
            raise failure.error
        health.failed(worker, max(policy.cooldown_seconds, failure.retry_after or 0.0))
        if on_failure is not None:
            on_failure(worker, failure)
        failures[position] = failure
    assert failure is not None
    raise failure.error


def _pause(attempt: int, failure: WorkerFailure, policy: FailoverPolicy, rng: random.Random) -> float | None:
    """Seconds to wait before retrying the worker that just failed, or None to give up."""
    if failure.retry_after is not None and failure.retry_after > policy.max_retry_after_seconds:
        return None
    ceiling = min(policy.max_backoff_seconds, policy.backoff_seconds * 2 ** (attempt - 1))
    backoff = ceiling / 2 + rng.uniform(0, ceiling / 2)
    return max(backoff, failure.retry_after or 0.0)
