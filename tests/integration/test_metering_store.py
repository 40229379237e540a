"""Exactly-once metering on DynamoDB (moto): aggregates always equal the sum of the records."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from parley.core.metering import UsageEvent, day_of
from parley.io.tables import create_tables
from parley.io.usage import UsageStore

# moto's transactions copy the whole table, so their cost grows with it: 1,000 take minutes here.
CONCURRENT_REQUESTS = 200


@pytest.fixture
def tables(dynamodb, request) -> tuple[str, str]:
    """Fresh tables per test: moto copies a whole table on every transaction item."""
    names = {"usage": f"usage-{request.node.name[:40]}", "usage_records": f"records-{request.node.name[:40]}"}
    create_tables(dynamodb, names)
    return names["usage"], names["usage_records"]


def event(number: int, key: str, account: str = "acme", model: str = "qwen3-8b") -> UsageEvent:
    rng = random.Random(number)
    return UsageEvent(
        request_id=f"req_01test{key}{number:06d}",
        at=time.time(),
        key_id=key,
        account=account,
        model=model,
        worker="gpu-1:8000",
        status=200,
        stream=bool(number % 2),
        input_tokens=rng.randint(1, 5000),
        output_tokens=rng.randint(1, 2000),
        cache_read_input_tokens=rng.randint(0, 100),
        cost_micros=rng.randint(0, 10_000),
    )


def totals(store: UsageStore, scope: str) -> dict[str, int]:
    today = day_of(time.time())
    [row] = [row for row in store.aggregates(scope, today, today) if row["model"] is None]
    return {name: row[name] for name in ("requests", "input_tokens", "output_tokens", "cost_micros")}


def expected(events: list[UsageEvent]) -> dict[str, int]:
    return {
        "requests": len(events),
        "input_tokens": sum(e.input_tokens for e in events),
        "output_tokens": sum(e.output_tokens for e in events),
        "cost_micros": sum(e.cost_micros for e in events),
    }


class OneTransactionAtATime:
    """moto applies a transaction by copying the table and restoring the copy on failure, so two
    concurrent transactions can erase each other (DynamoDB itself isolates them). This lets the
    callers run concurrently while moto sees one transaction at a time."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def transact_write_items(self, **kwargs: Any) -> Any:
        with self._lock:
            return self._client.transact_write_items(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_concurrent_requests_are_each_counted_once(dynamodb, tables):
    store = UsageStore(OneTransactionAtATime(dynamodb), *tables)
    events = [event(number, "key_concurrent") for number in range(CONCURRENT_REQUESTS)]
    with ThreadPoolExecutor(16) as pool:
        written = list(pool.map(store.record, events))
    assert all(written)
    assert totals(store, "key#key_concurrent") == expected(events)
    assert totals(store, "account#acme")["requests"] >= CONCURRENT_REQUESTS
    per_model = [
        row for row in store.aggregates("key#key_concurrent", day_of(time.time()), day_of(time.time())) if row["model"]
    ]
    assert [(row["model"], row["requests"]) for row in per_model] == [("qwen3-8b", CONCURRENT_REQUESTS)]

    with ThreadPoolExecutor(16) as pool:
        replayed = list(pool.map(store.record, events))
    assert not any(replayed), "a replayed request must not be counted again"
    assert totals(store, "key#key_concurrent") == expected(events)


class FlakyDynamoDB:
    """A real client, except that transactions fail the way DynamoDB fails under load."""

    def __init__(self, client: Any, throttles: int = 0, lose_acknowledgement: bool = False) -> None:
        self._client = client
        self.throttles = throttles
        self.lose_acknowledgement = lose_acknowledgement
        self.calls = 0

    def transact_write_items(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.throttles:
            self.throttles -= 1
            raise ClientError(
                {"Error": {"Code": "TransactionCanceledException", "Message": "Throttled"},
                 "CancellationReasons": [{"Code": "ThrottlingError"}, {"Code": "None"}]},
                "TransactWriteItems",
            )  # fmt: skip
        answer = self._client.transact_write_items(**kwargs)
        if self.lose_acknowledgement:
            self.lose_acknowledgement = False
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "timed out"}}, "TransactWriteItems")
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_throttled_writes_are_retried_until_they_land(dynamodb, tables):
    flaky = FlakyDynamoDB(dynamodb, throttles=3)
    store = UsageStore(flaky, *tables)
    events = [event(number, "key_throttled") for number in range(5)]
    assert all(store.record(e) for e in events)
    assert flaky.calls == 8
    assert totals(store, "key#key_throttled") == expected(events)


def test_a_write_whose_answer_was_lost_is_not_counted_twice_on_retry(dynamodb, tables):
    flaky = FlakyDynamoDB(dynamodb, lose_acknowledgement=True)
    store = UsageStore(flaky, *tables)
    events = [event(number, "key_lost_ack") for number in range(3)]
    assert [store.record(e) for e in events] == [False, True, True]  # the first landed; its retry found it
    assert flaky.calls == 4
    assert totals(store, "key#key_lost_ack") == expected(events)
