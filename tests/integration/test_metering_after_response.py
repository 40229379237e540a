"""Where the process is not frozen when a response ends (make dev, a container), usage is written
right after the response instead of before its last byte: still exactly once, and still there."""

from __future__ import annotations

import time
from typing import Iterator

import httpx
import pytest

from parley.io.routes import Route, Worker
from parley.settings import Settings
from tests.fakeworker import Answer
from tests.stack import RunningParley, parley_stack, tables_named

from .helpers import MODEL, WORKER_MODEL, request


@pytest.fixture(scope="module")
def after_parley(dynamodb, worker) -> Iterator[RunningParley]:
    settings = Settings(
        **tables_named("after"),
        meter_after_response=True,
    )
    routes = [Route(model=MODEL, workers=(Worker(base_url=worker.base_url, model=WORKER_MODEL),))]
    with parley_stack(dynamodb, settings, routes) as running:
        yield running


def test_usage_is_written_once_right_after_the_response(after_parley, worker):
    worker.enqueue(Answer(text="After.", prompt_tokens=11, completion_tokens=3))
    worker.enqueue(Answer(text="Streamed after.", prompt_tokens=12, completion_tokens=4))
    headers = {"x-api-key": after_parley.key, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=after_parley.url, headers=headers, timeout=30) as client:
        ids = [
            client.post("/v1/messages", json=request()).headers["request-id"],
            client.post("/v1/messages", json=request(stream=True)).headers["request-id"],
        ]
    records = {}
    deadline = time.monotonic() + 5
    while len(records) < 2 and time.monotonic() < deadline:
        records = {rid: after_parley.services.usage.record_of(rid) for rid in ids}
        records = {rid: record for rid, record in records.items() if record}
        time.sleep(0.02)
    assert [int(float(records[rid]["input_tokens"])) for rid in ids] == [11, 12]
    assert not after_parley.services.usage.record(__import__("dataclasses").replace(_event_of(records[ids[0]]))), (
        "a second write of the same request is a no-op"
    )


def _event_of(record):
    from parley.core.metering import UsageEvent

    return UsageEvent(
        request_id=record["request_id"],
        at=float(record["at"]),
        key_id=record["key_id"],
        account=record["account"],
        model=record["model"],
        worker=record["worker"],
        status=int(float(record["status"])),
        stream=False,
    )
