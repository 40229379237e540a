"""Rate-limit leases: a warm instance admits from its lease without DynamoDB, and instances
sharing a window never admit more than its limit between them."""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from parley.core.errors import RateLimitError
from parley.core.metering import Limits, window_at
from parley.io.limits import RateLimiter
from parley.io.tables import create_tables


@pytest.fixture(scope="module")
def limits_table(dynamodb) -> str:
    create_tables(dynamodb, {"limits": "leases-limits"})
    return "leases-limits"


def counting(dynamodb):
    calls: list[str] = []
    dynamodb.meta.events.register("before-call.dynamodb.UpdateItem", lambda **_: calls.append("UpdateItem"))
    return calls


def mid_window() -> float:
    """An instant in the middle of the current window: the limiter is handed its clock, so every
    call of a test falls in one window however long the test takes (no waiting for a fresh minute)."""
    return time.time() // 60 * 60 + 30


def test_instances_never_admit_more_than_the_limit_between_them(dynamodb, limits_table):
    limits = Limits(requests_per_minute=160)  # leases of up to 10 requests
    scope = f"key#leases-{secrets.token_hex(4)}"
    instances = [RateLimiter(dynamodb, limits_table) for _ in range(3)]
    now = mid_window()

    def one(number: int) -> bool:
        limiter = instances[number % len(instances)]
        try:
            if limiter.acquire_local([(scope, limits)], 5, now) is None:
                limiter.acquire([(scope, limits)], 5, now)
        except RateLimitError:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        admitted = sum(pool.map(one, range(400)))
    assert admitted <= 160
    # each instance can be refused early by at most one unused lease of the others
    assert admitted >= 160 - 2 * 10
    item = dynamodb.get_item(TableName=limits_table, Key={"pk": {"S": f"{scope}#{window_at(now).start}"}})["Item"]
    assert int(item["requests"]["N"]) <= 160


def test_a_warm_instance_admits_from_its_lease(dynamodb, limits_table):
    limits = Limits(requests_per_minute=16_000, tokens_per_minute=10**9)
    scope = f"key#warm-{secrets.token_hex(4)}"
    limiter = RateLimiter(dynamodb, limits_table)
    calls = counting(dynamodb)
    now = mid_window()
    admitted_locally = 0
    for _ in range(200):
        allowances = limiter.acquire_local([(scope, limits)], 10, now)
        if allowances is None:
            allowances = limiter.acquire([(scope, limits)], 10, now)
        else:
            admitted_locally += 1
        limiter.note_tokens(allowances[0], 5)  # the real usage was 15 tokens
    assert len(calls) <= 8, calls  # leases of 1, 2, 4, … requests
    assert admitted_locally >= 190
    limiter.flush()
    item = dynamodb.get_item(TableName=limits_table, Key={"pk": {"S": f"{scope}#{window_at(now).start}"}})["Item"]
    assert int(item["tokens"]["N"]) == 200 * 15
    assert int(item["requests"]["N"]) >= 200


@pytest.mark.parametrize("limits", [Limits(requests_per_minute=0), Limits(tokens_per_minute=0)], ids=["rpm", "tpm"])
def test_a_limit_of_zero_admits_nobody(dynamodb, limits_table, limits):
    limiter = RateLimiter(dynamodb, limits_table)
    scope = f"key#zero-{secrets.token_hex(4)}"
    for _ in range(3):
        with pytest.raises(RateLimitError):
            if limiter.acquire_local([(scope, limits)], 10, mid_window()) is None:
                limiter.acquire([(scope, limits)], 10, mid_window())
