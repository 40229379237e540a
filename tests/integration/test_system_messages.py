"""Claude Code sends its reminders as system messages after the first user turn; Mistral's and
Gemma's chat templates refuse those (vLLM answers 400 "Conversation roles must alternate …").
A worker whose `fold_system` is not set teaches Parley on its first refusal: the request is tried
again with them folded into the neighbouring user turn, and this worker's prompts are folded from
then on. `fold_system` true folds from the first request, false never (the client gets the 400).
"""

from __future__ import annotations

import secrets
from typing import Any, Iterator

import pytest

from parley.io.routes import Route, Worker
from tests.anthropic_stream import assert_well_formed
from tests.fakeworker import Answer, FakeWorker, WorkerError
from tests.fakeworker.server import TEMPLATE_REFUSAL

from .helpers import assert_error, parse_sse, request

REMINDED = [
    {"role": "user", "content": "Hello"},
    {"role": "system", "content": "<system-reminder>today is Tuesday</system-reminder>"},
]
FOLDED = [{"role": "user", "content": "Hello\n<system-reminder>today is Tuesday</system-reminder>"}]
AS_SENT = [{"role": "user", "content": "Hello"}, REMINDED[1]]


@pytest.fixture
def strict(worker: FakeWorker, monkeypatch: pytest.MonkeyPatch) -> FakeWorker:
    monkeypatch.setattr(worker, "strict_template", True)
    return worker


@pytest.fixture
def route_to(parley: Any, worker: FakeWorker) -> Iterator[Any]:
    """`route_to(fold_system=…)`: a route of its own to the fake worker, under a worker model name
    of its own (what Parley learns is per worker); its model name."""
    added: list[str] = []

    def add(**options: Any) -> str:
        name = f"fold-{secrets.token_hex(4)}"
        worker_record = Worker(base_url=worker.base_url, model=name, **options)
        parley.services.routes.put(Route(model=name, workers=(worker_record,)))
        added.append(name)
        return name

    yield add
    for name in added:
        parley.services.routes.remove(name)


def chat_messages(worker: FakeWorker) -> list[list[dict[str, Any]]]:
    return [seen["body"]["messages"] for seen in worker.requests if seen["path"] == "/v1/chat/completions"]


def test_the_first_refusal_teaches_parley_to_fold_and_the_next_request_is_folded_at_once(http, strict, route_to):
    model = route_to()
    answer = http.post("/v1/messages", json=request(model=model, messages=REMINDED))
    assert answer.status_code == 200, answer.text
    assert answer.json()["content"] == [{"type": "text", "text": "ok"}]
    assert chat_messages(strict) == [AS_SENT, FOLDED], "refused as sent, then answered folded"
    strict.reset()
    strict.strict_template = True
    again = http.post("/v1/messages", json=request(model=model, messages=REMINDED, stream=True))
    assert again.status_code == 200
    assert_well_formed([(item.event or "", item.json()) for item in parse_sse(again.content)])
    assert chat_messages(strict) == [FOLDED], "learned: no second refusal"


def test_a_streamed_first_request_is_folded_after_the_refusal_too(http, strict, route_to):
    answer = http.post("/v1/messages", json=request(model=route_to(), messages=REMINDED, stream=True))
    assert answer.status_code == 200
    result = assert_well_formed([(item.event or "", item.json()) for item in parse_sse(answer.content)])
    assert result.text == "ok"
    assert chat_messages(strict) == [AS_SENT, FOLDED]


def test_fold_system_true_folds_the_first_request_and_false_gives_the_client_the_workers_400(http, strict, route_to):
    folded = http.post("/v1/messages", json=request(model=route_to(fold_system=True), messages=REMINDED))
    assert folded.status_code == 200, folded.text
    assert chat_messages(strict) == [FOLDED]
    strict.reset()
    strict.strict_template = True
    model = route_to(fold_system=False)
    for _ in range(2):
        message = assert_error(
            http.post("/v1/messages", json=request(model=model, messages=REMINDED)), 400, "invalid_request_error"
        )
        assert TEMPLATE_REFUSAL in message
    assert chat_messages(strict) == [AS_SENT, AS_SENT], "never folded, never tried twice"


def test_a_lenient_worker_gets_the_system_messages_where_the_client_put_them(http, worker, route_to):
    answer = http.post("/v1/messages", json=request(model=route_to(), messages=REMINDED))
    assert answer.status_code == 200
    assert chat_messages(worker) == [AS_SENT]


def test_a_400_about_something_else_is_not_tried_again(http, worker, route_to):
    worker.enqueue(
        WorkerError(400, {"error": {"message": "This model's maximum context length is 4096 tokens.", "code": 400}})
    )
    model = route_to()
    message = assert_error(
        http.post("/v1/messages", json=request(model=model, messages=REMINDED)), 400, "invalid_request_error"
    )
    assert "maximum context length" in message
    assert chat_messages(worker) == [AS_SENT]
    worker.enqueue(Answer(text="fine"))
    assert http.post("/v1/messages", json=request(model=model, messages=REMINDED)).status_code == 200
    assert chat_messages(worker)[-1] == AS_SENT, "nothing was learned from it"


def test_a_refusal_the_folded_prompt_gets_too_teaches_nothing(http, strict, route_to):
    strict.enqueue(WorkerError(400, {"error": {"message": "System role not supported", "code": 400}}))
    model = route_to()
    # Refused as sent (the template), then refused folded (the script): the client gets the second.
    message = assert_error(
        http.post("/v1/messages", json=request(model=model, messages=REMINDED)), 400, "invalid_request_error"
    )
    assert "System role not supported" in message
    assert http.post("/v1/messages", json=request(model=model, messages=REMINDED)).status_code == 200
    assert chat_messages(strict) == [AS_SENT, FOLDED, AS_SENT, FOLDED], "still learning"


def test_count_tokens_counts_the_folded_prompt_once_the_worker_folds(http, strict, route_to, monkeypatch):
    monkeypatch.setattr(strict, "token_count", 777)
    model = route_to(fold_system=True, tokenize=True)
    counted = http.post("/v1/messages/count_tokens", json={"model": model, "messages": REMINDED})
    assert counted.json() == {"input_tokens": 777}, "the worker's count, not an estimate after a refusal"
    tokenized = [seen["body"]["messages"] for seen in strict.requests if seen["path"] == "/tokenize"]
    assert tokenized == [FOLDED]


def test_llama_cpps_500_refusal_teaches_parley_too(http, worker, route_to):
    # llama.cpp's server answers every failure 500, its template's refusal included.
    refusal = {"message": TEMPLATE_REFUSAL, "type": "internal_server_error", "param": None, "code": None}
    worker.enqueue(WorkerError(500, {"error": refusal}))
    model = route_to()
    assert http.post("/v1/messages", json=request(model=model, messages=REMINDED)).status_code == 200
    assert http.post("/v1/messages", json=request(model=model, messages=REMINDED)).status_code == 200
    assert chat_messages(worker) == [AS_SENT, FOLDED, FOLDED]
