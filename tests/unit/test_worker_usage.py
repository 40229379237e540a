"""Usage figures a worker reports reach neither the client nor the meter unless they are counts.

A figure is a count when it is an int (not a bool) from 0 to MAX_WORKER_TOKENS; anything else is
treated as absent and Parley's estimate stands in. The translated paths are covered by the
vectors (tests/vectors/{responses,streams}/usage_*.json); these are the helper and the two
passthrough paths, where the worker's own usage objects are forwarded.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from parley.core.chat_passthrough import ChatStreamRelay, answer_for_client
from parley.core.passthrough import AnthropicStreamRelay, message_from_worker, usage_of_message
from parley.core.response import AnswerContext, chat_to_message, usage_to_anthropic
from parley.core.stream import ChatToMessagesStream
from parley.core.tokens import MAX_WORKER_TOKENS, estimate_text_tokens, worker_token_count
from tests.anthropic_stream import assert_well_formed

NOT_COUNTS = [-1, -1000, MAX_WORKER_TOKENS + 1, 10**30, 12.5, 12.0, 1e30, "12", True, False, None, [], {}]
CONTEXT = AnswerContext(model="claude-sonnet-4-5", message_id="msg_01TestVector000000000000", input_tokens_estimate=40)
_ANTHROPIC_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")


def assert_counts(usage: dict[str, Any], fields: tuple[str, ...]) -> None:
    for name in fields:
        value = usage[name]
        assert type(value) is int and 0 <= value <= MAX_WORKER_TOKENS, f"{name} = {value!r}"


# -- the helper ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 5000, MAX_WORKER_TOKENS])
def test_a_count_is_kept(value):
    assert worker_token_count(value) == value


@pytest.mark.parametrize("value", NOT_COUNTS, ids=repr)
def test_anything_else_is_no_count(value):
    assert worker_token_count(value) is None


@pytest.mark.parametrize("field", ["prompt_tokens", "completion_tokens", "cached_tokens"])
@pytest.mark.parametrize("value", NOT_COUNTS, ids=repr)
def test_openai_usage_falls_back_to_the_estimates(field, value):
    usage: dict[str, Any] = {"prompt_tokens": 500, "completion_tokens": 7, "prompt_tokens_details": {}}
    if field == "cached_tokens":
        usage["prompt_tokens_details"]["cached_tokens"] = value
    else:
        usage[field] = value
    figures = usage_to_anthropic(usage, 40, 3)
    assert_counts(figures, _ANTHROPIC_FIELDS)
    expected_input = {"prompt_tokens": 40}.get(field, 500)
    assert figures["input_tokens"] + figures["cache_read_input_tokens"] == expected_input
    assert figures["cache_read_input_tokens"] == 0
    assert figures["output_tokens"] == (3 if field == "completion_tokens" else 7)


@pytest.mark.parametrize("usage", ["12", [1, 2], 12, True])
def test_a_usage_that_is_not_an_object_is_no_usage(usage):
    completion = {"choices": [{"message": {"content": "Hello there"}, "finish_reason": "stop"}], "usage": usage}
    message = chat_to_message(completion, CONTEXT)
    assert message["usage"]["input_tokens"] == 40 and message["usage"]["output_tokens"] == 3


@pytest.mark.parametrize("count", [-5, True, MAX_WORKER_TOKENS + 1, 12.5])
def test_a_tokenizer_count_that_is_no_count_leaves_the_estimate_in_message_start(count):
    stream = ChatToMessagesStream(CONTEXT)
    stream.use_input_tokens(count)
    assert stream.start()[0][1]["message"]["usage"]["input_tokens"] == 40


# -- Anthropic-native workers ----------------------------------------------------------------------


def _native_message(usage: Any) -> dict[str, Any]:
    return {
        "id": "msg_worker",
        "type": "message",
        "role": "assistant",
        "model": "worker-model",
        "content": [{"type": "text", "text": "Hello there"}, {"type": "tool_use", "id": "t", "name": "f", "input": {}}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


def test_native_message_usage_is_sanitized_for_the_client_and_the_meter():
    worker_usage = {
        "input_tokens": -1000,
        "cache_creation_input_tokens": 10**30,
        "cache_read_input_tokens": True,
        "cache_creation": {"ephemeral_5m_input_tokens": -3, "ephemeral_1h_input_tokens": 2},
        "output_tokens": 12.5,
        "service_tier": "standard",
    }
    message = message_from_worker(_native_message(worker_usage), CONTEXT)
    output_estimate = estimate_text_tokens("Hello there{}")
    assert message["usage"] == {
        "input_tokens": 40,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 2},
        "output_tokens": output_estimate,
        "service_tier": "standard",
    }
    metered = {"input_tokens": 40, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    metered["output_tokens"] = output_estimate
    assert usage_of_message(message, 40) == metered
    assert usage_of_message(_native_message(worker_usage), 40) == metered, "the meter validates on its own too"


def test_native_message_with_valid_usage_is_unchanged():
    usage = {"input_tokens": 9, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4, "output_tokens": 2}
    message = message_from_worker(_native_message(dict(usage)), CONTEXT)
    assert message["usage"] == usage
    assert usage_of_message(message, 40) == usage


@pytest.mark.parametrize("value", NOT_COUNTS, ids=repr)
@pytest.mark.parametrize("field", _ANTHROPIC_FIELDS)
def test_native_message_never_passes_a_bad_figure(field, value):
    message = message_from_worker(_native_message({"input_tokens": 9, "output_tokens": 2, field: value}), CONTEXT)
    assert_counts(message["usage"], (field,))
    assert_counts(usage_of_message(message, 40), _ANTHROPIC_FIELDS)


@pytest.mark.parametrize("usage", ["12", [1], 5, None])
def test_native_message_usage_that_is_not_an_object_becomes_the_estimates(usage):
    message = message_from_worker(_native_message(usage), CONTEXT)
    assert_counts(message["usage"], _ANTHROPIC_FIELDS)
    assert message["usage"]["input_tokens"] == 40
    assert usage_of_message(message, 40) == {name: message["usage"][name] for name in _ANTHROPIC_FIELDS}


def _json(value: Any) -> bytes:
    """As a worker writes it: orjson cannot write integers over 64 bits, json can."""
    return json.dumps(value, separators=(",", ":")).encode()


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"event: " + event["type"].encode() + b"\ndata: " + _json(event) + b"\n\n" for event in events)


def _native_stream(start_usage: Any, delta_usage: Any) -> bytes:
    start = {"type": "message_start", "message": {**_native_message(start_usage), "content": []}}
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}}
    delta["usage"] = delta_usage
    return _sse(
        start,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello there"}},
        {"type": "content_block_stop", "index": 0},
        delta,
        {"type": "message_stop"},
    )


def _relay(sse: bytes, started: bool = False) -> tuple[list[tuple[str, dict[str, Any]]], AnthropicStreamRelay]:
    relay = AnthropicStreamRelay(CONTEXT, started=started)
    events = []
    for position in range(0, len(sse), 7):
        events += relay.feed(sse[position : position + 7])
    events += relay.end()
    return events, relay


def test_native_stream_usage_is_sanitized_in_the_forwarded_events_and_the_meter():
    sse = _native_stream(
        {"input_tokens": -1000, "cache_read_input_tokens": "5", "output_tokens": True},
        {"output_tokens": 10**30, "input_tokens": 2**64 - 1, "cache_creation_input_tokens": -2},
    )
    events, relay = _relay(sse)
    assert_well_formed(events)
    start_usage = events[0][1]["message"]["usage"]
    assert (start_usage["input_tokens"], start_usage["cache_read_input_tokens"], start_usage["output_tokens"]) == (
        40,
        0,
        0,
    )
    delta_usage = next(data for name, data in events if name == "message_delta")["usage"]
    output_estimate = estimate_text_tokens("Hello there")
    assert delta_usage == {"output_tokens": output_estimate, "input_tokens": 40, "cache_creation_input_tokens": 0}
    assert relay.usage == {
        "input_tokens": 40,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_estimate,
    }


def test_native_stream_with_valid_usage_is_forwarded_as_it_came():
    start_usage = {"input_tokens": 25, "cache_read_input_tokens": 5, "output_tokens": 1}
    sse = _native_stream(dict(start_usage), {"output_tokens": 9})
    events, relay = _relay(sse)
    assert events[0][1]["message"]["usage"] == start_usage
    assert next(data for name, data in events if name == "message_delta")["usage"] == {"output_tokens": 9}
    assert relay.usage == {
        "input_tokens": 25,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 5,
        "output_tokens": 9,
    }


def test_native_stream_after_parleys_own_message_start_still_meters_only_counts():
    events, relay = _relay(_native_stream({"input_tokens": -1000, "output_tokens": 1}, {"output_tokens": -9}), True)
    assert "message_start" not in [name for name, _ in events], "Parley sent its own; the worker's is dropped"
    assert next(data for name, data in events if name == "message_delta")["usage"] == {
        "output_tokens": estimate_text_tokens("Hello there")
    }
    assert relay.usage["input_tokens"] == 40 and relay.usage["output_tokens"] == estimate_text_tokens("Hello there")


@pytest.mark.parametrize("value", NOT_COUNTS, ids=repr)
@pytest.mark.parametrize("field", _ANTHROPIC_FIELDS)
def test_native_stream_never_passes_a_bad_figure(field, value):
    start_usage = {"input_tokens": 25, "output_tokens": 1, field: value}
    events, relay = _relay(_native_stream(start_usage, {"output_tokens": 9, field: value}))
    assert_counts(events[0][1]["message"]["usage"], (field,))
    assert_counts(next(data for name, data in events if name == "message_delta")["usage"], (field,))
    assert_counts(relay.usage, _ANTHROPIC_FIELDS)


@pytest.mark.parametrize("usage", ["12", [1], 5])
def test_native_stream_usage_that_is_not_an_object_becomes_the_figures(usage):
    events, relay = _relay(_native_stream(usage, usage))
    assert_well_formed(events)
    assert_counts(events[0][1]["message"]["usage"], _ANTHROPIC_FIELDS)
    assert_counts(next(data for name, data in events if name == "message_delta")["usage"], ("output_tokens",))
    assert_counts(relay.usage, _ANTHROPIC_FIELDS)


# -- OpenAI Chat Completions clients --------------------------------------------------------------

_OPENAI_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


def _chat_answer(usage: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "worker-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"}, "finish_reason": "stop"}],
        "usage": usage,
    }


def test_chat_answer_usage_is_sanitized():
    usage = {
        "prompt_tokens": -1000,
        "completion_tokens": 12.5,
        "total_tokens": 10**30,
        "prompt_tokens_details": {"cached_tokens": -5, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": "7"},
    }
    answer = answer_for_client(_chat_answer(usage), "gpt-client-name", 40)
    completion_estimate = estimate_text_tokens("Hello there")
    assert answer["model"] == "gpt-client-name"
    assert answer["usage"] == {
        "prompt_tokens": 40,
        "completion_tokens": completion_estimate,
        "total_tokens": 40 + completion_estimate,
        "prompt_tokens_details": {"audio_tokens": 0},
        "completion_tokens_details": {},
    }


def test_chat_answer_details_are_clamped_to_their_totals():
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 8,
        "total_tokens": 108,
        "prompt_tokens_details": {"cached_tokens": 5000},
        "completion_tokens_details": {"reasoning_tokens": 9},
    }
    answer = answer_for_client(_chat_answer(usage), "m", 40)
    assert answer["usage"]["prompt_tokens_details"] == {"cached_tokens": 100}
    assert answer["usage"]["completion_tokens_details"] == {"reasoning_tokens": 8}


def test_chat_answer_with_valid_usage_is_unchanged():
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 8,
        "total_tokens": 108,
        "prompt_tokens_details": {"cached_tokens": 64},
        "completion_tokens_details": None,
    }
    assert answer_for_client(_chat_answer(dict(usage)), "m", 40)["usage"] == usage


@pytest.mark.parametrize("value", NOT_COUNTS, ids=repr)
@pytest.mark.parametrize("field", [*_OPENAI_FIELDS, "cached_tokens", "reasoning_tokens"])
def test_chat_answer_never_passes_a_bad_figure(field, value):
    usage: dict[str, Any] = {"prompt_tokens": 100, "completion_tokens": 8, "total_tokens": 108}
    if field == "cached_tokens":
        usage["prompt_tokens_details"] = {field: value}
    elif field == "reasoning_tokens":
        usage["completion_tokens_details"] = {field: value}
    else:
        usage[field] = value
    sent = answer_for_client(_chat_answer(usage), "m", 40)["usage"]
    assert_counts(sent, _OPENAI_FIELDS)
    assert sent["total_tokens"] == sent["prompt_tokens"] + sent["completion_tokens"]
    for details in ("prompt_tokens_details", "completion_tokens_details"):
        assert_counts(sent.get(details) or {}, tuple(sent.get(details) or ()))


@pytest.mark.parametrize("usage", ["12", [1], 5])
def test_chat_answer_usage_that_is_not_an_object_is_null(usage):
    assert answer_for_client(_chat_answer(usage), "m", 40)["usage"] is None


def _chat_stream(usage: Any) -> bytes:
    chunks = [
        {"id": "c", "model": "worker-model", "choices": [{"index": 0, "delta": {"content": "Hello there"}}]},
        {"id": "c", "model": "worker-model", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"id": "c", "model": "worker-model", "choices": [], "usage": usage},
    ]
    return b"".join(b"data: " + _json(chunk) + b"\n\n" for chunk in chunks) + b"data: [DONE]\n\n"


def _chat_relay(sse: bytes) -> tuple[list[Any], ChatStreamRelay]:
    relay = ChatStreamRelay("m", 40, client_wants_usage=True)
    out = b"".join(relay.feed(sse[position : position + 5]) for position in range(0, len(sse), 5)) + relay.end()
    payloads = [line.removeprefix(b"data: ") for line in out.split(b"\n\n") if line.startswith(b"data: ")]
    return [orjson.loads(payload) for payload in payloads if payload != b"[DONE]"], relay


def test_chat_stream_usage_is_sanitized_for_the_client_and_the_meter():
    sse = _chat_stream(
        {
            "prompt_tokens": -1000,
            "completion_tokens": 10**30,
            "total_tokens": 2**64 - 1,
            "prompt_tokens_details": {"cached_tokens": True},
        }
    )
    chunks, relay = _chat_relay(sse)
    completion_estimate = -(-len("Hello there") // 4)
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 40,
        "completion_tokens": completion_estimate,
        "total_tokens": 40 + completion_estimate,
        "prompt_tokens_details": {},
    }
    assert relay.usage == {
        "input_tokens": 40,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": completion_estimate,
    }


def test_chat_stream_with_valid_usage_is_forwarded_as_it_came():
    usage = {"prompt_tokens": 13, "completion_tokens": 3, "total_tokens": 16, "prompt_tokens_details": None}
    chunks, relay = _chat_relay(_chat_stream(dict(usage)))
    assert chunks[-1]["usage"] == usage
    assert relay.usage["input_tokens"] == 13 and relay.usage["output_tokens"] == 3


@pytest.mark.parametrize("value", NOT_COUNTS, ids=repr)
@pytest.mark.parametrize("field", [*_OPENAI_FIELDS, "cached_tokens"])
def test_chat_stream_never_passes_a_bad_figure(field, value):
    usage: dict[str, Any] = {"prompt_tokens": 100, "completion_tokens": 8, "total_tokens": 108}
    if field == "cached_tokens":
        usage["prompt_tokens_details"] = {field: value}
    else:
        usage[field] = value
    chunks, relay = _chat_relay(_chat_stream(usage))
    sent = chunks[-1]["usage"]
    assert_counts(sent, _OPENAI_FIELDS)
    assert sent["total_tokens"] == sent["prompt_tokens"] + sent["completion_tokens"]
    assert_counts(relay.usage, _ANTHROPIC_FIELDS)
    assert relay.usage["input_tokens"] + relay.usage["cache_read_input_tokens"] == sent["prompt_tokens"]
    assert relay.usage["output_tokens"] == sent["completion_tokens"]


@pytest.mark.parametrize("usage", ["12", [1], 5])
def test_chat_stream_usage_that_is_not_an_object_is_null(usage):
    chunks, relay = _chat_relay(_chat_stream(usage))
    assert chunks[-1]["usage"] is None
    assert_counts(relay.usage, _ANTHROPIC_FIELDS)
