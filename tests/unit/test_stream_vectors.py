"""A worker's SSE stream in → the Anthropic events the client receives.

Each vector is checked four ways: the events equal the expected ones; they are well formed (tool
input always an object, every thinking block signed); feeding the same bytes cut at every offset
gives the same events; and when the vector has the buffered answer for the same generation (every
vector whose stream completes has one), the SDK's accumulation of the events equals the buffered
translation (or, for a stream that fails, the buffered answer fails with the same error).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from parley.core.errors import ParleyError
from parley.core.response import AnswerContext, chat_to_message
from parley.core.stream import WorkerSSETranslator
from tests.anthropic_stream import accumulate, assert_well_formed
from tests.vectors.loader import check_expected, context_of, load, vector_params

GENERATED = "toolu_01<generated>"


def translate(sse: bytes, context: AnswerContext, cut: int | None = None) -> list[list]:
    translator = WorkerSSETranslator(context)
    events = []
    pieces = [sse] if cut is None else [sse[i : i + cut] for i in range(0, len(sse), cut)]
    for piece in pieces:
        events += translator.feed(piece)
    events += translator.end()
    return [[name, generated_id_masked(data)] for name, data in orjson.loads(orjson.dumps(events))]


def is_generated(tool_id: str) -> bool:
    """Tool ids Parley generates (the worker's was not `toolu_…`) are random: compare their shape."""
    return tool_id.startswith("toolu_01") and len(tool_id) == 30


def generated_id_masked(data: dict) -> dict:
    block = data.get("content_block")
    if data["type"] == "content_block_start" and block["type"] == "tool_use" and is_generated(block["id"]):
        block["id"] = GENERATED
    return data


def sse_of(vector: dict) -> bytes:
    return vector["sse"].encode()


@pytest.mark.parametrize("path", vector_params("streams"))
def test_stream_translation(path: Path) -> None:
    vector = load(path)
    check_expected(path, vector, "expected", translate(sse_of(vector), context_of(vector)))


@pytest.mark.parametrize("path", vector_params("streams"))
def test_stream_is_well_formed(path: Path) -> None:
    vector = load(path)
    events = [tuple(event) for event in translate(sse_of(vector), context_of(vector))]
    assert_well_formed(events, expect_error=events[-1][0] == "error", tool_input_must_parse=True, signed_thinking=True)


@pytest.mark.parametrize("path", vector_params("streams"))
def test_stream_survives_any_byte_split(path: Path) -> None:
    vector = load(path)
    sse = sse_of(vector)
    whole = translate(sse, context_of(vector))
    for cut in (1, 2, 3, 5, 7, 11, 64):
        assert translate(sse, context_of(vector), cut) == whole, f"cut every {cut} bytes"


@pytest.mark.parametrize("path", vector_params("streams"))
def test_every_complete_stream_has_its_buffered_twin(path: Path) -> None:
    vector = load(path)
    if translate(sse_of(vector), context_of(vector))[-1][0] == "message_stop":
        assert "buffered" in vector, "a complete stream needs its buffered twin"


@pytest.mark.parametrize("path", [param for param in vector_params("streams") if "buffered" in load(param.values[0])])
def test_stream_accumulates_to_the_buffered_message(path: Path) -> None:
    vector = load(path)
    context = context_of(vector)
    events = [tuple(event) for event in translate(sse_of(vector), context)]
    if events[-1][0] == "error":  # the worker broke off: the buffered answer fails alike
        with pytest.raises(ParleyError) as raised:
            chat_to_message(vector["buffered"], context)
        assert events[-1][1]["error"] == {"type": raised.value.type, "message": raised.value.message}
        return
    streamed = ids_masked(accumulate(events))
    buffered = ids_masked(without_nulls(chat_to_message(vector["buffered"], context)))
    if vector.get("buffered_text_first"):
        # An OpenAI message has no order between its content and its tool calls: buffered, the
        # text comes first; streamed, text that came after a tool call comes after its block.
        assert streamed["content"] != buffered["content"]
        streamed["content"].sort(key=lambda block: block["type"] != "text")
    assert streamed == buffered


def ids_masked(message: dict) -> dict:
    for block in message["content"]:
        if block["type"] == "tool_use" and is_generated(block["id"]):
            block["id"] = GENERATED
    return message


def without_nulls(value, key: str | None = None):
    """The SDK's snapshot leaves out fields that are null (stop_sequence), as to_dict(exclude_none)
    does; a tool's input is kept whole (`accumulate` keeps it so: its nulls are values)."""
    if key == "input":
        return value
    if isinstance(value, dict):
        return {name: without_nulls(item, name) for name, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value
