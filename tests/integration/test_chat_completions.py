"""POST /v1/chat/completions with the official openai SDK: same keys, routes, limits and metering."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.fakeworker import Answer, Drop, ToolCall, WorkerError

from .helpers import ALIAS, MAX_OUTPUT_TOKENS, MODEL, WORKER_MODEL, last_worker_body

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def oai(parley) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{parley.url}/v1", api_key=parley.key, max_retries=0, timeout=20)


@pytest.fixture(autouse=True)
def _reset(worker):
    worker.reset()


def test_buffered_completion(oai, worker):
    worker.enqueue(Answer(text="Hi there", prompt_tokens=9, completion_tokens=2))
    completion = oai.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=50)
    assert completion.choices[0].message.content == "Hi there"
    assert completion.model == MODEL, "the client sees the name it asked for, not the worker's"
    assert completion.usage.prompt_tokens == 9 and completion.usage.completion_tokens == 2
    body = last_worker_body(worker)
    assert body["model"] == WORKER_MODEL and body["messages"] == HELLO and body["max_tokens"] == 50


def test_streamed_completion_with_tool_call(oai, worker):
    worker.enqueue(Answer(tool_calls=[ToolCall("get_weather", {"city": "Paris"})]))
    stream = oai.chat.completions.create(model=ALIAS, messages=HELLO, stream=True, max_tokens=100000)
    chunks = list(stream)
    arguments = "".join(
        call.function.arguments or ""
        for chunk in chunks
        for choice in chunk.choices
        for call in choice.delta.tool_calls or ()
    )
    assert arguments == '{"city": "Paris"}' or arguments.replace(" ", "") == '{"city":"Paris"}'
    assert {chunk.model for chunk in chunks} == {ALIAS}
    assert all(chunk.usage is None for chunk in chunks), "usage was not asked for, so none is sent"
    body = last_worker_body(worker)
    assert body["stream_options"]["include_usage"] is True, "Parley always asks: it meters the tokens"
    assert body["max_tokens"] == MAX_OUTPUT_TOKENS, "clamped to the worker's output limit"


def test_streamed_usage_when_asked(oai, worker):
    worker.enqueue(Answer(text="a b c", prompt_tokens=13, completion_tokens=3))
    chunks = list(
        oai.chat.completions.create(model=MODEL, messages=HELLO, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[-1].usage.prompt_tokens == 13 and chunks[-1].usage.completion_tokens == 3


def test_stream_cut_short_is_an_error_not_a_clean_end(parley, worker):
    worker.enqueue(Drop(Answer(text="one two three four"), after_events=2))
    response = httpx.post(
        f"{parley.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {parley.key}"},
        json={"model": MODEL, "messages": HELLO, "stream": True},
        timeout=20,
    )
    lines = [line for line in response.text.split("\n\n") if line]
    assert lines[-1] == "data: [DONE]" and '"error"' in lines[-2]


def test_errors_use_openais_envelope(oai, worker):
    with pytest.raises(openai.NotFoundError) as caught:
        oai.chat.completions.create(model="no-such-model", messages=HELLO)
    assert caught.value.body["message"].startswith("model: no-such-model")
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=MODEL, messages=[])
    worker.enqueue(WorkerError(503, "Service Unavailable"))
    with pytest.raises(openai.InternalServerError) as caught:
        oai.chat.completions.create(model=MODEL, messages=HELLO)
    assert caught.value.status_code == 529


def test_bad_key_is_refused(parley):
    client = openai.OpenAI(base_url=f"{parley.url}/v1", api_key="sk-parley-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=MODEL, messages=HELLO)
