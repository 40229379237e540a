"""Exactly-once metering on DynamoDB Local: aggregates always equal the sum of the records, whether
events come one at a time or in batches, concurrently, replayed, throttled, or with lost answers;
and one event DynamoDB refuses never costs the others of its batch."""

from __future__ import annotations

import dataclasses
import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from parley.core.metering import UsageEvent, day_of
from parley.io.tables import create_tables
from parley.io.usage import MAX_TRANSACTION_ITEMS, UsageStore
from tests.dynamodb_faults import DynamoDBFaults
from tests.stack import dynamodb_client

CONCURRENT_REQUESTS = 1_000


@pytest.fixture
def tables(dynamodb, request) -> tuple[str, str]:
    names = {"usage": f"usage-{request.node.name[:40]}", "usage_records": f"records-{request.node.name[:40]}"}
    create_tables(dynamodb, names)
    return names["usage"], names["usage_records"]


@pytest.fixture
def faults(dynamodb) -> DynamoDBFaults:
    return DynamoDBFaults(dynamodb_client(dynamodb.meta.endpoint_url))


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


def test_concurrent_writers_count_each_request_once(dynamodb, tables):
    store = UsageStore(dynamodb, *tables)
    events = [event(number, f"key_c{number % 4}") for number in range(CONCURRENT_REQUESTS)]
    batches = [events[start : start + 25] for start in range(0, len(events), 25)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(store.record_batch, batches))
    assert sum(len(result.recorded) for result in results) == CONCURRENT_REQUESTS
    for key in range(4):
        assert totals(store, f"key#key_c{key}") == expected([e for e in events if e.key_id == f"key_c{key}"])
    assert totals(store, "account#acme") == expected(events)

    # the same events again, in other batches and from other writers at once: nothing counts twice
    reshuffled = random.Random(7).sample(events, len(events))
    with ThreadPoolExecutor(8) as pool:
        replays = list(pool.map(store.record_batch, [reshuffled[start::8] for start in range(8)]))
    assert sum(len(result.already_recorded) for result in replays) == CONCURRENT_REQUESTS
    assert not any(result.recorded for result in replays)
    assert totals(store, "account#acme") == expected(events)


def test_a_batch_is_split_into_transactions_that_fit(dynamodb, tables):
    store = UsageStore(dynamodb, *tables)
    events = [event(number, f"key_w{number}", account=f"acct-{number}") for number in range(60)]  # 7 rows each
    calls: list[int] = []
    dynamodb.meta.events.register(
        "before-parameter-build.dynamodb.TransactWriteItems",
        lambda params, **_: calls.append(len(params["TransactItems"])),
    )
    try:
        result = store.record_batch(events)
    finally:
        dynamodb.meta.events.unregister("before-parameter-build.dynamodb.TransactWriteItems")
    assert len(result.recorded) == 60
    assert all(size <= MAX_TRANSACTION_ITEMS for size in calls) and len(calls) >= 5, calls


def test_records_already_written_are_dropped_from_a_batch_and_the_rest_written(dynamodb, tables):
    store = UsageStore(dynamodb, *tables)
    events = [event(number, "key_mixed") for number in range(10)]
    assert store.record_batch(events[:4]).recorded
    result = store.record_batch(events + events[:2])  # old, new, and duplicates within the batch
    assert sorted(result.already_recorded) == sorted(
        [e.request_id for e in events[:4]] + [e.request_id for e in events[:2]]
    )
    assert sorted(result.recorded) == sorted(e.request_id for e in events[4:])
    assert totals(store, "key#key_mixed") == expected(events)


def test_throttled_writes_are_retried_until_they_land(faults, tables):
    store = UsageStore(faults.client, *tables)
    events = [event(number, "key_throttled") for number in range(5)]
    faults.throttle("TransactWriteItems", 3)
    faults.server_error("TransactWriteItems", 2)
    assert len(store.record_batch(events).recorded) == 5
    assert faults.injected == {"throttle": 3, "server": 2}
    assert totals(store, "key#key_throttled") == expected(events)


def test_a_write_whose_answer_was_lost_is_not_counted_twice_on_retry(faults, tables):
    store = UsageStore(faults.client, *tables)
    events = [event(number, "key_lost_ack") for number in range(3)]
    faults.lose_acknowledgement("TransactWriteItems")
    result = store.record_batch(events)
    assert faults.injected["lost"] == 1
    assert len(result.recorded) + len(result.already_recorded) == 3 and not result.refused
    assert totals(store, "key#key_lost_ack") == expected(events)


def test_an_event_dynamodb_refuses_is_isolated_and_the_others_are_written(dynamodb, tables):
    store = UsageStore(dynamodb, *tables)
    good = [event(number, "key_isolate") for number in range(6)]
    # a sort key over DynamoDB's 1,024-byte limit: the whole transaction is cancelled
    bad = dataclasses.replace(event(99, "key_isolate"), model="m" * 1_100)
    result = store.record_batch([*good[:3], bad, *good[3:]])
    assert [refused.request_id for refused, _ in result.refused] == [bad.request_id]
    assert "ValidationError" in result.refused[0][1]
    assert sorted(result.recorded) == sorted(e.request_id for e in good)
    assert totals(store, "key#key_isolate") == expected(good)
    assert store.record_of(bad.request_id) is None
