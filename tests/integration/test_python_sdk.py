"""More of the official Python SDK than the other files use: the async client, raw event streams,
the stream helpers, count_tokens with tools and thinking, the typed errors not covered elsewhere,
and the SDK's own retries following Parley's x-should-retry."""

from __future__ import annotations

import asyncio

import anthropic
import pytest

from tests.fakeworker import Answer, ToolCall, WorkerError

from .helpers import HELLO, MAX_BODY_BYTES, MODEL, THINKING_MODES, WEATHER_TOOL, request


def test_async_client_create_and_stream(parley, worker):
    async def both() -> tuple[anthropic.types.Message, list[str], anthropic.types.Message]:
        async with anthropic.AsyncAnthropic(base_url=parley.url, api_key=parley.key, max_retries=0) as client:
            created = await client.messages.create(**request())
            async with client.messages.stream(**request()) as stream:
                texts = [text async for text in stream.text_stream]
                final = await stream.get_final_message()
            return created, texts, final

    worker.enqueue(Answer(text="async hello there"), Answer(text="async hello there"))
    created, texts, final = asyncio.run(both())
    assert created.content[0].text == "async hello there"
    assert "".join(texts) == "async hello there" and len(texts) > 1
    assert [block.text for block in final.content] == [block.text for block in created.content]
    assert final.stop_reason == created.stop_reason == "end_turn"


def test_create_with_stream_true_yields_typed_events(client, worker):
    worker.enqueue(Answer(text="ok", tool_calls=[ToolCall("get_weather", {"city": "Rome"})]))
    events = list(client.messages.create(**request(tools=[WEATHER_TOOL]), stream=True))
    kinds = [type(event).__name__ for event in events]
    assert kinds[0] == "RawMessageStartEvent" and kinds[-1] == "RawMessageStopEvent"
    deltas = [event.delta for event in events if event.type == "content_block_delta"]
    partial = "".join(delta.partial_json for delta in deltas if delta.type == "input_json_delta")
    assert partial.replace(" ", "") == '{"city":"Rome"}'
    assert [event.delta.stop_reason for event in events if event.type == "message_delta"] == ["tool_use"]


def test_stream_helpers_report_the_tool_call(client, worker):
    worker.enqueue(Answer(tool_calls=[ToolCall("get_weather", {"city": "Oslo", "unit": "celsius"})]))
    with client.messages.stream(**request(tools=[WEATHER_TOOL], tool_choice={"type": "any"})) as stream:
        snapshots = [event.snapshot for event in stream if event.type == "input_json"]
        final = stream.get_final_message()
    assert snapshots[-1] == {"city": "Oslo", "unit": "celsius"}
    [tool_use] = final.content
    assert isinstance(tool_use, anthropic.types.ToolUseBlock) and tool_use.input == snapshots[-1]


@pytest.mark.parametrize("thinking", THINKING_MODES, ids=["enabled", "adaptive"])
def test_count_tokens_with_system_tools_and_thinking(client, thinking):
    plain = client.messages.count_tokens(model=MODEL, messages=HELLO).input_tokens
    full = client.messages.count_tokens(
        model=MODEL, messages=HELLO, system="Be brief.", tools=[WEATHER_TOOL], thinking=thinking
    ).input_tokens
    assert full > plain >= 1


def test_forbidden_model_is_a_permission_denied_error(parley, worker):
    key, _ = parley.services.keys.create(account="sdk-acct", name="t", allowed_models=("other-model",))
    client = anthropic.Anthropic(base_url=parley.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        client.messages.create(**request())
    assert caught.value.status_code == 403
    assert caught.value.body["error"]["type"] == "permission_error"
    assert not worker.requests


def test_oversized_request_is_a_request_too_large_error(client, worker):
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(**request(messages=[{"role": "user", "content": "x" * (MAX_BODY_BYTES + 10)}]))
    assert caught.value.status_code == 413
    assert isinstance(caught.value, getattr(anthropic, "RequestTooLargeError", anthropic.APIStatusError))
    assert caught.value.body["error"]["type"] == "request_too_large"
    assert not worker.requests


def test_sdk_retries_what_parley_marks_retryable_and_only_that(parley, worker):
    client = anthropic.Anthropic(base_url=parley.url, api_key=parley.key, max_retries=2)
    worker.enqueue(WorkerError(503, "busy"), Answer(text="second time lucky"))
    message = client.with_options(timeout=20).messages.create(**request())
    assert message.content[0].text == "second time lucky"
    assert len(worker.requests) == 2, "a 529 says x-should-retry: true, so the SDK tried again"

    worker.reset()
    worker.enqueue(WorkerError(400, {"message": "bad grammar"}), Answer(text="never sent"))
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(**request())
    assert len(worker.requests) == 1, "a 400 says x-should-retry: false"
