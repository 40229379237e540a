"""The response cache's pure half: the key, what may be kept, the replayed stream and the recorder
that keeps a streamed answer (core/response_cache.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from parley.core.policy import CachePolicy
from parley.core.response_cache import AnswerRecorder, cache_key, cacheable, replay_events, storable
from tests.anthropic_stream import accumulate, assert_well_formed

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "cache" / "keys.json").read_text())


def _key(
    data: dict[str, Any], account: str = "acct", route: str = "model", version: str = "", betas: Any = None
) -> str:
    return cache_key(account, route, version, betas, data)


@pytest.mark.parametrize("case", VECTORS["same"], ids=[case["name"] for case in VECTORS["same"]])
def test_what_the_key_leaves_out(case):
    assert _key(case["a"]) == _key(case["b"])


@pytest.mark.parametrize("case", VECTORS["different"], ids=[case["name"] for case in VECTORS["different"]])
def test_what_makes_another_key(case):
    assert _key(case["a"]) != _key(case["b"])


def test_the_account_route_policy_version_and_betas_are_in_the_key():
    data = VECTORS["different"][0]["a"]
    base = _key(data)
    assert len({base, _key(data, account="other"), _key(data, route="other"), _key(data, version="acct@2")}) == 4
    assert _key(data, betas="a,b") == _key(data, betas=" b , a") != base


def test_a_tool_parameter_named_cache_control_stays_in_the_key():
    def tool(name: str) -> dict[str, Any]:
        schema = {"type": "object", "properties": {name: {"type": "string"}}}
        return {"name": "t", "input_schema": schema}

    messages = [{"role": "user", "content": "hi"}]
    assert _key({"messages": messages, "tools": [tool("cache_control")]}) != _key(
        {"messages": messages, "tools": [tool("other")]}
    )


def test_what_the_modes_cache():
    assert not cacheable(CachePolicy("off"), {"temperature": 0})
    assert cacheable(CachePolicy("deterministic"), {"temperature": 0})
    assert not cacheable(CachePolicy("deterministic"), {})  # Anthropic's default temperature is 1
    assert not cacheable(CachePolicy("deterministic"), {"temperature": 0.2})
    assert cacheable(CachePolicy("all"), {"temperature": 1})


def _message(content: list[dict[str, Any]], stop_reason: str = "end_turn") -> dict[str, Any]:
    return {
        "model": "m",
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 12,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 3,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 40,
            "service_tier": "standard",
        },
    }


RICH = _message(
    [
        {"type": "thinking", "thinking": "Let me think about it " * 10, "signature": "sig-1"},
        {"type": "redacted_thinking", "data": "opaque"},
        {
            "type": "text",
            "text": "A cited answer, long enough to come in several pieces of text. " * 3,
            "citations": [
                {"type": "char_location", "cited_text": "x", "document_index": 0, "start_char_index": 0,
                 "end_char_index": 1, "document_title": None}
            ],
        },
        {"type": "tool_use", "id": "toolu_01", "name": "lookup",
         "input": {"q": "a \u2028 \"b\" " + "long query words " * 5, "n": [1, 2, None]}},
        {"type": "tool_use", "id": "toolu_02", "name": "noop", "input": {}},
    ],
    stop_reason="tool_use",
)  # fmt: skip


def _without_nones(value: Any) -> Any:
    """As the SDK's accumulator gives it (`exclude_none`); a tool input keeps its nulls."""
    if isinstance(value, list):
        return [_without_nones(item) for item in value]
    if isinstance(value, dict):
        return {
            name: item if name == "input" else _without_nones(item) for name, item in value.items() if item is not None
        }
    return value


def test_a_kept_answer_replays_as_a_well_formed_stream_that_accumulates_to_it():
    events = replay_events(RICH)
    assert_well_formed(events, signed_thinking=True)
    assert accumulate(events) == _without_nones(RICH)
    deltas = [data["delta"]["type"] for name, data in events if name == "content_block_delta"]
    assert deltas.count("text_delta") > 2 and deltas.count("thinking_delta") > 2
    assert deltas.count("input_json_delta") >= 3


def test_the_recorder_keeps_what_the_client_was_sent():
    recorder = AnswerRecorder()
    events = replay_events(RICH)
    for start in range(0, len(events), 3):
        recorder.record(events[start : start + 3])
    assert recorder.message == RICH


@pytest.mark.parametrize(
    "cut",
    [
        lambda events: events[:-1],  # no message_stop
        lambda events: [*events[:4], ("error", {"type": "error", "error": {"type": "api_error", "message": "x"}})],
        lambda events: events[1:],  # no message_start
    ],
    ids=["no_stop", "error", "no_start"],
)
def test_the_recorder_keeps_nothing_of_a_cut_or_failed_stream(cut):
    recorder = AnswerRecorder()
    recorder.record(cut(replay_events(RICH)))
    assert recorder.message is None


def test_a_bad_tool_json_fragment_spoils_the_recording():
    events = copy.deepcopy(replay_events(_message([{"type": "tool_use", "id": "t", "name": "n", "input": {"a": 1}}])))
    for name, data in events:
        if name == "content_block_delta":
            data["delta"]["partial_json"] = "{not json"
            break
    recorder = AnswerRecorder()
    recorder.record(events)
    assert recorder.message is None


def test_only_complete_successful_answers_are_storable():
    assert storable(RICH) and storable(_message([], "max_tokens"))
    assert not storable(_message([{"type": "text", "text": "no"}], "refusal"))
    assert not storable(None) and not storable({"type": "error"})
