"""Parley in front of a real vLLM (CPU, tiny model, random weights), with the official SDK as client:
the checks every real worker gets, plus what only vLLM shows (its /tokenize, its metrics)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.anthropic_stream import assert_well_formed
from tests.integration.helpers import parse_sse
from tests.stack import RunningParley

from .conftest import MODEL, PING_SECONDS
from .prompts import FORCED, GREEDY, HELLO, PARIS, SDK_GREEDY, WEATHER
from .servers import SERVED_MODEL, VllmServer

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "requests"
# The same conversation as Anthropic's messages, and as the Chat Completions messages Parley must
# turn them into (for vLLM's own count of them).
TOOL_TURNS = [
    *PARIS,
    {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
    },
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny, 21 C"}]},
]
TOOL_TURNS_AS_CHAT = [
    *PARIS,
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny, 21 C"},
]
CHAT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": WEATHER["description"],
            "parameters": WEATHER["input_schema"],
        },
    }
]


@pytest.fixture
def client(parley: RunningParley) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=parley.url, api_key=parley.key, max_retries=0, timeout=300)


def vllm_count(vllm: VllmServer, messages: list[dict], tools: list[dict] | None = None) -> int:
    """vLLM's own count of a Chat Completions prompt (its POST /tokenize, with the chat template)."""
    body: dict = {"model": SERVED_MODEL, "messages": messages, "add_generation_prompt": True}
    if tools:
        body["tools"] = tools
    answer = httpx.post(vllm.root_url + "/tokenize", json=body, timeout=60)
    answer.raise_for_status()
    return answer.json()["count"]


def streamed(parley: RunningParley, body: dict) -> list[tuple[str, dict]]:
    """Parley's stream for `body`, as (event, data) pairs."""
    with httpx.Client(base_url=parley.url, headers={"x-api-key": parley.key}, timeout=300) as http:
        answer = http.post("/v1/messages", json={"model": MODEL, **body, "stream": True})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/event-stream")
    return [(item.event or "", item.json()) for item in parse_sse(answer.content)]


def test_buffered_text_is_a_message(client):
    message = client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
    assert message.model == MODEL and message.id.startswith("msg_")
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.output_tokens <= 8 and message.usage.input_tokens > 0


def test_streamed_text_is_well_formed_and_counts_agree(parley, vllm):
    events = streamed(parley, {"max_tokens": 8, "messages": HELLO})
    assert_well_formed(events)
    start = events[0][1]["message"]["usage"]["input_tokens"]
    final = next(data for name, data in events if name == "message_delta")["usage"]["input_tokens"]
    assert start == final == vllm_count(vllm, HELLO), "message_start, the final usage and vLLM's count agree"


def test_max_tokens_cuts_the_answer_with_max_tokens(client, parley):
    message = client.messages.create(model=MODEL, max_tokens=4, messages=HELLO, **SDK_GREEDY)
    assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 4)
    result = assert_well_formed(streamed(parley, {"max_tokens": 4, "messages": HELLO, **GREEDY}))
    assert (result.stop_reason, result.usage["output_tokens"]) == ("max_tokens", 4)
    assert result.text == "".join(block.text for block in message.content), "greedy: the same answer twice"


def test_a_stop_sequence_ends_the_answer_before_it(client, parley):
    greedy = client.messages.create(model=MODEL, max_tokens=24, messages=HELLO, **SDK_GREEDY)
    text = "".join(block.text for block in greedy.content)
    # A stop sequence the greedy answer reaches: three characters first seen past its start.
    start = next(i for i in range(2, len(text) - 3) if text[i : i + 3].strip() and text.find(text[i : i + 3]) == i)
    stop = text[start : start + 3]
    message = client.messages.create(model=MODEL, max_tokens=24, messages=HELLO, stop_sequences=[stop], **SDK_GREEDY)
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", stop)
    assert "".join(block.text for block in message.content) == text[:start]
    result = assert_well_formed(
        streamed(parley, {"max_tokens": 24, "messages": HELLO, "stop_sequences": [stop], **GREEDY})
    )
    assert (result.stop_reason, result.stop_sequence, result.text) == ("stop_sequence", stop, text[:start])


def test_a_system_prompt_reaches_the_template(client, vllm):
    system = "You are a terse assistant."
    message = client.messages.create(model=MODEL, max_tokens=4, system=system, messages=HELLO)
    with_system = vllm_count(vllm, [{"role": "system", "content": system}, *HELLO])
    assert message.usage.input_tokens == with_system > vllm_count(vllm, HELLO)


def test_a_tool_result_turn_is_answered_and_counted_as_vllm_counts_it(client, vllm):
    expected = vllm_count(vllm, TOOL_TURNS_AS_CHAT, CHAT_TOOLS)
    assert client.messages.count_tokens(model=MODEL, messages=TOOL_TURNS, tools=[WEATHER]).input_tokens == expected
    message = client.messages.create(model=MODEL, max_tokens=8, messages=TOOL_TURNS, tools=[WEATHER])
    assert message.usage.input_tokens == expected
    assert message.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_count_tokens_is_vllms_own_count(client, vllm):
    counted = client.messages.count_tokens(model=MODEL, messages=HELLO).input_tokens
    assert counted == vllm_count(vllm, HELLO)


def _city_call(content: list, finished: bool) -> dict:
    """The answer's get_weather call: its input an object of the schema's one property (the
    grammar keeps it to the schema; a call cut by max_tokens may not have reached its value)."""
    calls = [block for block in content if block["type"] == "tool_use"]
    assert len(calls) == 1, content
    call = calls[0]
    assert call["id"].startswith("toolu_") and call["name"] == "get_weather"
    assert isinstance(call["input"], dict) and set(call["input"]) <= {"city"}
    if finished:
        assert isinstance(call["input"]["city"], str), call
    return call


def test_forced_tool_call_input_is_an_object_matching_the_schema(client):
    message = client.messages.create(model=MODEL, max_tokens=512, messages=PARIS, tools=[WEATHER], tool_choice=FORCED)
    assert message.stop_reason in ("tool_use", "max_tokens")
    _city_call([block.model_dump() for block in message.content], message.stop_reason == "tool_use")


def test_streamed_forced_tool_call_fragments_concatenate_to_its_input(parley):
    events = streamed(parley, {"max_tokens": 512, "messages": PARIS, "tools": [WEATHER], "tool_choice": FORCED})
    result = assert_well_formed(events)
    assert result.stop_reason in ("tool_use", "max_tokens")
    call = _city_call(result.content, result.stop_reason == "tool_use")
    index = result.content.index(call)
    fragments = [
        data["delta"]["partial_json"]
        for name, data in events
        if name == "content_block_delta" and data["index"] == index and data["delta"]["type"] == "input_json_delta"
    ]
    assert json.loads("".join(fragments)) == call["input"]


def test_a_forced_call_cut_by_max_tokens_is_the_same_tool_use_buffered_and_streamed(client, parley):
    """Greedy, the tiny model writes the grammar's whitespace until max_tokens: vLLM sends the cut
    call buffered as its markup in `content` (no tool_calls), streamed as tool_calls deltas."""
    body = {"max_tokens": 48, "messages": PARIS, "tools": [WEATHER], "tool_choice": FORCED}
    message = client.messages.create(model=MODEL, **body, **SDK_GREEDY)
    result = assert_well_formed(streamed(parley, {**body, **GREEDY}))
    assert message.stop_reason == result.stop_reason == "max_tokens"
    buffered = _city_call([block.model_dump() for block in message.content], finished=False)
    assert _city_call(result.content, finished=False)["input"] == buffered["input"]


def test_tool_choice_none_answers_without_tools_and_auto_is_well_formed(client, parley):
    message = client.messages.create(
        model=MODEL, max_tokens=16, messages=PARIS, tools=[WEATHER], tool_choice={"type": "none"}
    )
    assert [block.type for block in message.content] in (["text"], [])
    assert message.stop_reason in ("end_turn", "max_tokens")
    result = assert_well_formed(
        streamed(parley, {"max_tokens": 16, "messages": PARIS, "tools": [WEATHER], "tool_choice": {"type": "auto"}})
    )
    assert result.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_a_prompt_over_the_context_window_is_a_400_with_vllms_message(client):
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "word " * 70_000}])
    error = refused.value.body["error"]
    assert error["type"] == "invalid_request_error"
    assert "maximum context length is 65536 tokens" in error["message"], error


def test_claude_codes_first_request_streams_with_pings_through_the_prefill(parley):
    """Claude Code's captured first request (24 tools, 78 KB): long for a CPU to prefill, and
    the stream must show it is alive meanwhile."""
    request = json.loads((VECTORS / "claude_code_first_request.json").read_text())["request"]
    arrivals: list[tuple[str, float]] = []  # each event's name and when it came
    lines = []
    with httpx.Client(base_url=parley.url, headers={"x-api-key": parley.key}, timeout=600) as http:
        with http.stream("POST", "/v1/messages", json={**request, "max_tokens": 16}) as answer:
            assert answer.status_code == 200
            for line in answer.iter_lines():
                lines.append(line)
                if line.startswith("event: "):
                    arrivals.append((line.removeprefix("event: "), time.monotonic()))
    events = [(item.event or "", item.json()) for item in parse_sse("\n".join(lines).encode() + b"\n\n")]
    result = assert_well_formed(events)
    assert result.message["model"] == request["model"]
    assert result.usage["input_tokens"] > 10_000
    names = [name for name, _ in arrivals]
    answered = next(i for i, name in enumerate(names) if name in ("content_block_start", "message_delta", "error"))
    prefill = arrivals[answered][1] - arrivals[0][1]
    if prefill > 3 * PING_SECONDS:
        assert "ping" in names[1:answered], f"{prefill:.1f} s of prefill went without a ping"


def _metrics(vllm: VllmServer) -> dict[str, float]:
    """vLLM's gauges and counters by name, each summed over its labels."""
    values: dict[str, float] = {}
    for line in httpx.get(vllm.root_url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("vllm:"):
            name, value = line.split("{", 1)[0], float(line.rsplit(" ", 1)[1])
            values[name] = values.get(name, 0.0) + value
    return values


def test_a_client_that_leaves_mid_stream_stops_vllms_generation(parley, vllm):
    """vLLM counts an aborted request in no request_success_total (its "abort" label stays 0): the
    generation stopped if the request left `running` with no request finished and fewer tokens
    generated than max_tokens."""
    before = _metrics(vllm)
    body = {"model": MODEL, "max_tokens": 512, "messages": HELLO, "stream": True}
    with httpx.Client(base_url=parley.url, headers={"x-api-key": parley.key}, timeout=300) as http:
        with http.stream("POST", "/v1/messages", json=body) as answer:
            for line in answer.iter_lines():
                if "content_block_delta" in line:
                    break  # the client goes away mid-answer
    deadline = time.monotonic() + 300
    while (after := _metrics(vllm))["vllm:num_requests_running"] + after["vllm:num_requests_waiting"] > 0:
        assert time.monotonic() < deadline, "vLLM kept the request running"
        time.sleep(0.2)
    assert after["vllm:request_success_total"] == before["vllm:request_success_total"], "it ran to its end"
    assert after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"] < 512
