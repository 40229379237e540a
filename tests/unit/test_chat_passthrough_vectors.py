"""A worker's stream relayed to an OpenAI client (POST /v1/chat/completions): what reaches the
client is chunks it can read, or one OpenAI error chunk, then [DONE]."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from parley.core.chat_passthrough import ChatStreamRelay
from tests.vectors.loader import check_expected, load, vector_params


def relayed(sse: bytes, cut: int | None = None) -> list:
    relay = ChatStreamRelay("gpt-client-model", prompt_estimate=10, client_wants_usage=False)
    pieces = [sse] if cut is None else [sse[i : i + cut] for i in range(0, len(sse), cut)]
    out = b"".join(relay.feed(piece) for piece in pieces) + relay.end()
    payloads = [line[6:] for line in out.decode().split("\n") if line.startswith("data: ")]
    return [payload if payload == "[DONE]" else orjson.loads(payload) for payload in payloads]


@pytest.mark.parametrize("path", vector_params("chat_passthrough"))
def test_chat_stream_relay(path: Path) -> None:
    vector = load(path)
    chunks = relayed(vector["sse"].encode())
    check_expected(path, vector, "expected", chunks)
    assert chunks[-1] == "[DONE]" and chunks.count("[DONE]") == 1
    errors = [chunk for chunk in chunks[:-1] if "error" in chunk]
    assert errors == [] or chunks[-2] is errors[0], "an error chunk is the last before [DONE]"
    for chunk in chunks[:-1]:
        for choice in chunk.get("choices", ()):
            for call in choice["delta"].get("tool_calls", ()):
                assert isinstance(call["function"].get("arguments", ""), str)
    assert relayed(vector["sse"].encode(), cut=7) == chunks, "the same chunks whatever the byte split"
