"""Which worker is tried first, and how long Parley waits before trying one again."""

from __future__ import annotations

import random
from collections import Counter

from parley.core.errors import OverloadedError, RateLimitError
from parley.io.failover import FailoverPolicy, WorkerHealth, _pause, attempt_order
from parley.io.routes import Worker
from parley.io.worker import WorkerFailure

A = Worker(base_url="http://a:8000/v1", model="m", weight=3)
B = Worker(base_url="http://b:8000/v1", model="m", weight=1)


class Clock:
    now = 100.0

    def __call__(self):
        return self.now


def test_weights_set_how_often_a_worker_is_first():
    rng, health = random.Random(7), WorkerHealth()
    firsts = Counter(attempt_order([A, B], health, rng)[0].base_url for _ in range(20_000))
    share = firsts[A.base_url] / 20_000
    assert 0.72 < share < 0.78, share  # 3 / (3 + 1)


def test_a_failed_worker_is_tried_last_until_its_cooldown_ends():
    clock = Clock()
    health = WorkerHealth(clock)
    health.failed(A, 30)
    assert all(attempt_order([A, B], health, random.Random(i)) == [B, A] for i in range(50))
    clock.now += 31
    assert {attempt_order([A, B], health, random.Random(i))[0] for i in range(50)} == {A, B}


def test_pause_before_retrying_the_same_worker():
    policy, rng = (
        FailoverPolicy(backoff_seconds=0.25, max_backoff_seconds=4.0, max_retry_after_seconds=10),
        random.Random(1),
    )
    overloaded = WorkerFailure(OverloadedError("busy"), True)
    assert 0.125 <= _pause(1, overloaded, policy, rng) <= 0.25
    assert 0.25 <= _pause(2, overloaded, policy, rng) <= 0.5
    assert 2.0 <= _pause(10, overloaded, policy, rng) <= 4.0, "capped"
    assert _pause(1, WorkerFailure(RateLimitError("slow"), True, retry_after=3), policy, rng) == 3
    assert _pause(1, WorkerFailure(RateLimitError("quota"), True, retry_after=60), policy, rng) is None
