"""A worker whose chat template refuses a system message anywhere but first (as Mistral's and
Gemma's do), against Claude Code's captured first request (its reminders are a system message
after the first user turn): refused as sent, answered once Parley folds them (docs/routing.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from parley.io.routes import Route
from parley.settings import Settings
from tests.anthropic_stream import assert_well_formed
from tests.integration.helpers import parse_sse
from tests.stack import RunningParley, parley_stack, tables_named

from .conftest import PATIENT, PING_SECONDS, vllm_workers
from .servers import VllmServer

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "requests"
LEARNING, KEPT, FOLDED = "claude-strict-learning", "claude-strict-kept", "claude-strict-folded"
REFUSAL = "Conversation roles must alternate"


@pytest.fixture(scope="module")
def parley(dynamodb: object, vllm_strict: VllmServer) -> Iterator[RunningParley]:
    learning, _ = vllm_workers(vllm_strict)
    kept, _ = vllm_workers(vllm_strict, fold_system=False)
    folded, _ = vllm_workers(vllm_strict, fold_system=True)
    routes = [
        Route(model=model, workers=(worker,), timeouts=PATIENT)
        for model, worker in ((LEARNING, learning), (KEPT, kept), (FOLDED, folded))
    ]
    settings = Settings(**tables_named("real-template"), ping_seconds=PING_SECONDS)
    with parley_stack(dynamodb, settings, routes) as running:
        yield running


@pytest.fixture
def http(parley: RunningParley) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=parley.url, headers={"x-api-key": parley.key}, timeout=600) as client:
        yield client


def claude_codes_first_request(model: str, **overrides: object) -> dict:
    request = json.loads((VECTORS / "claude_code_first_request.json").read_text())["request"]
    assert [message["role"] for message in request["messages"]] == ["user", "system"]
    return {**request, "model": model, "max_tokens": 8, **overrides}


def refusals(vllm: VllmServer) -> float:
    """vLLM's count of 4xx answers to /v1/chat/completions."""
    for line in httpx.get(vllm.root_url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("http_requests_total{") and 'handler="/v1/chat/completions"' in line and '"4xx"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_template_refuses_claude_codes_request_as_sent(http):
    answer = http.post("/v1/messages", json=claude_codes_first_request(KEPT, stream=False))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert REFUSAL in answer.json()["error"]["message"]


def test_parley_learns_from_the_first_refusal_and_folds_from_then_on(http, vllm_strict):
    before = refusals(vllm_strict)
    first = http.post("/v1/messages", json=claude_codes_first_request(LEARNING))
    assert first.status_code == 200, first.text
    assert_well_formed([(item.event or "", item.json()) for item in parse_sse(first.content)])
    assert refusals(vllm_strict) == before + 1, "refused once, as sent"
    again = http.post("/v1/messages", json=claude_codes_first_request(LEARNING, stream=False))
    assert again.status_code == 200, again.text
    assert again.json()["usage"]["input_tokens"] > 1_000  # the strict template renders no tools
    assert refusals(vllm_strict) == before + 1, "learned: folded at once"


def test_a_worker_marked_fold_system_is_never_refused_and_counts_with_its_tokenizer(http, vllm_strict):
    before = refusals(vllm_strict)
    answer = http.post("/v1/messages", json=claude_codes_first_request(FOLDED, stream=False))
    assert answer.status_code == 200, answer.text
    counted = http.post(
        "/v1/messages/count_tokens",
        json={
            key: value
            for key, value in claude_codes_first_request(FOLDED).items()
            if key in ("model", "messages", "system", "tools")
        },
    )
    assert counted.json()["input_tokens"] == answer.json()["usage"]["input_tokens"], "vLLM's count of the folded prompt"
    assert refusals(vllm_strict) == before
