"""Answers through the official SDK, buffered and streamed: text per worker flavour, thinking, stop reasons."""

from __future__ import annotations

import pytest

from tests.fakeworker import Answer

from .helpers import (
    ALIAS,
    FLAVOURS,
    THINKING_MODES,
    buffered_and_streamed,
    request,
    stream_raw,
    without_id,
)

TEXT = "Hello there! Parley is answering from a worker, word by word."


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_text_answer_buffered_and_streamed(client, http, worker, flavour):
    answer = Answer(text=TEXT, prompt_tokens=17, completion_tokens=12, flavour=flavour)
    buffered, streamed = buffered_and_streamed(client, worker, answer, **request(model=ALIAS))

    assert buffered.id.startswith("msg_")
    assert buffered.type == "message" and buffered.role == "assistant"
    assert buffered.model == ALIAS
    assert [block.model_dump() for block in buffered.content] == [{"type": "text", "text": TEXT, "citations": None}]
    assert buffered.stop_reason == "end_turn" and buffered.stop_sequence is None
    assert (buffered.usage.input_tokens, buffered.usage.output_tokens) == (17, 12)

    assert streamed.id.startswith("msg_") and streamed.id != buffered.id
    assert without_id(streamed) == without_id(buffered)

    raw, result = stream_raw(http, worker, answer, model=ALIAS)
    assert result.message["model"] == ALIAS and result.message["id"].startswith("msg_")
    assert result.text == TEXT
    assert result.stop_reason == "end_turn"
    assert (result.usage["input_tokens"], result.usage["output_tokens"]) == (17, 12)
    text_deltas = [data for name, data in raw.events if name == "content_block_delta"]
    assert len(text_deltas) > 1, "the text should arrive as it is generated, not in one piece"


def test_request_id_headers_on_buffered_and_streamed_answers(client, worker):
    buffered = client.messages.with_raw_response.create(**request())
    with client.messages.with_streaming_response.create(**request(stream=True)) as streamed:
        streamed.read()
    ids = []
    for response in (buffered, streamed):
        assert response.headers["request-id"].startswith("req_")
        assert response.headers["x-request-id"] == response.headers["request-id"]
        ids.append(response.headers["request-id"])
    assert ids[0] != ids[1], "every request gets its own id"


# -- reasoning → thinking -----------------------------------------------------------------------

REASONING_FLAVOURS = [
    ("vllm", "reasoning_content"),
    ("vllm", "reasoning"),  # newer vLLM
    ("ollama", "reasoning"),
    ("llamacpp", "reasoning_content"),
    ("sglang", "reasoning_content"),
]


@pytest.mark.parametrize("flavour,field", REASONING_FLAVOURS)
@pytest.mark.parametrize("thinking", THINKING_MODES, ids=lambda mode: mode["type"])
def test_reasoning_becomes_a_thinking_block_first(client, http, worker, flavour, field, thinking):
    answer = Answer(
        text="The answer is 4.", reasoning="Two plus two makes four.", reasoning_field=field, flavour=flavour
    )
    params = request(max_tokens=2048, thinking=thinking, messages=[{"role": "user", "content": "2+2?"}])
    buffered, streamed = buffered_and_streamed(client, worker, answer, **params)

    assert [block.type for block in buffered.content] == ["thinking", "text"]
    assert buffered.content[0].thinking == "Two plus two makes four."
    assert isinstance(buffered.content[0].signature, str)
    assert buffered.content[1].text == "The answer is 4."
    assert without_id(streamed) == without_id(buffered)

    _, result = stream_raw(http, worker, answer, **params)
    assert [block["type"] for block in result.content] == ["thinking", "text"]
    assert result.content[0]["thinking"] == "Two plus two makes four."
    assert "signature" in result.content[0]


@pytest.mark.parametrize("flavour,field", REASONING_FLAVOURS)
@pytest.mark.parametrize("thinking", [None, {"type": "disabled"}], ids=["absent", "disabled"])
def test_no_thinking_block_when_thinking_is_not_requested(client, http, worker, flavour, field, thinking):
    answer = Answer(
        text="The answer is 4.", reasoning="Two plus two makes four.", reasoning_field=field, flavour=flavour
    )
    params = request() if thinking is None else request(thinking=thinking)
    buffered, streamed = buffered_and_streamed(client, worker, answer, **params)

    for message in (buffered, streamed):
        assert [block.type for block in message.content] == ["text"]
        assert message.content[0].text == "The answer is 4."
    _, result = stream_raw(http, worker, answer, **params)
    assert [block["type"] for block in result.content] == ["text"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_empty_answer_has_no_content_blocks(client, http, worker, flavour):
    answer = Answer(text="", completion_tokens=1, flavour=flavour)
    buffered, streamed = buffered_and_streamed(client, worker, answer, **request())
    assert buffered.content == [] and buffered.stop_reason == "end_turn"
    assert without_id(streamed) == without_id(buffered)
    _, result = stream_raw(http, worker, answer)
    assert result.content == []


# -- stop reasons --------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["vllm", "sglang"])
def test_matched_stop_sequence(client, http, worker, flavour):
    answer = Answer(text="one two three", matched_stop="END", flavour=flavour)
    params = request(stop_sequences=["STOP", "END"])
    buffered, streamed = buffered_and_streamed(client, worker, answer, **params)

    for message in (buffered, streamed):
        assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")
        assert message.content[0].text == "one two three"
    _, result = stream_raw(http, worker, answer, **params)
    assert (result.stop_reason, result.stop_sequence) == ("stop_sequence", "END")


def test_end_of_sequence_token_id_is_end_turn(client, worker):
    # vLLM reports the EOS token id (an int) in stop_reason when no stop string matched.
    answer = Answer(text="done", matched_stop=151645)
    buffered, streamed = buffered_and_streamed(client, worker, answer, **request(stop_sequences=["END"]))
    for message in (buffered, streamed):
        assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_length_is_max_tokens(client, http, worker, flavour):
    answer = Answer(text="this answer was cut", finish_reason="length", flavour=flavour)
    buffered, streamed = buffered_and_streamed(client, worker, answer, **request(max_tokens=5))
    for message in (buffered, streamed):
        assert message.stop_reason == "max_tokens"
        assert message.content[0].text == "this answer was cut"
    _, result = stream_raw(http, worker, answer, max_tokens=5)
    assert result.stop_reason == "max_tokens"
