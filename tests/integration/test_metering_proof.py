"""The money path, proven on DynamoDB Local through uvicorn: 1,000 concurrent metered requests
(buffered and streamed, several keys and accounts) while DynamoDB throttles transactions and loses
acknowledgements give exactly 1,000 usage records, aggregates equal to the sum of the records, and
no duplicate; a 200-request burst on a 50-rpm key admits exactly 50."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any, Iterator

import httpx
import pytest

from parley.core.metering import Limits, day_of
from parley.io.routes import Route, Timeouts, Worker
from parley.settings import Settings
from tests.dynamodb_faults import DynamoDBFaults
from tests.stack import RunningParley, dynamodb_client, parley_stack, tables_named

from .helpers import MODEL, WORKER_MODEL, request

REQUESTS = 1_000
CONCURRENCY = 32
KEYS_PER_ACCOUNT, ACCOUNTS = 3, 3


@pytest.fixture(scope="module")
def faults(dynamodb) -> DynamoDBFaults:
    return DynamoDBFaults(dynamodb_client(dynamodb.meta.endpoint_url))


@pytest.fixture(scope="module")
def stack(faults, worker) -> Iterator[RunningParley]:
    settings = Settings(**tables_named("proof"))
    route = Route(model=MODEL, workers=(Worker(base_url=worker.base_url, model=WORKER_MODEL),), timeouts=Timeouts())
    with parley_stack(faults.client, settings, [route], account="proof") as running:
        yield running


async def _send(url: str, keys: list[str], count: int, stream_every: int = 2) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    semaphore = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(number: int) -> httpx.Response:
            async with semaphore:
                headers = {"x-api-key": keys[number % len(keys)], "anthropic-version": "2023-06-01"}
                body = request(stream=number % stream_every == 0, messages=[{"role": "user", "content": f"#{number}"}])
                response = await client.post("/v1/messages", json=body, headers=headers)
                await response.aread()
                return response

        return await asyncio.gather(*(one(number) for number in range(count)))


def _records(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        items.extend(page["Items"])
    return items


def test_a_thousand_concurrent_requests_are_metered_exactly_once(stack, faults, dynamodb):
    keys = {}
    for account in range(ACCOUNTS):
        for _ in range(KEYS_PER_ACCOUNT):
            key, record = stack.services.keys.create(account=f"proof-{account}", name="proof")
            keys[key] = record
    faults.throttle("TransactWriteItems", 25)
    faults.lose_acknowledgement("TransactWriteItems", 10)
    responses = asyncio.run(_send(stack.url, list(keys), REQUESTS))
    assert Counter(response.status_code for response in responses) == {200: REQUESTS}
    assert all(b"event: error" not in response.content for response in responses)
    assert stack.services.metered(timeout=120), "the metering loop did not catch up"
    assert faults.injected == {"throttle": 25, "lost": 10}, "every fault was injected"

    records = _records(dynamodb, stack.services.settings.usage_records_table)
    ids = [item["request_id"]["S"] for item in records]
    assert len(ids) == len(set(ids)) == REQUESTS, "one record per request, none twice"
    assert set(ids) == {response.headers["request-id"] for response in responses}
    today = day_of(time.time())
    by_key = {record.key_id: Counter() for record in keys.values()}
    for item in records:
        counts = by_key[item["key_id"]["S"]]
        counts["requests"] += 1
        counts["input_tokens"] += int(item["input_tokens"]["N"])
        counts["output_tokens"] += int(item["output_tokens"]["N"])
    for key_id, counts in by_key.items():
        [row] = [row for row in stack.services.usage.aggregates(f"key#{key_id}", today, today) if row["model"] is None]
        assert {name: row[name] for name in counts} == dict(counts), "the aggregate is the sum of its records"
    account_requests = sum(
        row["requests"]
        for account in range(ACCOUNTS)
        for row in stack.services.usage.aggregates(f"account#proof-{account}", today, today)
        if row["model"] is None
    )
    assert account_requests == REQUESTS


def test_a_burst_on_a_50_rpm_key_admits_exactly_50(stack, one_minute):
    key, _ = stack.services.keys.create(account="proof-burst", name="burst", limits=Limits(requests_per_minute=50))
    responses = asyncio.run(_send(stack.url, [key], 200, stream_every=3))
    statuses = Counter(response.status_code for response in responses)
    assert statuses == {200: 50, 429: 150}, statuses
