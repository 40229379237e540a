"""Retrieval from knowledge bases through the official SDKs (docs/rag.md): a knowledge base built
with `parley kb` from real files (tests/vectors/rag: a markdown handbook, a text file, a PDF, each
holding facts found nowhere else) answers a question only they answer: the fake worker records
the context Parley put at the end of the last user message; the injected tokens are metered;
failures are reported and answered (or failed) as the policy says.

Each test gets an account of its own: knowledge bases and policies are per account.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any, Iterator

import anthropic
import httpx
import openai
import pytest

from parley.cli import main
from parley.io.routes import Route, Worker
from tests.anthropic_stream import assert_well_formed
from tests.fakeworker import Answer, FakeWorker
from tests.fakeworker.scripts import WorkerError

from .conftest import SAFETY_NET
from .helpers import MODEL, WORKER_MODEL, as_int, last_worker_body, parse_sse, wait_for_record

FILES = Path(__file__).parents[1] / "vectors" / "rag"
QUESTION = "What is the name of the office parrot?"
ANSWER_ONLY_IN_THE_FILES = "Captain Widget"


class Team:
    """An account with a knowledge base built by `parley kb` from the test files, and its clients."""

    def __init__(self, parley: Any, monkeypatch: pytest.MonkeyPatch, dynamodb: Any) -> None:
        self.parley = parley
        self.account = f"team-{secrets.token_hex(4)}"
        self.key, _ = parley.services.keys.create(account=self.account, name="team")
        self.client = anthropic.Anthropic(base_url=parley.url, api_key=self.key, max_retries=0, timeout=30)
        self.http = httpx.Client(
            base_url=parley.url, headers={"x-api-key": self.key, "anthropic-version": "2023-06-01"}, timeout=30
        )
        settings = parley.services.settings
        monkeypatch.setenv("PARLEY_KNOWLEDGE_BASES_URI", settings.knowledge_bases_uri)
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb.meta.endpoint_url)
        monkeypatch.setenv("PARLEY_ROUTES_TABLE", settings.routes_table)

    def kb(self, *args: str) -> None:
        assert main(["kb", *args, "--account", self.account]) == 0

    def build(self, name: str = "handbook", *create: str) -> None:
        self.kb("create", name, *create)
        self.kb("add", name, *(str(FILES / file) for file in ("handbook.md", "shipping.txt", "report.pdf")))

    def policy(self, **rag: Any) -> None:
        self.parley.services.policies.put(self.account, {"rag": {"knowledge_base": "handbook", **rag}})


@pytest.fixture
def team(parley: Any, monkeypatch: pytest.MonkeyPatch, dynamodb: Any) -> Iterator[Team]:
    made = Team(parley, monkeypatch, dynamodb)
    yield made
    made.http.close()


def _last_user_text(worker: FakeWorker) -> str:
    content = last_worker_body(worker)["messages"][-1]["content"]
    return content if isinstance(content, str) else "\n".join(part.get("text", "") for part in content)


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_a_question_only_the_files_answer_gets_their_context(team, worker, stream):
    team.build()
    team.policy(top_k=2)
    worker.enqueue(Answer(text=f"He is {ANSWER_ONLY_IN_THE_FILES}."))
    params = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": QUESTION}]}
    response = team.http.post("/v1/messages", json={**params, "stream": stream})
    assert response.status_code == 200 and response.headers["parley-rag"] == "chunks=2"
    if stream:
        events = [(event.event or "", json.loads(event.data)) for event in parse_sse(response.content)]
        text = assert_well_formed(events).text
    else:
        text = response.json()["content"][0]["text"]
    assert text == f"He is {ANSWER_ONLY_IN_THE_FILES}."
    sent = _last_user_text(worker)
    assert sent.startswith(QUESTION), "the question must come first, as the client wrote it"
    assert ANSWER_ONLY_IN_THE_FILES in sent and '<search_result source="handbook.md" title="Office animals">' in sent
    assert all(message["role"] != "system" for message in last_worker_body(worker)["messages"])


def test_each_file_is_found_for_its_own_question(team, worker):
    team.build()
    team.policy(top_k=1)
    for question, source, fact in [
        ("When do parcels leave the warehouse?", "shipping.txt", "6 am"),
        ("How much did quarterly revenue grow?", "report.pdf", "12 percent"),
        ("How many days of paid leave do staff get?", "handbook.md", "27 days"),
    ]:
        worker.enqueue(Answer(text="ok"))
        team.client.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": question}])
        sent = _last_user_text(worker)
        assert f'source="{source}"' in sent and fact in sent, (question, sent)


def test_the_context_goes_to_a_native_worker_as_search_result_blocks(team, worker, parley):
    native = f"native-{secrets.token_hex(3)}"
    parley.services.routes.put(
        Route(
            model=native,
            workers=(Worker(base_url=worker.base_url, model=WORKER_MODEL, api="anthropic"),),
            timeouts=SAFETY_NET,
        )
    )
    team.build()
    team.policy(top_k=2)
    worker.enqueue(Answer(text="Captain Widget."))
    team.client.messages.create(model=native, max_tokens=50, messages=[{"role": "user", "content": QUESTION}])
    content = last_worker_body(worker)["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": QUESTION}
    results = [block for block in content if block["type"] == "search_result"]
    assert len(results) == 2 and all(block["citations"] == {"enabled": True} for block in results)
    assert any(ANSWER_ONLY_IN_THE_FILES in block["content"][0]["text"] for block in results)


def test_a_turn_of_only_tool_results_retrieves_nothing(team, worker):
    team.build()
    team.policy()
    worker.enqueue(Answer(text="done"))
    messages = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "look", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "nothing"}]},
    ]
    raw = team.client.messages.with_raw_response.create(model=MODEL, max_tokens=50, messages=messages)
    assert raw.headers["parley-rag"] == "none"
    assert "search_result" not in json.dumps(last_worker_body(worker))


def test_the_injected_tokens_are_metered(team, worker, parley):
    """The worker's streams carry no usage here, so what is metered is its tokenizer's count
    (POST /tokenize) of what Parley sent it."""
    team.build()
    body = {"model": MODEL, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
    worker.enqueue(Answer(text="ok", usage="none"), Answer(text="ok", usage="none"))
    plain = team.http.post("/v1/messages", json=body)
    team.policy(top_k=3)
    with_context = team.http.post("/v1/messages", json=body)
    counted = team.http.post("/v1/messages/count_tokens", json={"model": MODEL, "messages": body["messages"]})
    plain_record = wait_for_record(parley, plain.headers["request-id"])
    record = wait_for_record(parley, with_context.headers["request-id"])
    retrieved = as_int(record["retrieved_tokens"])
    assert retrieved > 50
    assert as_int(record["input_tokens"]) - as_int(plain_record["input_tokens"]) >= retrieved
    assert counted.json()["input_tokens"] == as_int(record["input_tokens"]), "count_tokens counts the context too"


def test_a_missing_knowledge_base_answers_without_it_or_fails_as_the_policy_says(team, worker):
    team.policy()  # no knowledge base was built
    worker.enqueue(Answer(text="answered anyway"))
    raw = team.client.messages.with_raw_response.create(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": QUESTION}]
    )
    assert raw.headers["parley-rag"] == "error" and raw.parse().content[0].text == "answered anyway"
    assert "search_result" not in json.dumps(last_worker_body(worker))

    team.policy(on_error="fail")
    with pytest.raises(anthropic.InternalServerError) as failed:
        team.client.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": QUESTION}])
    assert failed.value.response.headers["parley-rag"] == "error"
    assert "knowledge base handbook" in failed.value.message


@pytest.fixture
def embedding_route(parley, worker) -> str:
    model = f"embed-{secrets.token_hex(3)}"
    parley.services.routes.put(
        Route(model=model, workers=(Worker(base_url=worker.base_url, model="fake-embedder"),), timeouts=SAFETY_NET)
    )
    return model


def test_an_embedding_route_and_a_reranker(team, worker, embedding_route):
    team.build("handbook", "--embedding-model", embedding_route)
    team.policy(top_k=1, rerank_model=embedding_route)
    embedded = len(worker.retrieval_requests)
    worker.enqueue(Answer(text="ok"))
    team.client.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": QUESTION}])
    asked = [request["path"] for request in worker.retrieval_requests[embedded:]]
    assert asked == ["/v1/embeddings", "/v1/rerank"]
    assert ANSWER_ONLY_IN_THE_FILES in _last_user_text(worker)


def test_an_embedding_worker_failure_is_reported_and_answered(team, worker, embedding_route):
    team.build("handbook", "--embedding-model", embedding_route)
    team.policy()
    worker.enqueue_embeddings(WorkerError(500, {"error": {"message": "embedder down"}}))
    worker.enqueue_embeddings(WorkerError(500, {"error": {"message": "embedder down"}}))
    worker.enqueue(Answer(text="without context"))
    raw = team.client.messages.with_raw_response.create(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": QUESTION}]
    )
    assert raw.headers["parley-rag"] == "error" and raw.parse().content[0].text == "without context"


def test_personal_data_in_the_documents_is_masked_before_the_worker(team, worker, parley, monkeypatch, tmp_path):
    monkeypatch.setenv("PARLEY_PII_KEY", secrets.token_hex(32))
    contact = tmp_path / "contacts.md"
    contact.write_text("# Contacts\n\nThe office parrot's vet is reached at vet.widget@example.org.\n")
    team.kb("create", "handbook")
    team.kb("add", "handbook", str(contact))
    parley.services.policies.put(team.account, {"pii": {"mode": "mask"}, "rag": {"knowledge_base": "handbook"}})
    worker.enqueue(Answer(text="ok"))
    team.client.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": QUESTION}])
    sent = _last_user_text(worker)
    assert "vet.widget@example.org" not in sent and "<EMAIL_" in sent


def test_chat_completions_get_the_context_as_delimited_text(team, worker, parley):
    team.build()
    team.policy(top_k=1)
    worker.enqueue(Answer(text="Captain Widget"))
    chat = openai.OpenAI(base_url=parley.url + "/v1", api_key=team.key, max_retries=0, timeout=30)
    chat.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}])
    sent = last_worker_body(worker)["messages"][-1]["content"]
    assert sent.startswith(QUESTION + "\n\n<search_result ") and ANSWER_ONLY_IN_THE_FILES in sent


def test_re_adding_a_changed_file_replaces_its_chunks(team, worker, tmp_path):
    team.kb("create", "handbook")
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n\nThe office parrot is named Sir Squawk.\n")
    team.kb("add", "handbook", str(notes))
    notes.write_text("# Notes\n\nThe office parrot is named Lady Feathers.\n")
    team.kb("add", "handbook", str(notes))
    team.policy(top_k=5)
    worker.enqueue(Answer(text="ok"))
    team.client.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": QUESTION}])
    sent = _last_user_text(worker)
    assert "Lady Feathers" in sent and "Sir Squawk" not in sent and sent.count("<search_result ") == 1


def test_passages_the_policy_would_refuse_are_left_out(team, worker, parley, monkeypatch, tmp_path):
    """Under `pii: block` a passage holding personal data, and under a deny rule a passage holding
    the phrase, never reach the worker; the question is still answered with the rest."""
    monkeypatch.setenv("PARLEY_PII_KEY", secrets.token_hex(32))
    keeper = tmp_path / "keeper.md"
    keeper.write_text("# Parrot keeper\n\nThe office parrot's keeper is reached at keeper.jones@example.org.\n")
    codename = tmp_path / "codename.md"
    codename.write_text("# Codename\n\nThe office parrot project is called project bluebird internally.\n")
    team.build()
    team.kb("add", "handbook", str(keeper), str(codename))
    deny = {"deny": [{"name": "codenames", "phrases": ["project bluebird"]}]}
    parley.services.policies.put(
        team.account, {"pii": {"mode": "block"}, "content": deny, "rag": {"knowledge_base": "handbook", "top_k": 5}}
    )
    worker.enqueue(Answer(text="Captain Widget"))
    raw = team.client.messages.with_raw_response.create(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "Who is the office parrot's keeper?"}]
    )
    assert raw.parse().content[0].text == "Captain Widget"
    sent = _last_user_text(worker)
    assert "keeper.jones@example.org" not in sent and "bluebird" not in sent
    assert ANSWER_ONLY_IN_THE_FILES in sent, "the other passages still go"
    assert raw.headers["parley-rag"] == f"chunks={sent.count('<search_result ')}"
