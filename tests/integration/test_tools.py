"""Tool calls from each worker flavour become tool_use blocks, buffered and streamed alike."""

from __future__ import annotations

import re

import pytest

from tests.fakeworker import Answer, ToolCall

from .helpers import (
    TIME_TOOL,
    WEATHER_TOOL,
    buffered_and_streamed,
    request,
    stream_raw,
    without_id,
)

PARIS = ToolCall("get_weather", {"city": "Paris", "unit": "celsius"}, id="call_paris01")
ROME_TIME = ToolCall("get_time", {"timezone": "Europe/Rome"}, id="call_rome02")
HTML = ToolCall("get_weather", {"city": "<Paris> & <Rome>"}, id="call_html03")  # Go escapes <>& as \u003c…
ZURICH = ToolCall("get_weather", {"city": "Zürich", "note": 'naïve ☀ "quoted" {braces}'}, id="call_zurich04")

CASES = {
    "vllm": Answer(tool_calls=[PARIS]),
    "vllm-text-then-tool": Answer(text="Let me check that for you.", tool_calls=[PARIS]),
    "vllm-parallel": Answer(tool_calls=[PARIS, ROME_TIME]),
    "vllm-parallel-interleaved": Answer(tool_calls=[PARIS, ROME_TIME], interleave=True),
    "vllm-every-byte-split": Answer(text="Un momento — je vérifie.", tool_calls=[ZURICH, ROME_TIME], split_bytes=1),
    "ollama-finish-stop": Answer(tool_calls=[PARIS, ROME_TIME], flavour="ollama", finish_reason="stop"),
    "ollama": Answer(text="Checking.", tool_calls=[HTML, ROME_TIME], flavour="ollama"),
    "llamacpp": Answer(tool_calls=[PARIS, ROME_TIME], flavour="llamacpp"),
    "sglang": Answer(tool_calls=[ZURICH], flavour="sglang"),
}


def tool_request(**overrides):
    messages = [{"role": "user", "content": "What's the weather in Paris, and the time in Rome?"}]
    return request(tools=[WEATHER_TOOL, TIME_TOOL], messages=messages, **overrides)


GENERATED_ID = re.compile(r"toolu_01[1-9A-HJ-NP-Za-km-z]{22}")


def expected_blocks(answer: Answer) -> list[dict]:
    """The fake worker's ids (call_…) are not Anthropic's: Parley gives each call a toolu_01… id."""
    blocks = [{"type": "text", "text": answer.text}] if answer.text else []
    return blocks + [
        {"type": "tool_use", "id": "toolu_01<generated>", "name": call.name, "input": call.arguments}
        for call in answer.tool_calls
    ]


def blocks_of(content: list) -> list[dict]:
    keys = {"text": ("type", "text"), "tool_use": ("type", "id", "name", "input")}
    blocks = [{key: block[key] for key in keys[block["type"]]} for block in content]
    for block in blocks:
        if block["type"] == "tool_use" and GENERATED_ID.fullmatch(block["id"]):
            block["id"] = "toolu_01<generated>"
    return blocks


def without_ids(message) -> dict:
    """The message without its id, and its generated (random) tool ids masked."""
    dumped = without_id(message)
    dumped["content"] = [
        {**block, "id": "toolu_01<generated>"}
        if block["type"] == "tool_use" and GENERATED_ID.fullmatch(block["id"])
        else block
        for block in dumped["content"]
    ]
    return dumped


@pytest.mark.parametrize("case", CASES)
def test_tool_calls_become_tool_use_blocks(client, http, worker, case):
    answer = CASES[case]
    buffered, streamed = buffered_and_streamed(client, worker, answer, **tool_request())

    assert buffered.stop_reason == "tool_use"
    assert blocks_of([block.model_dump() for block in buffered.content]) == expected_blocks(answer)
    assert without_ids(streamed) == without_ids(buffered)

    _, result = stream_raw(http, worker, answer, **tool_request())
    assert result.stop_reason == "tool_use"
    assert blocks_of(result.content) == expected_blocks(answer)


@pytest.mark.parametrize("case", ["vllm", "vllm-every-byte-split", "llamacpp"])
def test_tool_arguments_stream_as_they_arrive(http, worker, case):
    raw, result = stream_raw(http, worker, CASES[case], **tool_request())
    first_tool = next(index for index, block in enumerate(result.content) if block["type"] == "tool_use")
    fragments = [
        data["delta"]["partial_json"]
        for name, data in raw.events
        if name == "content_block_delta" and data["index"] == first_tool
    ]
    assert len(fragments) > 1, "tool input should be streamed in pieces, as the worker generates it"


def test_worker_tool_ids_that_anthropic_would_reject_are_replaced(client, worker):
    # Some servers use ids such as "functions.get_weather:0"; clients echo the id back in
    # tool_result, where Anthropic's id pattern applies.
    answer = Answer(tool_calls=[ToolCall("get_weather", {"city": "Paris"}, id="functions.get_weather:0")])
    buffered, streamed = buffered_and_streamed(client, worker, answer, **tool_request())
    for message in (buffered, streamed):
        (block,) = message.content
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", block.id), block.id
        assert (block.name, block.input) == ("get_weather", {"city": "Paris"})


@pytest.mark.parametrize("flavour", ["vllm", "ollama", "llamacpp"])
def test_tool_without_arguments_has_empty_input(client, worker, flavour):
    answer = Answer(tool_calls=[ToolCall("get_time", {}, id="call_noargs")], flavour=flavour)
    buffered, streamed = buffered_and_streamed(client, worker, answer, **tool_request())
    for message in (buffered, streamed):
        assert [(block.type, block.name, block.input) for block in message.content] == [("tool_use", "get_time", {})]
        assert message.stop_reason == "tool_use"


@pytest.mark.parametrize("flavour", ["vllm", "ollama"])
def test_thinking_then_tool_call(client, http, worker, flavour):
    answer = Answer(reasoning="I need the weather tool.", tool_calls=[PARIS], flavour=flavour)
    params = tool_request(max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024})
    buffered, streamed = buffered_and_streamed(client, worker, answer, **params)
    assert [block.type for block in buffered.content] == ["thinking", "tool_use"]
    assert buffered.content[0].thinking == "I need the weather tool."
    assert (buffered.content[1].name, buffered.content[1].input) == ("get_weather", PARIS.arguments)
    assert without_ids(streamed) == without_ids(buffered)

    _, result = stream_raw(http, worker, answer, **params)
    assert [block["type"] for block in result.content] == ["thinking", "tool_use"]
    assert result.stop_reason == "tool_use"
