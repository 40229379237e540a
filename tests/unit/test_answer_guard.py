"""The answer guard (core/answer_guard.py) on Anthropic events and messages, and on Chat
Completions answers: restore at every split point, refusals in Anthropic's grammar, tool calls
held whole under output rules, and every stream vector passing through unchanged in meaning."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from parley.core.answer_guard import answer_guard_for, chat_answer_guard_for
from parley.core.policy import parse_policy
from parley.core.stream import WorkerSSETranslator
from tests.anthropic_stream import accumulate, assert_well_formed
from tests.vectors.loader import context_of, load, vector_params

EMAIL, EMAIL_PLACEHOLDER = 'jane "jd" doe@example.org', "<EMAIL_0123456789>"
PHONE, PHONE_PLACEHOLDER = "(415) 555-2671", "<PHONE_abcdef0123>"
RESTORE_MAP = {EMAIL_PLACEHOLDER: EMAIL, PHONE_PLACEHOLDER: PHONE}
MASK = parse_policy({"pii": {"mode": "mask"}}, version="account#t@1")
DENY = parse_policy(
    {"pii": {"mode": "mask"}, "content": {"deny": [{"name": "roadmap", "phrases": ["internal roadmap"]}]}},
    version="account#t@2",
)
KEY = b"k" * 32
USAGE = {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 0}


def _start() -> tuple[str, dict[str, Any]]:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [], "usage": USAGE}
    return ("message_start", {"type": "message_start", "message": message})


def _text_events(pieces: list[str], index: int = 0) -> list[tuple[str, dict[str, Any]]]:
    start = {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
    events = [("content_block_start", start)]
    for piece in pieces:
        delta = {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
        events.append(("content_block_delta", delta))
    events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def _tool_events(arguments: str, index: int = 0, size: int = 3) -> list[tuple[str, dict[str, Any]]]:
    block = {"type": "tool_use", "id": "toolu_1", "name": "send", "input": {}}
    events = [("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})]
    for at in range(0, len(arguments), size):
        delta = {"type": "input_json_delta", "partial_json": arguments[at : at + size]}
        events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
    events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def _end(stop_reason: str = "end_turn") -> list[tuple[str, dict[str, Any]]]:
    delta = {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": USAGE}
    return [("message_delta", delta), ("message_stop", {"type": "message_stop"})]


def _guarded(policy: Any, events: list[tuple[str, dict[str, Any]]], one_by_one: bool = True) -> list[Any]:
    guard = answer_guard_for(policy, RESTORE_MAP, KEY, usage=lambda: USAGE)
    assert guard is not None
    if not one_by_one:
        return guard.events(copy.deepcopy(events))
    return [out for event in copy.deepcopy(events) for out in guard.events([event])]


def _text_of(message: dict[str, Any]) -> str:
    return "".join(block["text"] for block in message["content"] if block["type"] == "text")


TEXT = f"Write to {EMAIL_PLACEHOLDER} or call {PHONE_PLACEHOLDER}, today."
RESTORED = f"Write to {EMAIL} or call {PHONE}, today."


@pytest.mark.parametrize("first", range(0, len(TEXT) + 1, 3))
@pytest.mark.parametrize("second", [1, 5, 17])
def test_placeholders_split_anywhere_are_restored_in_streamed_text(first: int, second: int) -> None:
    pieces = [TEXT[:first]] + [TEXT[at : at + second] for at in range(first, len(TEXT), second)]
    events = _guarded(MASK, [_start(), *_text_events([piece for piece in pieces if piece]), *_end()])
    assert_well_formed(events)
    assert _text_of(accumulate(events)) == RESTORED


def test_placeholders_in_streamed_tool_arguments_are_restored_json_escaped() -> None:
    arguments = json.dumps({"to": f"{EMAIL_PLACEHOLDER}", "note": f"call {PHONE_PLACEHOLDER}"})
    for size in (1, 2, 3, 7):
        events = _guarded(MASK, [_start(), *_tool_events(arguments, size=size), *_end("tool_use")])
        assert_well_formed(events)
        (tool_use,) = accumulate(events)["content"]
        assert tool_use["input"] == {"to": EMAIL, "note": f"call {PHONE}"}


def test_an_unknown_placeholder_is_left_as_it_is() -> None:
    text = "See <EMAIL_ffffffffff> and <EMAIL_0123456789"
    events = _guarded(MASK, [_start(), *_text_events([text[:11], text[11:]]), *_end()])
    assert _text_of(accumulate(events)) == text


@pytest.mark.parametrize("size", [1, 4, 9, 40])
def test_a_streamed_refusal_closes_the_block_and_ends_with_message_delta_and_stop(size: int) -> None:
    text = "Sure. Our INTERNAL\u200b roadmap says May. More text follows here."
    pieces = [text[at : at + size] for at in range(0, len(text), size)]
    events = _guarded(DENY, [_start(), *_text_events(pieces), *_text_events(["next block"], 1), *_end()])
    assert_well_formed(events)
    assert [name for name, _ in events[-2:]] == ["message_delta", "message_stop"]
    delta = events[-2][1]
    assert delta["delta"] == {
        "stop_reason": "refusal",
        "stop_sequence": None,
        "stop_details": {
            "type": "refusal",
            "category": None,
            "explanation": 'The answer was stopped by the content policy rule "roadmap".',
        },
    }
    assert delta["usage"] == USAGE
    sent = _text_of(accumulate(events))
    assert sent == "Sure. Our "[: len(sent)] and "internal" not in sent.lower() and "next block" not in sent


def test_a_refusal_before_any_text_sends_no_empty_block() -> None:
    events = _guarded(DENY, [_start(), *_text_events(["internal ", "roadmap"]), *_end()])
    assert_well_formed(events)
    assert accumulate(events)["content"] == []


def test_under_an_output_rule_a_tool_call_is_held_whole_then_sent_or_refused() -> None:
    clean = json.dumps({"to": EMAIL_PLACEHOLDER})
    events = _guarded(DENY, [_start(), *_tool_events(clean), *_end("tool_use")])
    assert_well_formed(events)
    assert accumulate(events)["content"][0]["input"] == {"to": EMAIL}

    denied = json.dumps({"body": "the internal roadmap"})
    events = _guarded(DENY, [_start(), *_text_events(["Sending."]), *_tool_events(denied, index=1), *_end()])
    assert_well_formed(events)
    message = accumulate(events)
    assert [block["type"] for block in message["content"]] == ["text"]  # no half of a call
    assert message["stop_reason"] == "refusal"


@pytest.mark.parametrize("path", vector_params("streams"))
def test_every_stream_vector_means_the_same_through_the_guard(path: Path) -> None:
    """No placeholder and no denied phrase in the answer: the guard changes nothing a client sees."""
    vector = load(path)
    translator = WorkerSSETranslator(context_of(vector))
    events = orjson.loads(orjson.dumps(translator.feed(vector["sse"].encode()) + translator.end()))
    guard = answer_guard_for(DENY, RESTORE_MAP, KEY, usage=lambda: USAGE)
    assert guard is not None
    guarded = [out for event in events for out in guard.events([tuple(event)])]
    if events[-1][0] == "error":
        assert guarded[-1][0] == "error"
        return
    assert accumulate(guarded) == accumulate([tuple(event) for event in events])


def test_a_buffered_answer_is_restored_and_a_refusal_is_cut_before_its_block() -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [
            {"type": "text", "text": f"Mail {EMAIL_PLACEHOLDER}."},
            {"type": "tool_use", "id": "t", "name": "send", "input": {"to": [EMAIL_PLACEHOLDER], "n": 1}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": USAGE,
    }
    guard = answer_guard_for(MASK, RESTORE_MAP, KEY)
    assert guard is not None
    restored = guard.message(message)
    assert restored["content"][0]["text"] == f"Mail {EMAIL}."
    assert restored["content"][1]["input"] == {"to": [EMAIL], "n": 1}
    assert restored["stop_reason"] == "tool_use"

    refused_guard = answer_guard_for(DENY, RESTORE_MAP, KEY)
    assert refused_guard is not None
    refused = refused_guard.message(
        {**message, "content": [{"type": "text", "text": "Our internal roadmap says May."}, message["content"][1]]}
    )
    assert refused["stop_reason"] == "refusal" and refused["stop_details"]["type"] == "refusal"
    assert refused["content"] == [{"type": "text", "text": "Our "}]
    assert refused["usage"] == USAGE


def test_no_guard_when_the_policy_leaves_answers_alone() -> None:
    assert answer_guard_for(MASK, {}, KEY) is None  # nothing to restore, no output rules
    assert answer_guard_for(parse_policy({"pii": {"mode": "mask", "restore": False}}), RESTORE_MAP, KEY) is None


def _chunk(content: str | None = None, finish: str | None = None, arguments: str | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if content is not None:
        delta["content"] = content
    if arguments is not None:
        delta["tool_calls"] = [{"index": 0, "function": {"arguments": arguments}}]
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def test_a_chat_stream_is_restored_across_chunks_and_refused_with_content_filter() -> None:
    guard = chat_answer_guard_for(DENY, RESTORE_MAP, KEY)
    assert guard is not None
    pieces = [TEXT[at : at + 4] for at in range(0, len(TEXT), 4)]
    chunks = [guard.chunk(_chunk(piece)) for piece in pieces] + [guard.chunk(_chunk(finish="stop"))]
    assert "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks) == RESTORED
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"

    refusing = chat_answer_guard_for(DENY, RESTORE_MAP, KEY)
    assert refusing is not None
    said = [refusing.chunk(_chunk(piece)) for piece in ["Our inter", "nal road", "map is"]]
    assert refusing.refused == "roadmap"
    assert said[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert "internal" not in "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in said)


def test_a_chat_completion_is_restored_in_content_and_tool_arguments() -> None:
    guard = chat_answer_guard_for(MASK, RESTORE_MAP, KEY)
    assert guard is not None
    answer = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": f"To {EMAIL_PLACEHOLDER}",
                    "tool_calls": [
                        {
                            "id": "1",
                            "type": "function",
                            "function": {"name": "send", "arguments": json.dumps({"to": EMAIL_PLACEHOLDER})},
                        }
                    ],
                },
            }
        ]
    }
    message = guard.completion(answer)["choices"][0]["message"]
    assert message["content"] == f"To {EMAIL}"
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"to": EMAIL}


MASK_OUTPUT = parse_policy({"pii": {"mode": "mask", "mask_output": True}}, version="account#t@3")


@pytest.mark.parametrize("size", [1, 6, 13, 200])
def test_mask_output_masks_what_the_model_wrote_and_restores_what_the_client_sent(size: int) -> None:
    text = f"Ask bob.smith@corp.example, not {EMAIL_PLACEHOLDER}; his desk is (415) 555-0100 ext none."
    pieces = [text[at : at + size] for at in range(0, len(text), size)]
    events = _guarded(MASK_OUTPUT, [_start(), *_text_events(pieces), *_end()])
    assert_well_formed(events)
    sent = _text_of(accumulate(events))
    assert "bob.smith@corp.example" not in sent and "555-0100" not in sent
    assert EMAIL in sent  # the client's own value, restored
    assert sent.startswith("Ask <EMAIL_") and sent.endswith(" ext none.")

    buffered = answer_guard_for(MASK_OUTPUT, RESTORE_MAP, KEY)
    assert buffered is not None
    message = {"role": "assistant", "content": [{"type": "text", "text": text}], "stop_reason": "end_turn"}
    assert buffered.message(message)["content"][0]["text"] == sent


def test_a_chat_finish_without_a_delta_still_sends_the_held_text() -> None:
    guard = chat_answer_guard_for(MASK, RESTORE_MAP, KEY)
    assert guard is not None
    said = guard.chunk(_chunk(f"write to {EMAIL_PLACEHOLDER[:6]}"))["choices"][0]["delta"]["content"]
    finish = guard.chunk({"id": "c", "choices": [{"index": 0, "finish_reason": "stop"}]})
    assert said + finish["choices"][0]["delta"]["content"] == f"write to {EMAIL_PLACEHOLDER[:6]}"


def test_a_delta_of_another_kind_waits_for_its_held_block_start() -> None:
    citation = {"type": "citations_delta", "citation": {"type": "char_location", "cited_text": "x"}}
    events = [
        _start(),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": citation}),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        *_end(),
    ]
    names = [(name, data.get("delta", {}).get("type")) for name, data in _guarded(MASK, events)]
    assert names[1:4] == [
        ("content_block_start", None),
        ("content_block_delta", "citations_delta"),
        ("content_block_delta", "text_delta"),
    ]
