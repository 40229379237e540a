"""A worker's SSE stream in → the Anthropic events the client receives.

Each vector is checked four ways: the events equal the expected ones; they are well formed;
feeding the same bytes cut at every offset gives the same events; and when the vector has the
buffered answer for the same generation, the SDK's accumulation of the events equals the
buffered translation.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from parley.core.response import AnswerContext, chat_to_message
from parley.core.stream import WorkerSSETranslator
from tests.anthropic_stream import accumulate, assert_well_formed
from tests.vectors.loader import check_expected, context_of, load, vector_params


def translate(sse: bytes, context: AnswerContext, cut: int | None = None) -> list[list]:
    translator = WorkerSSETranslator(context)
    events = []
    pieces = [sse] if cut is None else [sse[i : i + cut] for i in range(0, len(sse), cut)]
    for piece in pieces:
        events += translator.feed(piece)
    events += translator.end()
    return [[name, data] for name, data in orjson.loads(orjson.dumps(events))]


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
    # The vectors include workers that fail and workers that send malformed tool JSON.
    assert_well_formed(events, expect_error=events[-1][0] == "error", tool_input_must_parse=False)


@pytest.mark.parametrize("path", vector_params("streams"))
def test_stream_survives_any_byte_split(path: Path) -> None:
    vector = load(path)
    sse = sse_of(vector)
    whole = translate(sse, context_of(vector))
    for cut in (1, 2, 3, 5, 7, 11, 64):
        assert translate(sse, context_of(vector), cut) == whole, f"cut every {cut} bytes"


@pytest.mark.parametrize("path", [param for param in vector_params("streams") if "buffered" in load(param.values[0])])
def test_stream_accumulates_to_the_buffered_message(path: Path) -> None:
    vector = load(path)
    context = context_of(vector)
    streamed = accumulate([tuple(event) for event in translate(sse_of(vector), context)])
    buffered = chat_to_message(vector["buffered"], context)
    assert streamed == without_nulls(buffered)


def without_nulls(value):
    """The SDK's snapshot leaves out fields that are null (stop_sequence), as to_dict(exclude_none) does."""
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value
