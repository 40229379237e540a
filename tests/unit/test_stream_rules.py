"""Stream rules the vectors cannot show: what is metered after a failure, and the native relay's checks.

(Translated streams are pinned by tests/vectors/streams; Anthropic-native workers have no vectors of
their own, so their relay's rules are here.)
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import orjson
import pytest

from parley.core.passthrough import AnthropicStreamRelay, message_from_worker
from parley.core.response import AnswerContext
from parley.core.stream import ChatToMessagesStream, WorkerSSETranslator
from tests.anthropic_stream import accumulate, assert_well_formed

CONTEXT = AnswerContext(model="claude-sonnet-4-5", message_id="msg_01TestVector000000000000", input_tokens_estimate=40)
GENERATED_TOOL_ID = re.compile(r"toolu_01[1-9A-HJ-NP-Za-km-z]{22}")


def test_an_aborted_stream_still_meters_the_workers_usage():
    stream = ChatToMessagesStream(CONTEXT)
    events = stream.feed({"choices": [{"index": 0, "delta": {"content": "The answer is"}}]})
    events += stream.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "abort"}]})
    assert [name for name, _ in events] == ["message_start", "content_block_start", "content_block_delta"]
    events += stream.feed({"choices": [], "usage": {"prompt_tokens": 31, "completion_tokens": 4}})
    assert events[-1] == (
        "error",
        {
            "type": "error",
            "error": {
                "type": "api_error",
                "message": "The worker stopped its answer with finish_reason 'abort': the answer is incomplete.",
            },
        },
    )
    assert stream.feed({"choices": [{"index": 0, "delta": {"content": "more"}}]}) == [] and stream.done() == []
    assert stream.usage["input_tokens"] == 31 and stream.usage["output_tokens"] == 4


def test_a_stream_whose_tool_arguments_break_meters_what_streamed():
    stream = ChatToMessagesStream(CONTEXT)
    call = {"index": 0, "id": "c", "function": {"name": "Bash", "arguments": '{"command": "ls"}'}}
    stream.feed({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
    events = stream.feed(
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "x"}}]}}]}
    )
    assert [name for name, _ in events] == ["error"]
    assert stream.usage["output_tokens"] == 5  # the 18 bytes of arguments, estimated


def test_a_tool_calls_id_is_one_across_its_deltas_and_toolu_shaped():
    stream = ChatToMessagesStream(CONTEXT)
    events = []
    for fragment in ('{"a"', ": 1", "}"):
        call = {"index": 0, "id": "chatcmpl-tool-77", "function": {"name": "F", "arguments": fragment}}
        events += stream.feed({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
    events += stream.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}) + stream.done()
    starts = [data["content_block"] for name, data in events if name == "content_block_start"]
    assert len(starts) == 1 and GENERATED_TOOL_ID.fullmatch(starts[0]["id"])
    assert accumulate(events)["content"][0]["input"] == {"a": 1}


@pytest.mark.parametrize("kind", ["content", "tool-arguments"])
def test_a_12_mib_single_event_stream_relays_whole(kind, capsys):
    """One data line of 12 MiB (a chunk whose delta.content, or tool arguments, is 12 MiB) fed in
    64 KiB reads, as a worker's body arrives. The time is printed (pytest -s), never asserted."""
    size = 12 * 1024 * 1024
    if kind == "content":
        delta: dict[str, Any] = {"content": "x" * size}
    else:
        call = {"index": 0, "id": "c", "function": {"name": "Write", "arguments": '{"c": "' + "x" * size + '"}'}}
        delta = {"tool_calls": [call]}
    body = b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": delta}]}) + b"\n\n"
    body += b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'
    translator = WorkerSSETranslator(CONTEXT)
    began = time.perf_counter()
    events = [event for start in range(0, len(body), 65536) for event in translator.feed(body[start : start + 65536])]
    events += translator.end()
    elapsed = time.perf_counter() - began
    with capsys.disabled():
        print(f"\n12 MiB {kind} event in 64 KiB reads relayed in {elapsed:.3f} s")
    assert [name for name, _ in events][-2:] == ["message_delta", "message_stop"]
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    streamed = "".join(delta.get("text", delta.get("partial_json", "")) for delta in deltas)
    assert len(streamed) == size + (0 if kind == "content" else len('{"c": ""}'))


# -- Anthropic-native workers ----------------------------------------------------------------------


def sse(*events: Any) -> bytes:
    return b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in events)


START = {"type": "message_start", "message": {"id": "msg_w", "type": "message", "role": "assistant", "content": []}}
DELTA = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}
STOP = {"type": "message_stop"}


def block(index: int, content_block: dict, *deltas: dict) -> list[dict]:
    return [
        {"type": "content_block_start", "index": index, "content_block": content_block},
        *({"type": "content_block_delta", "index": index, "delta": delta} for delta in deltas),
        {"type": "content_block_stop", "index": index},
    ]


def relayed(*events: Any, started: bool = False) -> list[tuple[str, dict]]:
    relay = AnthropicStreamRelay(CONTEXT, started=started)
    body = sse(*events)
    out = [event for start in range(0, len(body), 5) for event in relay.feed(body[start : start + 5])]
    return out + relay.end()


def error_of(events: list[tuple[str, dict]]) -> str:
    assert_well_formed(events, expect_error=True)
    return events[-1][1]["error"]["message"]


def test_native_stream_empty_text_blocks_are_left_out_and_indexes_close_up():
    events = relayed(
        START,
        *block(0, {"type": "text", "text": ""}),
        *block(
            1, {"type": "text", "text": ""}, {"type": "text_delta", "text": ""}, {"type": "text_delta", "text": "Hi"}
        ),
        *block(2, {"type": "tool_use", "id": "call_1", "name": "F", "input": {}}),
        DELTA,
        STOP,
    )
    result = assert_well_formed(events)
    assert [block["type"] for block in result.content] == ["text", "tool_use"]
    assert result.content[0]["text"] == "Hi" and GENERATED_TOOL_ID.fullmatch(result.content[1]["id"])
    assert result.content[1]["input"] == {}


def test_native_stream_tool_input_is_checked_and_a_cut_one_completed():
    tool = {"type": "tool_use", "id": "toolu_kept", "name": "Write", "input": {}}
    cut = relayed(START, *block(0, tool, {"type": "input_json_delta", "partial_json": '{"path": "/a'}), DELTA, STOP)
    assert accumulate(cut)["content"] == [{**tool, "input": {"path": "/a"}}]
    broken = relayed(START, *block(0, tool, {"type": "input_json_delta", "partial_json": '{"path": /a'}), DELTA, STOP)
    assert error_of(broken) == "The worker's tool call `Write` has arguments that are not a JSON object."
    assert ("content_block_stop", {"type": "content_block_stop", "index": 0}) not in broken


def test_native_stream_grammar_is_checked():
    text = block(0, {"type": "text", "text": ""}, {"type": "text_delta", "text": "Hi"})
    assert error_of(relayed(START, START, *text, DELTA, STOP)) == "The worker sent a second message_start."
    assert "out of order" in error_of(relayed(START, *text[:1], *text, DELTA, STOP))
    assert "out of order" in error_of(relayed(START, *block(1, {"type": "text", "text": "x"}), DELTA, STOP))
    assert error_of(relayed(START, *text, STOP)) == "The worker sent message_stop before message_delta."
    assert error_of(relayed(*text, DELTA, STOP)) == "The worker sent content_block_start outside a message."
    wrong_delta = block(0, {"type": "text", "text": ""}, {"type": "thinking_delta", "thinking": "x"})
    assert error_of(relayed(START, *wrong_delta, DELTA, STOP)) == (
        "The worker's stream event has content_block_delta.delta.type that is not a delta of a text block."
    )
    # Cut between message_delta and message_stop: the held message_delta is never sent.
    cut = relayed(START, *text, DELTA)
    assert "message_delta" not in [name for name, _ in cut] and error_of(cut)


def test_native_stream_events_parley_does_not_know_are_dropped_and_pings_pass():
    text = block(0, {"type": "text", "text": ""}, {"type": "text_delta", "text": "Hi"})
    events = relayed(START, {"type": "ping"}, {"type": "hologram"}, *text, DELTA, {"type": "ping"}, STOP)
    assert [name for name, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_native_stream_error_event_keeps_its_type():
    events = relayed(START, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert events[-1][1]["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    events = relayed(START, {"type": "error", "error": {"type": "hologram", "message": 7}})
    assert events[-1][1]["error"] == {"type": "api_error", "message": "The worker's stream failed."}


def test_native_stream_stop_reason_it_does_not_know_is_an_error():
    delta = {"type": "message_delta", "delta": {"stop_reason": "aborted"}, "usage": {"output_tokens": 3}}
    assert error_of(relayed(START, delta, STOP)) == (
        "The worker stopped its answer with stop_reason 'aborted': the answer is incomplete."
    )


def test_native_message_is_made_one_clients_can_take():
    message = {
        "id": "chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "content": [
            {"type": "text", "text": ""},
            {"type": "thinking", "thinking": "t"},
            {"type": "tool_use", "id": "chatcmpl-tool-1", "name": "F", "input": {"a": 1}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": "ignored",
    }
    answer = message_from_worker(message, CONTEXT)
    assert answer["id"] == CONTEXT.message_id and answer["model"] == CONTEXT.model
    assert [block["type"] for block in answer["content"]] == ["thinking", "tool_use"]
    assert answer["content"][0]["signature"] == "" and GENERATED_TOOL_ID.fullmatch(answer["content"][1]["id"])
    assert (answer["stop_reason"], answer["stop_sequence"]) == ("tool_use", None)
    assert answer["usage"]["input_tokens"] == 40 and answer["usage"]["output_tokens"] >= 1


def test_native_stream_citations_wait_for_their_text_block():
    citation = {"type": "char_location", "cited_text": "x", "document_index": 0}
    events = relayed(
        START,
        *block(0, {"type": "text", "text": ""}, {"type": "citations_delta", "citation": citation}),
        *block(
            1,
            {"type": "text", "text": ""},
            {"type": "citations_delta", "citation": citation},
            {"type": "text_delta", "text": "Hi"},
        ),
        DELTA,
        STOP,
    )
    result = assert_well_formed(events)
    assert result.content == [{"type": "text", "text": "Hi", "citations": [citation]}]
    assert [data["index"] for name, data in events if name.startswith("content_block")] == [0, 0, 0, 0]
