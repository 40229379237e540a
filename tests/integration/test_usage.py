"""Usage: the worker's token counts wherever the worker puts them, estimates when it gives none."""

from __future__ import annotations

import pytest

from tests.fakeworker import Answer

from .helpers import (
    buffered_and_streamed,
    request,
    sdk_stream_final,
    stream_raw,
    without_id,
)

TEXT = "Four score and seven years ago our fathers brought forth a new nation."


@pytest.mark.parametrize(
    "flavour,placement",
    [
        ("vllm", "last"),  # a final chunk with `choices: []` and the usage
        ("sglang", "last"),
        ("ollama", "last"),
        ("vllm", "with_finish"),  # usage on the finish_reason chunk
        ("llamacpp", None),  # llama.cpp's own placement: with the finish chunk, plus timings
    ],
)
def test_streamed_usage_is_the_workers(client, http, worker, flavour, placement):
    answer = Answer(text=TEXT, prompt_tokens=23, completion_tokens=14, usage=placement, flavour=flavour)
    buffered, streamed = buffered_and_streamed(client, worker, answer, **request())
    assert (streamed.usage.input_tokens, streamed.usage.output_tokens) == (23, 14)
    assert without_id(streamed) == without_id(buffered)

    _, result = stream_raw(http, worker, answer)
    assert result.text == TEXT
    assert (result.usage["input_tokens"], result.usage["output_tokens"]) == (23, 14)
    assert result.message["usage"]["input_tokens"] > 0, "message_start must carry a real input_tokens"


@pytest.mark.parametrize("flavour", ["vllm", "llamacpp", "ollama"])
def test_stream_without_any_usage_gets_estimates(client, http, worker, flavour):
    answer = Answer(text=TEXT, usage="none", flavour=flavour)
    worker.enqueue(answer)
    streamed = sdk_stream_final(client, **request())
    assert streamed.content[0].text == TEXT
    assert streamed.stop_reason == "end_turn"
    assert streamed.usage.input_tokens > 0 and streamed.usage.output_tokens > 0

    _, result = stream_raw(http, worker, answer)
    assert result.usage["input_tokens"] > 0 and result.usage["output_tokens"] > 0


@pytest.mark.parametrize("flavour", ["vllm", "sglang", "llamacpp"])
def test_cached_prompt_tokens_are_cache_reads(client, http, worker, flavour):
    answer = Answer(text="cached", prompt_tokens=100, cached_tokens=40, completion_tokens=3, flavour=flavour)
    buffered, streamed = buffered_and_streamed(client, worker, answer, **request())
    for message in (buffered, streamed):
        usage = message.usage
        assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (60, 40, 3)
        assert usage.cache_creation_input_tokens == 0

    _, result = stream_raw(http, worker, answer)
    assert (result.usage["input_tokens"], result.usage["cache_read_input_tokens"]) == (60, 40)
