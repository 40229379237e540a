"""The worker-side fuzzer against the core: generated and mutated worker answers (tests/worker_fuzzing.py)
through every translator of a worker's answer, each answer checked by the properties there.

- `chat_to_message` returns a strict Anthropic message or raises a ParleyError (nothing else);
- `WorkerSSETranslator` and `AnthropicStreamRelay` never raise, give a well-formed stream that ends with
  message_stop or exactly one error event, and give the same events whatever the bytes' split;
- `message_from_worker` (an Anthropic-native worker's message) as `chat_to_message`;
- the OpenAI passthrough (`ChatStreamRelay`, `answer_for_client`) raises nothing but a ParleyError and
  always ends its stream with `[DONE]`, usage counts only;
- a valid answer streamed and the same answer buffered come to the same message.

Settings are derandomized with no example database: CI sees the same cases every run. The last test
checks that enough answers were generated; the session summary prints how many.
"""

from __future__ import annotations

import json
import random

import orjson
import pytest
from hypothesis import given

from parley.core.chat_passthrough import ChatStreamRelay, answer_for_client
from parley.core.errors import ParleyError
from parley.core.passthrough import AnthropicStreamRelay, message_from_worker, usage_of_message
from parley.core.response import AnswerContext, chat_to_message
from parley.core.stream import ChatToMessagesStream, WorkerSSETranslator
from tests.worker_fuzzing import (
    CONTEXTS,
    FUZZ_SCALE,
    MODEL_NAME,
    WORKER_ANSWERS,
    Rendered,
    anthropic_message,
    anthropic_stream,
    check_chat_stream,
    check_events,
    check_message,
    check_usage,
    contexts,
    fuzz,
    normalized,
    openai_completion,
    openai_stream,
    pieces,
    record,
    seeds,
    translate,
    worker_answers,
)

PART = "core"
MINIMUM_ANSWERS = 10_000
# Hypothesis examples per test, and worker answers generated from each (a hypothesis example costs
# milliseconds, a variant a fraction of one); their products, about 11,000, are what one run of this
# file generates (answers no JSON object are not counted where the core never sees them).
BUFFERED, BUFFERED_VARIANTS = 140, 17
STREAMED, STREAMED_VARIANTS = 180, 28
TWINS, TWIN_CONTEXTS = 120, 2
NATIVE_STREAMS, NATIVE_STREAM_VARIANTS = 80, 15
NATIVE_MESSAGES, NATIVE_MESSAGE_VARIANTS = 60, 17
PASSTHROUGH, PASSTHROUGH_VARIANTS = 80, 10
CORE_TESTS = {"buffered", "streamed", "twins", "native-streams", "native-messages", "passthrough", "huge-and-tiny"}


def _json_object(data: bytes) -> dict | None:
    """What the worker client hands the core: a JSON object (anything else it refuses itself)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _started(context: AnswerContext) -> tuple[ChatToMessagesStream, list]:
    """A prelude that has sent message_start and a ping (the worker was slow to answer)."""
    prelude = ChatToMessagesStream(context)
    return prelude, prelude.ping()


@fuzz(BUFFERED)
@given(answer=worker_answers(), context=contexts, seed=seeds)
def test_buffered_answers(answer, context, seed):
    """chat_to_message: a strict Anthropic message, or a ParleyError."""
    rendered = Rendered(answer)
    for _ in range(BUFFERED_VARIANTS):
        data = openai_completion(seed, rendered)
        completion = _json_object(data)
        if completion is None:
            continue
        record("buffered", data)
        WORKER_ANSWERS.add(PART, "buffered")
        try:
            message = chat_to_message(completion, context)
        except ParleyError:
            continue
        check_message(message)


@fuzz(STREAMED)
@given(answer=worker_answers(), context=contexts, seed=seeds)
def test_streamed_answers(answer, context, seed):
    """WorkerSSETranslator: never raises; well formed; the same events whatever the split (also after
    a prelude of message_start and pings, as when the worker is slow to answer)."""
    rendered = Rendered(answer)
    for _ in range(STREAMED_VARIANTS):
        data = openai_stream(seed, rendered)
        record("streamed", data)
        WORKER_ANSWERS.add(PART, "streamed")
        if seed.random() < 0.2:
            prelude, prefix = _started(context)
            check_events(prefix + translate(WorkerSSETranslator(context, prelude), [data]))
        whole = translate(WorkerSSETranslator(context), [data])
        check_events(whole, snapshot=seed.random() < 0.05)
        split = translate(WorkerSSETranslator(context), pieces(seed, data))
        assert normalized(split) == normalized(whole), "another split of the same bytes gave other events"


@fuzz(TWINS)
@given(answer=worker_answers(twin=True), seed=seeds)
def test_stream_and_buffered_twins(answer, seed):
    """A valid answer streamed, folded by the SDK's accumulator, is the same message as buffered
    (or both fail alike), except for the usage a stream without usage can only estimate."""
    rendered = Rendered(answer)
    for context in seed.sample(CONTEXTS, TWIN_CONTEXTS):
        WORKER_ANSWERS.add(PART, "twins", 2)
        data = openai_stream(seed, rendered, mutate=False)
        record("twins", (answer, context, data))
        events = translate(WorkerSSETranslator(context), pieces(seed, data))
        result, streamed = check_events(events, snapshot=True)
        try:
            buffered = chat_to_message(rendered.completion, context)
        except ParleyError as error:  # an answer the worker broke off (finish_reason "error", say)
            assert result.error == {"type": error.type, "message": error.message}, "the stream did not fail alike"
            continue
        assert result.error is None, f"the stream failed, the buffered answer did not: {result.error}"
        check_message(buffered)
        buffered, streamed = _made_up_ids_in_order(_without_nulls(buffered)), _made_up_ids_in_order(streamed)
        if answer.usage == "none":  # the stream's usage is Parley's estimate; the buffered answer has the worker's
            streamed.pop("usage"), buffered.pop("usage")
        assert streamed == buffered


def _made_up_ids_in_order(message: dict) -> dict:
    """Tool ids Parley made up (random, `toolu_01…`) replaced by their order in the message."""
    content = [dict(block) for block in message["content"]]
    made_up = [block for block in content if block["type"] == "tool_use" and block["id"].startswith("toolu_01")]
    for number, block in enumerate(made_up):
        block["id"] = f"toolu_made_up_{number}"
    return {**message, "content": content}


def _without_nulls(message: dict) -> dict:
    """The SDK's snapshot leaves out the message's and its blocks' null fields (to_dict(exclude_none))."""
    content = [{key: value for key, value in block.items() if value is not None} for block in message["content"]]
    return {key: value for key, value in {**message, "content": content}.items() if value is not None}


@fuzz(NATIVE_STREAMS)
@given(answer=worker_answers(), context=contexts, seed=seeds)
def test_anthropic_native_streams(answer, context, seed):
    """AnthropicStreamRelay: never raises; well formed; the same events whatever the split."""
    rendered = Rendered(answer)
    for _ in range(NATIVE_STREAM_VARIANTS):
        data = anthropic_stream(seed, rendered)
        record("native-streams", data)
        WORKER_ANSWERS.add(PART, "native-streams")
        if seed.random() < 0.3:
            check_events(_started(context)[1] + translate(AnthropicStreamRelay(context, started=True), [data]))
        whole = translate(AnthropicStreamRelay(context), [data])
        check_events(whole, snapshot=seed.random() < 0.05)
        split = translate(AnthropicStreamRelay(context), pieces(seed, data))
        assert normalized(split) == normalized(whole), "another split of the same bytes gave other events"


@fuzz(NATIVE_MESSAGES)
@given(answer=worker_answers(), context=contexts, seed=seeds)
def test_anthropic_native_messages(answer, context, seed):
    """message_from_worker: a strict Anthropic message or a ParleyError; what is metered, counts."""
    rendered = Rendered(answer)
    for _ in range(NATIVE_MESSAGE_VARIANTS):
        data = anthropic_message(seed, rendered)
        worker_message = _json_object(data)
        if worker_message is None:
            continue
        record("native-messages", data)
        WORKER_ANSWERS.add(PART, "native-messages")
        try:
            message = message_from_worker(worker_message, context)
        except ParleyError:
            continue
        check_message(message)
        check_usage(usage_of_message(message, context.input_tokens_estimate), "metered usage")


@fuzz(PASSTHROUGH)
@given(answer=worker_answers(), seed=seeds)
def test_openai_passthrough(answer, seed):
    """ChatStreamRelay never raises and ends with [DONE]; answer_for_client raises only a ParleyError."""
    rendered = Rendered(answer)
    estimate = seed.choice([0, 12, 10**6])
    for _ in range(PASSTHROUGH_VARIANTS):
        data = openai_stream(seed, rendered)
        record("passthrough-stream", data)
        WORKER_ANSWERS.add(PART, "passthrough")
        wants_usage = seed.random() < 0.5
        relay = ChatStreamRelay(MODEL_NAME, estimate, wants_usage)
        out = b"".join(relay.feed(piece) for piece in pieces(seed, data)) + relay.end()
        check_chat_stream(out, MODEL_NAME)
        check_usage(relay.usage, "metered usage")
        whole = ChatStreamRelay(MODEL_NAME, estimate, wants_usage)
        assert whole.feed(data) + whole.end() == out, "another split of the same bytes gave other bytes"

        data = openai_completion(seed, rendered)
        completion = _json_object(data)
        if completion is None:
            continue
        record("passthrough-buffered", data)
        WORKER_ANSWERS.add(PART, "passthrough")
        try:
            client_answer = answer_for_client(completion, MODEL_NAME, estimate)
        except ParleyError:
            continue
        orjson.dumps(client_answer)
        assert client_answer["model"] == MODEL_NAME
        if client_answer.get("usage") is not None:
            check_usage(client_answer["usage"], "usage", ("prompt_tokens", "completion_tokens", "total_tokens"))


MIB = 1024 * 1024
CONTEXT = AnswerContext(model=MODEL_NAME, message_id="msg_01HugeHugeHugeHugeHugeHu", input_tokens_estimate=10)


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return (
        b"data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [choice]}).encode() + b"\n\n"
    )


def _huge(kind: str) -> bytes:
    if kind == "text":
        return _chunk({"content": "é" * (MIB * 3 // 2)}) + _chunk({}, "stop") + b"data: [DONE]\n\n"
    if kind == "arguments":
        arguments = json.dumps({"data": "x" * (3 * MIB)})
        call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "Write", "arguments": arguments}}
        return _chunk({"tool_calls": [call]}) + _chunk({}, "tool_calls") + b"data: [DONE]\n\n"
    if kind == "over-the-cap":
        return _chunk({"content": "x" * (17 * MIB)}) + _chunk({}, "stop") + b"data: [DONE]\n\n"
    if kind == "tiny-deltas":
        return b"".join(_chunk({"content": "x"}) for _ in range(5_000)) + _chunk({}, "stop")
    if kind == "tiny-events":
        return b"data: {}\n\n" * 10_000 + b":\n\n" * 10_000 + _chunk({"content": "ok"}, "stop")
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["text", "arguments", "over-the-cap", "tiny-deltas", "tiny-events"])
def test_huge_and_tiny_events(kind):
    """MB-sized events, one over the event size cap, and tens of thousands of tiny ones, fed in 64 KiB
    pieces and at a few random offsets."""
    WORKER_ANSWERS.add(PART, "huge-and-tiny")
    data = _huge(kind)
    step = 64 * 1024
    events = translate(WorkerSSETranslator(CONTEXT), [data[i : i + step] for i in range(0, len(data), step)])
    result, _ = check_events(events)
    assert (result.error is not None) == (kind == "over-the-cap"), result.error
    rng = random.Random(kind)
    assert normalized(translate(WorkerSSETranslator(CONTEXT), pieces(rng, data, max_cuts=5))) == normalized(events)


def _anthropic_event(data: dict) -> bytes:
    return b"event: " + data["type"].encode() + b"\ndata: " + json.dumps(data).encode() + b"\n\n"


def test_huge_anthropic_native_event():
    """One 3 MiB text delta from an Anthropic-native worker, relayed in 64 KiB pieces."""
    WORKER_ANSWERS.add(PART, "huge-and-tiny")
    usage = {"input_tokens": 5, "output_tokens": 1}
    start = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [], "usage": usage}
    data = b"".join(
        _anthropic_event(event)
        for event in [
            {"type": "message_start", "message": {**start, "stop_reason": None, "stop_sequence": None}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x" * (3 * MIB)}},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": usage},
            {"type": "message_stop"},
        ]
    )
    step = 64 * 1024
    events = translate(AnthropicStreamRelay(CONTEXT), [data[i : i + step] for i in range(0, len(data), step)])
    result, _ = check_events(events)
    assert result.text == "x" * (3 * MIB)


def test_enough_worker_answers_were_generated():
    """Runs last in this file (after tests/integration, which pytest collects first): at least
    MINIMUM_ANSWERS worker answers when every core fuzz test ran."""
    if WORKER_ANSWERS.tests(PART) >= CORE_TESTS and FUZZ_SCALE >= 1:
        assert WORKER_ANSWERS.total >= MINIMUM_ANSWERS, dict(WORKER_ANSWERS.by_test)
