"""The SSE wire: event framing, pings while the worker is silent, bytes split anywhere, disconnects."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.fakeworker import Answer, Garbage, Hang

from .helpers import PING_SECONDS, request, sdk_stream_final, stream_raw

PING_BYTES = b'event: ping\ndata: {"type": "ping"}\n\n'
SILENCE = 3 * PING_SECONDS


def test_events_are_framed_as_anthropic_sends_them(http, worker):
    raw, result = stream_raw(http, worker, Answer(text="framed as Anthropic frames it"))
    headers = raw.response.headers
    assert headers["cache-control"] == "no-cache"
    assert headers["request-id"].startswith("req_") and headers["x-request-id"] == headers["request-id"]
    body = raw.response.content
    assert body.endswith(b"\n\n")
    for frame in body[:-2].split(b"\n\n"):
        match = re.fullmatch(rb"event: ([a-z_]+)\ndata: (\{.*\})", frame)
        assert match, f"malformed frame {frame!r}"
        assert json.loads(match.group(2))["type"] == match.group(1).decode()
    assert result.text == "framed as Anthropic frames it"


def test_pings_while_the_worker_is_silent_before_its_first_byte(client, http, worker):
    answer = Answer(text="worth the wait")
    worker.enqueue(Hang(SILENCE, then=answer))
    assert sdk_stream_final(client, **request()).content[0].text == "worth the wait"

    raw, result = stream_raw(http, worker, Hang(SILENCE, then=answer))
    assert result.text == "worth the wait"
    assert result.pings >= 1, f"no ping in {SILENCE:.1f}s of worker silence (ping interval {PING_SECONDS}s)"
    assert PING_BYTES in raw.response.content


def test_pings_while_the_worker_is_silent_mid_answer(client, http, worker):
    answer = Answer(text="steady", chunk_delay=2 * PING_SECONDS)
    worker.enqueue(answer)
    assert sdk_stream_final(client, **request()).content[0].text == "steady"

    raw, result = stream_raw(http, worker, answer)
    assert result.text == "steady"
    assert result.pings >= 1
    assert PING_BYTES in raw.response.content


@pytest.mark.parametrize("flavour", ["vllm", "ollama", "llamacpp", "sglang"])
def test_worker_bytes_split_anywhere_even_inside_a_character(client, http, worker, flavour):
    text = "Grüße aus Zürich — ☕ und 日本語のテキスト, emoji 🚀 too."
    answer = Answer(text=text, reasoning="Überlegung ✓", split_bytes=1, flavour=flavour)
    _, result = stream_raw(http, worker, answer, max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024})
    assert [block["type"] for block in result.content] == ["thinking", "text"]
    assert result.content[0]["thinking"] == "Überlegung ✓"
    assert result.text == text

    worker.enqueue(answer)
    assert sdk_stream_final(client, **request()).content[-1].text == text


@pytest.mark.parametrize("line", [": keep-alive", ": OPENROUTER PROCESSING", "event: heartbeat"])
def test_worker_comments_and_other_fields_are_ignored(client, http, worker, line):
    script = Garbage(Answer(text="still fine after the noise"), at_event=2, line=line)
    _, result = stream_raw(http, worker, script)
    assert result.text == "still fine after the noise" and result.stop_reason == "end_turn"


@pytest.mark.parametrize("flavour", ["vllm", "ollama"])
def test_worker_stream_without_done_marker_still_completes(client, http, worker, flavour):
    answer = Answer(text="no [DONE] at the end", done=False, flavour=flavour)
    _, result = stream_raw(http, worker, answer)
    assert result.text == "no [DONE] at the end" and result.stop_reason == "end_turn"
    worker.enqueue(answer)
    assert sdk_stream_final(client, **request()).content[0].text == "no [DONE] at the end"


def test_client_disconnect_closes_the_worker_stream(parley, worker):
    worker.enqueue(Answer(text=" ".join(["word"] * 200), chunk_delay=0.05))
    with httpx.Client(base_url=parley.url, headers={"x-api-key": parley.key}, timeout=10) as raw:
        with raw.stream("POST", "/v1/messages", json=request(stream=True)) as response:
            assert response.status_code == 200
            assert next(response.iter_bytes()).startswith(b"event: message_start\n")
    assert worker.wait_for_disconnects(1, timeout=5), "the worker kept generating for a client that left"


def test_concurrent_streams_all_complete(client, worker):
    answer = Answer(text="many at once, each whole", chunk_delay=0.05)
    worker.enqueue(*[answer] * 8)
    with ThreadPoolExecutor(max_workers=8) as pool:
        finals = list(pool.map(lambda _: sdk_stream_final(client, **request()), range(8)))
    assert [final.content[0].text for final in finals] == ["many at once, each whole"] * 8
    assert len({final.id for final in finals}) == 8
