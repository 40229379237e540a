"""Each request is reported once, with what an operator needs and never the API key."""

from __future__ import annotations

import logging

import pytest

from tests.fakeworker import Answer, WorkerError

from .helpers import HELLO, MODEL


@pytest.fixture
def request_lines(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="parley.requests")
    return caplog


def lines_for(caplog: pytest.LogCaptureFixture, request_id: str) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.getMessage().startswith(request_id)]


def test_a_streamed_request_is_reported_once_with_tokens_and_timings(client, worker, parley, request_lines):
    worker.enqueue(Answer(text="Counting tokens", prompt_tokens=21, completion_tokens=3, chunk_delay=0.01))
    with client.messages.stream(model=MODEL, max_tokens=50, messages=HELLO) as stream:
        stream.get_final_message()
        request_id = stream.response.headers["request-id"]

    [line] = lines_for(request_lines, request_id)
    assert f"POST /v1/messages 200 model={MODEL}" in line
    assert "tokens=21+3" in line and " stream" in line and "ttft=" in line
    assert "key=key_" in line and parley.key not in line


def test_an_error_is_reported_with_its_type(client, worker, request_lines):
    worker.enqueue(WorkerError(503, {"error": {"message": "busy"}}))
    with pytest.raises(Exception) as raised:
        client.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    request_id = raised.value.response.headers["request-id"]

    [line] = lines_for(request_lines, request_id)
    assert " 529 " in line and "error=overloaded_error" in line


def test_a_refused_key_is_reported_without_the_key_it_presented(parley, anonymous_http, request_lines):
    response = anonymous_http.post("/v1/messages", headers={"x-api-key": "sk-parley-not-a-real-key"}, json={})
    [line] = lines_for(request_lines, response.headers["request-id"])
    assert " 401 " in line and "error=authentication_error" in line
    assert "sk-parley-not-a-real-key" not in "".join(record.getMessage() for record in request_lines.records)
