"""Faults, end to end: a throttled DynamoDB, a worker that hangs, trickles or sends garbage.

Every request must end, within its timeout, with a correct answer or a correct error, and its
usage must be recorded exactly once (never lost, never doubled). A stack of its own with a short
worker read timeout, and a DynamoDB client that fails on demand the way DynamoDB fails under load.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import httpx
import pytest

from parley.core.metering import day_of
from parley.io.routes import Route, Timeouts, Worker
from parley.settings import Settings
from tests.anthropic_stream import assert_well_formed
from tests.dynamodb_faults import DynamoDBFaults
from tests.fakeworker import Answer, Garbage, Hang
from tests.stack import RunningParley, dynamodb_client, parley_stack, tables_named

from .helpers import MODEL, WORKER_MODEL, assert_error, parse_sse, request

READ_SECONDS = 1.0  # the worker timeouts of this stack: first byte, idle, buffered
PING_SECONDS = 0.3


@pytest.fixture(scope="module")
def flaky(dynamodb) -> DynamoDBFaults:
    """A client of this stack's own on the session's DynamoDB Local, with faults on demand."""
    return DynamoDBFaults(dynamodb_client(dynamodb.meta.endpoint_url))


@pytest.fixture(scope="module")
def stack(flaky, worker) -> Iterator[RunningParley]:
    settings = Settings(
        **tables_named("faults"),
        key_cache_seconds=0.0,  # every request reads its key: the reads can be throttled
        ping_seconds=PING_SECONDS,
        worker_attempts=1,  # each fault is seen as the client sees it; failover has test_failover.py
    )
    timeouts = Timeouts(connect=1.0, first_byte=READ_SECONDS, idle=READ_SECONDS, buffered=READ_SECONDS)
    route = Route(model=MODEL, workers=(Worker(base_url=worker.base_url, model=WORKER_MODEL),), timeouts=timeouts)
    with parley_stack(flaky.client, settings, [route], account="faults") as running:
        yield running


@pytest.fixture
def http(stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, headers={"x-api-key": stack.key}, timeout=15) as client:
        yield client


def recorded_once(stack: RunningParley, request_id: str) -> dict[str, Any]:
    """The request's usage record, once the metering loop has metered everything up to now."""
    assert stack.services.metered(), "the metering loop did not catch up"
    record = stack.services.usage.record_of(request_id)
    assert record is not None, f"usage of {request_id} was lost"
    return record


def stream_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    return [(event.event or "", event.json()) for event in parse_sse(response.content)]


def test_throttled_metering_loses_and_doubles_nothing(stack, flaky, http, worker):
    key_id = stack.services.keys.lookup(stack.key).key_id
    today = day_of(time.time())
    before = [row for row in stack.services.usage.aggregates(f"key#{key_id}", today, today) if row["model"] is None]
    base = before[0] if before else {"requests": 0, "input_tokens": 0, "output_tokens": 0}
    flaky.throttle("TransactWriteItems", 5)
    flaky.lose_acknowledgement("TransactWriteItems", 2)
    ids, input_tokens, output_tokens = [], 0, 0
    for number in range(6):
        worker.enqueue(Answer(text="metered answer", prompt_tokens=100 + number, completion_tokens=7))
        streamed = bool(number % 2)
        response = http.post("/v1/messages", json=request(stream=streamed))
        assert response.status_code == 200
        if streamed:
            assert_well_formed(stream_events(response))
        ids.append(response.headers["request-id"])
        input_tokens, output_tokens = input_tokens + 100 + number, output_tokens + 7
    for request_id in ids:
        assert int(recorded_once(stack, request_id)["input_tokens"]) >= 100
    assert flaky.pending() == 0 and flaky.injected["throttle"] == 5 and flaky.injected["lost"] == 2
    [after] = [row for row in stack.services.usage.aggregates(f"key#{key_id}", today, today) if row["model"] is None]
    assert after["requests"] - base["requests"] == 6, "each request counted exactly once"
    assert after["input_tokens"] - base["input_tokens"] == input_tokens
    assert after["output_tokens"] - base["output_tokens"] == output_tokens


def test_throttled_key_reads_are_a_retryable_500_then_work(stack, flaky, http, worker):
    flaky.throttle("GetItem")
    response = http.post("/v1/messages", json=request())
    assert_error(response, 500, "api_error")
    assert response.headers["x-should-retry"] == "true"
    assert not worker.requests
    assert http.post("/v1/messages", json=request()).status_code == 200, "the key was not cached as unknown"


def test_worker_hanging_before_headers_is_a_timeout(stack, http, worker):
    worker.enqueue(Hang(READ_SECONDS * 4))
    response = http.post("/v1/messages", json=request())
    assert_error(response, 504, "timeout_error")  # Parley's timeout: the worker would have answered later
    assert recorded_once(stack, response.headers["request-id"])["error_type"] == "timeout_error"


def test_worker_hanging_before_headers_ends_the_stream_with_a_timeout_event(stack, http, worker):
    worker.enqueue(Hang(READ_SECONDS * 4))
    response = http.post("/v1/messages", json=request(stream=True))
    result = assert_well_formed(stream_events(response), expect_error=True)
    assert result.error["type"] == "timeout_error" and result.pings >= 1
    recorded_once(stack, response.headers["request-id"])


def test_slow_trickle_within_the_read_timeout_completes(stack, http, worker):
    text = "one two three four"
    worker.enqueue(Answer(text=text, chunk_delay=READ_SECONDS * 0.6))
    response = http.post("/v1/messages", json=request(stream=True))
    result = assert_well_formed(stream_events(response))
    assert result.text == text and result.pings >= 1, "pings keep a slow stream alive"
    recorded_once(stack, response.headers["request-id"])


def test_trickle_slower_than_the_read_timeout_ends_with_an_error_not_a_hang(stack, http, worker):
    worker.enqueue(Answer(text="one two three four five", chunk_delay=READ_SECONDS * 1.6))
    response = http.post("/v1/messages", json=request(stream=True))
    result = assert_well_formed(stream_events(response), expect_error=True)
    assert result.error["type"] == "timeout_error"
    recorded_once(stack, response.headers["request-id"])


GARBAGE_LINES = {
    "json-array": "data: [1, 2, 3]",
    "json-string": 'data: "hello"',
    "choices-not-a-list": 'data: {"choices": 5}',
    "delta-not-an-object": 'data: {"choices": [{"index": 0, "delta": "x"}]}',
    "content-a-number": 'data: {"choices": [{"index": 0, "delta": {"content": 7}}]}',
    "tool-calls-garbage": 'data: {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": "a"}]}}]}',
    "usage-garbage": 'data: {"choices": [], "usage": {"prompt_tokens": "many"}}',
    "finish-reason-number": 'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": 3}]}',
    "truncated-json": 'data: {"choices": [{"index": 0, "delta": {"content": "x',
    "binary-noise": "data: \x00\x01\x02\ufffd\ufffe",
    "huge-line": "data: " + "x" * 200_000,
    "unknown-event": "event: surprise\ndata: {}",
}


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "buffered"])
@pytest.mark.parametrize("case", GARBAGE_LINES)
def test_garbage_from_the_worker_is_an_answer_or_an_error_never_a_crash(stack, http, worker, case, streamed):
    worker.enqueue(Garbage(Answer(text="before after"), at_event=2, line=GARBAGE_LINES[case]))
    response = http.post("/v1/messages", json=request(stream=streamed))
    if streamed:
        assert response.status_code == 200
        events = stream_events(response)
        assert_well_formed(events, expect_error=events[-1][0] == "error")
    elif response.status_code != 200:
        assert_error(response, 500, "api_error")
    recorded_once(stack, response.headers["request-id"])
    assert http.get("/health").status_code == 200
