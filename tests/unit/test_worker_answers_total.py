"""The translators of worker answers are total: any JSON value in any field gives a valid answer or a
ParleyError (an error event in a stream), never another exception or a broken event.

Every field of a representative answer, chunk and native event is replaced, one at a time, by each
of a set of odd values (and deleted); tests/unit/test_worker_fuzz.py draws many more at random.
"""

from __future__ import annotations

import copy
from typing import Any, Iterator

import orjson
import pytest

from parley.core.chat_passthrough import ChatStreamRelay, answer_for_client
from parley.core.errors import ParleyError
from parley.core.passthrough import AnthropicStreamRelay, message_from_worker
from parley.core.response import AnswerContext, chat_to_message
from parley.core.stream import ChatToMessagesStream, WorkerSSETranslator
from tests.anthropic_stream import assert_well_formed

CONTEXT = AnswerContext(
    model="claude-sonnet-4-5", message_id="msg_01TestVector000000000000", input_tokens_estimate=9, thinking=True
)
ODD_VALUES: list[Any] = [None, 0, -1, 1.5, 2**63, True, "", "x", "abort", [], [1], {}, {"a": 1}, [[[]]]]
_DELETED = object()

COMPLETION = {
    "id": "chatcmpl-1",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": [{"type": "text", "text": "Hi"}],
                "reasoning_content": "Think.",
                "tool_calls": [
                    {"id": "chatcmpl-tool-1", "type": "function", "function": {"name": "Read", "arguments": '{"a": 1}'}}
                ],
            },
            "finish_reason": "tool_calls",
            "stop_reason": None,
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 1}},
}

CHUNKS = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "Think."}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]},
    {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {"index": 0, "id": "chatcmpl-tool-1", "type": "function", "function": {"name": "Read"}}
                    ]
                },
                "finish_reason": None,
            }
        ]
    },
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 1}'}}]}}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls", "stop_reason": None}]},
    {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}},
]

NATIVE_MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "m",
    "content": [
        {"type": "thinking", "thinking": "Think.", "signature": "c2ln"},
        {"type": "text", "text": "Hi", "citations": None},
        {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"a": 1}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 5, "output_tokens": 3, "cache_creation": {"ephemeral_5m_input_tokens": 0}},
}

NATIVE_EVENTS = [
    {"type": "message_start", "message": {**NATIVE_MESSAGE, "content": [], "stop_reason": None}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Think."}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2ln"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "content_block_stop", "index": 1},
    {
        "type": "content_block_start",
        "index": 2,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}},
    },
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"a": 1}'}},
    {"type": "content_block_stop", "index": 2},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 3},
    },
    {"type": "message_stop"},
]


def paths(value: Any, path: tuple = ()) -> Iterator[tuple]:
    """Every position in a JSON value (the root too)."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*path, index))


def replaced(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    value = copy.deepcopy(value)
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    if new is _DELETED:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return value


def mutations(value: Any) -> Iterator[Any]:
    for path in paths(value):
        for new in ODD_VALUES + ([_DELETED] if path else []):
            yield replaced(value, path, new)


def sse(events: list[Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(event) + b"\n\n" for event in events)


def ids_masked(events: list[tuple[str, dict]]) -> list:
    """Parley's tool ids are random."""
    masked = orjson.loads(orjson.dumps(events))
    for _, data in masked:
        if data.get("content_block", {}).get("type") == "tool_use":
            data["content_block"]["id"] = "toolu_<random>"
    return masked


def well_formed(events: list[tuple[str, dict]]) -> None:
    orjson.dumps(events)
    assert_well_formed(events, expect_error=events[-1][0] == "error", signed_thinking=False)


def test_chat_to_message_gives_a_message_or_a_parley_error():
    for completion in mutations(COMPLETION):
        try:
            message = chat_to_message(completion, CONTEXT)
        except ParleyError:
            continue
        orjson.dumps(message)
        assert all(isinstance(block["input"], dict) for block in message["content"] if block["type"] == "tool_use")


def test_chat_answer_for_openai_clients_is_the_answer_or_a_parley_error():
    for completion in mutations(COMPLETION):
        try:
            orjson.dumps(answer_for_client(completion, "m", 5))
        except ParleyError:
            pass


@pytest.mark.parametrize("position", range(len(CHUNKS)))
def test_a_stream_with_any_odd_chunk_is_well_formed(position):
    for chunk in mutations(CHUNKS[position]):
        chunks = [*CHUNKS[:position], chunk, *CHUNKS[position + 1 :]]
        stream = ChatToMessagesStream(CONTEXT)
        events = [event for chunk in chunks for event in stream.feed(chunk)] + stream.done()
        well_formed(events)
        translator = WorkerSSETranslator(CONTEXT)
        assert ids_masked(translator.feed(sse(chunks) + b"data: [DONE]\n\n") + translator.end()) == ids_masked(events)
        relay = ChatStreamRelay("m", 5, client_wants_usage=True)
        out = relay.feed(sse(chunks)) + relay.end()
        assert out.endswith(b"data: [DONE]\n\n")


def test_a_native_message_gives_a_message_or_a_parley_error():
    for message in mutations(NATIVE_MESSAGE):
        try:
            answer = message_from_worker(message, CONTEXT)
        except ParleyError:
            continue
        orjson.dumps(answer)
        assert answer["type"] == "message" and answer["role"] == "assistant" and answer["id"].startswith("msg_")
        for block in answer["content"]:
            assert block["type"] in ("text", "thinking", "redacted_thinking", "tool_use")
            if block["type"] == "tool_use":
                assert block["id"].startswith("toolu_") and isinstance(block["input"], dict)


@pytest.mark.parametrize("position", range(len(NATIVE_EVENTS)))
def test_a_native_stream_with_any_odd_event_is_well_formed(position):
    for event in mutations(NATIVE_EVENTS[position]):
        events = [*NATIVE_EVENTS[:position], event, *NATIVE_EVENTS[position + 1 :]]
        relay = AnthropicStreamRelay(CONTEXT)
        out = relay.feed(sse(events)) + relay.end()
        well_formed(out)
        started = AnthropicStreamRelay(CONTEXT, started=True)
        well_formed(ChatToMessagesStream(CONTEXT).start() + started.feed(sse(events)) + started.end())
