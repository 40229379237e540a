"""Worker failures as the SDK sees them: HTTP errors before the answer, `error` events after it began."""

from __future__ import annotations

import anthropic
import pytest

from tests.fakeworker import Answer, Drop, Garbage, StreamError, WorkerError

from .helpers import DOWN_MODEL, assert_error, request, sdk_stream_final, stream_raw

CONTEXT_TOO_LONG = (
    "This model's maximum context length is 4096 tokens. However, you requested 9000 tokens "
    "(8000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion."
)
ANSWER = Answer(text="one two three four five six seven eight")
BOTH_WAYS = pytest.mark.parametrize("streaming", [False, True], ids=["buffered", "streamed"])


def call(client: anthropic.Anthropic, streaming: bool, **params):
    """One request the way a user makes it; a failure before the answer starts must raise either way."""
    if streaming:
        return sdk_stream_final(client, **params)
    return client.messages.create(**params)


@BOTH_WAYS
def test_worker_400_keeps_its_message(client, worker, streaming):
    worker.enqueue(
        WorkerError(
            400, {"object": "error", "message": CONTEXT_TOO_LONG, "type": "BadRequestError", "param": None, "code": 400}
        )
    )
    with pytest.raises(anthropic.BadRequestError) as caught:
        call(client, streaming, **request())
    assert assert_error(caught.value.response, 400, "invalid_request_error") == CONTEXT_TOO_LONG
    assert caught.value.response.headers["x-should-retry"] == "false", "retrying the same request cannot help"


@BOTH_WAYS
def test_worker_429_is_a_rate_limit_with_retry_after(client, worker, streaming):
    worker.enqueue(
        WorkerError(
            429, {"error": {"message": "Too many requests, slow down", "type": "rate_limit"}}, {"retry-after": "7"}
        )
    )
    with pytest.raises(anthropic.RateLimitError) as caught:
        call(client, streaming, **request())
    assert "Too many requests" in assert_error(caught.value.response, 429, "rate_limit_error")
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.response.headers["x-should-retry"] == "true"


@BOTH_WAYS
def test_worker_500_is_an_api_error(client, worker, streaming):
    worker.enqueue(
        WorkerError(
            500, {"object": "error", "message": "CUDA out of memory", "type": "InternalServerError", "code": 500}
        )
    )
    with pytest.raises(anthropic.InternalServerError) as caught:
        call(client, streaming, **request())
    assert "CUDA out of memory" in assert_error(caught.value.response, 500, "api_error")


@pytest.mark.parametrize("status", [401, 403, 404])
def test_worker_rejecting_the_route_configuration_is_not_the_callers_fault(client, worker, status):
    # A wrong worker key or model name is the operator's problem: the caller's own key is fine.
    worker.enqueue(
        WorkerError(status, {"error": {"message": "Invalid API key or model", "type": "invalid_request_error"}})
    )
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(**request())
    assert_error(caught.value.response, 500, "api_error")


@BOTH_WAYS
def test_worker_503_is_overloaded(client, worker, streaming):
    worker.enqueue(WorkerError(503, "Service Unavailable"))
    with pytest.raises(anthropic.OverloadedError) as caught:
        call(client, streaming, **request())
    assert_error(caught.value.response, 529, "overloaded_error")
    assert caught.value.response.headers["x-should-retry"] == "true"


@BOTH_WAYS
def test_worker_down_is_overloaded(client, streaming):
    with pytest.raises(anthropic.OverloadedError) as caught:
        call(client.with_options(timeout=10), streaming, **request(model=DOWN_MODEL))
    assert_error(caught.value.response, 529, "overloaded_error")


@BOTH_WAYS
def test_stream_dropped_after_headers_before_any_byte_is_a_plain_http_error(client, worker, streaming):
    # Nothing reached the client yet, so it gets an HTTP error it can retry, not a broken stream.
    worker.enqueue(Drop(ANSWER, after_events=0))
    with pytest.raises(anthropic.InternalServerError) as caught:
        call(client.with_options(timeout=10), streaming, **request())
    assert_error(caught.value.response, 500, "api_error")


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(Drop(ANSWER, after_events=0), id="drop-before-any-byte"),
        pytest.param(Drop(ANSWER, after_events=1), id="drop-mid-body"),
        pytest.param(Garbage(ANSWER, at_event=0, line="this is not JSON"), id="not-json"),
    ],
)
def test_broken_buffered_answer_is_a_5xx_envelope_not_a_hang(client, worker, script):
    worker.enqueue(script)
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.with_options(timeout=10).messages.create(**request())
    assert caught.value.status_code == 500
    assert_error(caught.value.response, 500, "api_error")


# -- failures after the stream began: an `error` event, and no message_stop ------------------------

# case: (script, error type, the text that arrived before the failure)
MID_STREAM_FAILURES = {
    "drop": (Drop(ANSWER, after_events=3), "api_error", "one two"),
    "garbage-line": (Garbage(ANSWER, at_event=3), "api_error", "one two"),
    "vllm-error-400": (
        StreamError(
            ANSWER,
            3,
            {"object": "error", "message": "Invalid grammar", "type": "BadRequestError", "param": None, "code": 400},
        ),
        "invalid_request_error",
        "one two",
    ),
    "vllm-error-500": (
        StreamError(
            ANSWER,
            3,
            {
                "object": "error",
                "message": "EngineCore died",
                "type": "InternalServerError",
                "param": None,
                "code": 500,
            },
        ),
        "api_error",
        "one two",
    ),
    "vllm-error-503": (
        StreamError(ANSWER, 3, {"message": "Engine is overloaded", "type": "ServiceUnavailableError", "code": 503}),
        "overloaded_error",
        "one two",
    ),
}


@pytest.mark.parametrize("case", MID_STREAM_FAILURES)
def test_failure_mid_stream_is_an_error_event(client, http, worker, case):
    script, error_type, text_before = MID_STREAM_FAILURES[case]
    worker.enqueue(script)
    with pytest.raises(anthropic.APIStatusError) as caught:
        sdk_stream_final(client.with_options(timeout=10), **request())
    assert caught.value.type == error_type

    raw, result = stream_raw(http, worker, script, expect_error=True)
    assert result.error["type"] == error_type
    assert "message_stop" not in raw.names and "message_delta" not in raw.names
    assert result.text == text_before


def test_worker_stream_error_message_reaches_the_client(http, worker):
    error = {
        "object": "error",
        "message": "Grammar compilation failed: unexpected token",
        "type": "BadRequestError",
        "code": 400,
    }
    _, result = stream_raw(http, worker, StreamError(ANSWER, 2, error), expect_error=True)
    assert "Grammar compilation failed: unexpected token" in result.error["message"]
