"""The worker-side fuzzer against the running app: generated worker answers on the wire (the fake
worker's RawAnswer: any status and content type, hostile headers, bodies valid, mutated, damaged or
cut short) behind Parley on uvicorn, asked for buffered and streamed over HTTP: POST /v1/messages
answered by a Chat Completions worker and by an Anthropic-native one (a route of this module's own),
and POST /v1/chat/completions (passed through).

Every answer is a well-formed Anthropic message or stream, or an error envelope whose type matches its
status (tests/worker_fuzzing.py; OpenAI's shapes on /v1/chat/completions); nothing logs a traceback,
an unhandled error or a failed stream translation; and every request's usage reaches the meter (a
usage record of non-negative ints per request id, checked last). The session summary prints the count.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parley.io.routes import Route, Timeouts, Worker
from tests.fakeworker import FakeWorker
from tests.stack import RunningParley
from tests.worker_fuzzing import (
    WORKER_ANSWERS,
    Case,
    check_chat_stream,
    check_envelope,
    check_events,
    check_message,
    check_openai_envelope,
    check_usage,
    fuzz,
    raw_worker_answers,
    record,
)

from .helpers import MODEL, WORKER_MODEL, parse_sse

PART = "app"
NATIVE_MODEL = "fuzz-native-model"
ANSWER_SECONDS = 30.0  # above the route's own timeouts: a request that takes longer is a hang
OPENAI_EXAMPLES, NATIVE_EXAMPLES, PASSTHROUGH_EXAMPLES = 240, 80, 60
BAD_LOG_LINES = ("Traceback", "unhandled error", "stream translation failed", "Exception in ASGI application")
REQUEST_IDS: list[str] = []
TIMEOUTS = Timeouts(connect=5.0, first_byte=20.0, idle=20.0, buffered=20.0)


class _LogLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(("parley", "uvicorn")):
            return  # the fake worker's own troubles are not Parley's
        text = f"{record.name} {record.levelname} {record.getMessage()}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


@pytest.fixture(scope="module")
def app_logs() -> Iterator[_LogLines]:
    """Every log line while this module runs: Parley's (the root logger, as the suite's log scan sees
    them) and uvicorn's error log, which does not propagate to the root."""
    handler = _LogLines()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def fuzz_http(parley: RunningParley, worker: FakeWorker) -> Iterator[httpx.Client]:
    native = Worker(base_url=worker.base_url.removesuffix("/v1"), model=WORKER_MODEL, api="anthropic")
    parley.services.routes.put(Route(model=NATIVE_MODEL, workers=(native,), timeouts=TIMEOUTS))
    headers = {"x-api-key": parley.key, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=parley.url, headers=headers, timeout=ANSWER_SECONDS) as client:
        yield client
    parley.services.routes.remove(NATIVE_MODEL)


def _request(model: str, stream: bool, shape: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 2048,
        "messages": [{"role": "user", "content": "Hello"}],
        "stream": stream,
    }
    if shape == 1:
        body["thinking"] = {"type": "enabled", "budget_tokens": 1024}
    elif shape == 2:
        body["stop_sequences"] = ["END", "###"]
    return body


def exchange(
    http: httpx.Client, worker: FakeWorker, logs: _LogLines, test: str, case: Case, model: str, stream: bool, shape: int
) -> None:
    """One generated worker answer behind one request; the answer and the logs checked."""
    WORKER_ANSWERS.add(PART, test)
    record(f"app {model} {'stream' if stream else 'buffered'}", case)
    worker.reset()
    worker.enqueue(case.script)  # rendered here, on first use
    before = len(logs.lines)
    response = http.post("/v1/messages", json=_request(model, stream, shape))
    request_id = response.headers.get("request-id")
    assert request_id, f"no request-id: HTTP {response.status_code} {response.content[:300]!r}"
    REQUEST_IDS.append(request_id)
    bad = [line for line in logs.lines[before:] if any(mark in line for mark in BAD_LOG_LINES)]
    assert not bad, "\n".join(bad)[:4000]
    calls = [call for call in worker.requests if call["path"].split("?")[0] in ("/v1/chat/completions", "/v1/messages")]
    assert worker.pending == 0 and len(calls) == 1, f"the worker was asked {len(calls)} times, not once"
    status, content_type = response.status_code, response.headers.get("content-type", "")
    if status != 200:
        check_envelope(status, response.headers, response.content)
    elif stream:
        assert content_type.startswith("text/event-stream"), f"a stream answered with {content_type!r}"
        check_events([(event.event or "", event.json()) for event in parse_sse(response.content)], model, True)
    else:
        assert content_type.startswith("application/json"), f"a message answered with {content_type!r}"
        check_message(response.json(), model)


@st.composite
def _cases(draw: st.DrawFn, native: bool) -> tuple[Case, bool, int]:
    stream = draw(st.booleans())
    return draw(raw_worker_answers(stream, native)), stream, draw(st.integers(0, 2))


@fuzz(OPENAI_EXAMPLES)
@given(case=_cases(native=False))
def test_messages_from_chat_completions_workers(fuzz_http, worker, app_logs, case):
    answer, stream, shape = case
    exchange(fuzz_http, worker, app_logs, "openai", answer, MODEL, stream, shape)


@fuzz(NATIVE_EXAMPLES)
@given(case=_cases(native=True))
def test_messages_from_anthropic_native_workers(fuzz_http, worker, app_logs, case):
    answer, stream, shape = case
    exchange(fuzz_http, worker, app_logs, "anthropic", answer, NATIVE_MODEL, stream, shape)


@fuzz(PASSTHROUGH_EXAMPLES)
@given(case=_cases(native=False))
def test_chat_completions_passthrough(fuzz_http, worker, app_logs, case):
    """The same worker answers behind POST /v1/chat/completions: OpenAI's shapes, passed through."""
    answer, stream, _ = case
    WORKER_ANSWERS.add(PART, "passthrough")
    record(f"app chat completions {'stream' if stream else 'buffered'}", answer)
    worker.reset()
    worker.enqueue(answer.script)
    before = len(app_logs.lines)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 64, "stream": stream}
    response = fuzz_http.post("/v1/chat/completions", json=body)
    assert response.headers.get("request-id"), f"no request-id: HTTP {response.status_code}"
    REQUEST_IDS.append(response.headers["request-id"])
    bad = [line for line in app_logs.lines[before:] if any(mark in line for mark in BAD_LOG_LINES)]
    assert not bad, "\n".join(bad)[:4000]
    status, content_type = response.status_code, response.headers.get("content-type", "")
    if status != 200:
        check_openai_envelope(status, response.headers, response.content)
    elif stream:
        assert content_type.startswith("text/event-stream"), f"a stream answered with {content_type!r}"
        check_chat_stream(response.content, MODEL, pings=True)
    else:
        completion = response.json()
        assert isinstance(completion, dict) and completion.get("model") == MODEL, completion
        if completion.get("usage") is not None:
            check_usage(completion["usage"], "usage", ("prompt_tokens", "completion_tokens", "total_tokens"))


def test_every_answer_was_metered(parley, app_logs):
    """Runs last in this module: each request's usage is in DynamoDB, as non-negative ints."""
    assert REQUEST_IDS, "no request was sent"
    assert parley.services.metered(timeout=120), "the metering loop did not catch up"
    missing, bad = [], []
    for request_id in REQUEST_IDS:
        item = parley.services.usage.record_of(request_id)
        if item is None:
            missing.append(request_id)
            continue
        for name in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cost_micros"):
            if not str(item.get(name, "")).isdigit():
                bad.append((request_id, name, item.get(name)))
    assert not missing, f"{len(missing)} of {len(REQUEST_IDS)} requests have no usage record: {missing[:5]}"
    assert not bad, bad[:10]
    lines = [line for line in app_logs.lines if any(mark in line for mark in BAD_LOG_LINES)]
    assert not lines, "\n".join(lines)[:4000]
