"""count_tokens goes through admission: a key restricted to some models reaches no other model
through it (nor that model's worker's /tokenize), and the key's and the account's requests per
minute limit it, in windows of its own (limited, not billed: no usage record)."""

from __future__ import annotations

import secrets
from typing import Any, Iterator

import pytest

from parley.core.metering import Limits
from parley.io.accounts import AccountRecord
from parley.io.routes import Route, Worker
from tests.fakeworker import FakeWorker

from .helpers import HELLO, MODEL, WORKER_MODEL, assert_error, request

TOKENIZING_MODEL = "counting-model"
COUNT_PATH = "/v1/messages/count_tokens"


@pytest.fixture
def tokenizing(parley: Any, worker: FakeWorker) -> Iterator[str]:
    """A route whose worker tokenizes, only for the tests that ask for it."""
    worker_record = Worker(base_url=worker.base_url, model=WORKER_MODEL, tokenize=True)
    parley.services.routes.put(Route(model=TOKENIZING_MODEL, workers=(worker_record,)))
    yield TOKENIZING_MODEL
    parley.services.routes.remove(TOKENIZING_MODEL)


def new_key(parley: Any, account: str | None = None, **kwargs: Any) -> str:
    key, _ = parley.services.keys.create(account=account or f"count-{secrets.token_hex(4)}", name="t", **kwargs)
    return key


def count(model: str) -> dict[str, Any]:
    return {"model": model, "messages": HELLO}


def test_an_allowed_key_counts_with_the_workers_tokenizer(parley, worker, raw, tokenizing, monkeypatch):
    monkeypatch.setattr(worker, "token_count", 4321)  # the session's worker: restored afterwards
    response = raw(new_key(parley, allowed_models=(tokenizing,))).post(COUNT_PATH, json=count(tokenizing))
    assert response.status_code == 200, response.text
    assert response.json() == {"input_tokens": 4321}
    assert [seen["path"] for seen in worker.requests] == ["/tokenize"]


def test_a_key_restricted_to_other_models_gets_403_and_reaches_no_tokenizer(parley, worker, raw, tokenizing):
    client = raw(new_key(parley, allowed_models=("other-model",)))
    refused = assert_error(client.post(COUNT_PATH, json=count(tokenizing)), 403, "permission_error")
    assert refused == f"This API key is not allowed to use the model {tokenizing}."
    assert not worker.requests, "the worker was called for a model the key may not use"
    as_messages = assert_error(client.post("/v1/messages", json=request(model=tokenizing)), 403, "permission_error")
    assert refused == as_messages


def test_a_keys_requests_per_minute_limit_count_tokens_in_a_window_of_its_own(parley, raw, one_minute):
    client = raw(new_key(parley, limits=Limits(requests_per_minute=3)))
    remaining = []
    for _ in range(3):
        response = client.post(COUNT_PATH, json=count(MODEL))
        assert response.status_code == 200, response.text
        remaining.append(response.headers["anthropic-ratelimit-requests-remaining"])
    assert remaining == ["2", "1", "0"]
    refused = client.post(COUNT_PATH, json=count(MODEL))
    assert "rate limit of 3 requests per minute" in assert_error(refused, 429, "rate_limit_error")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert client.post("/v1/messages", json=request()).status_code == 200, "messages keep their own window"


def test_an_accounts_requests_per_minute_limit_count_tokens_across_its_keys(parley, raw, one_minute):
    account = f"count-{secrets.token_hex(4)}"
    parley.services.accounts.put(AccountRecord(account, Limits(requests_per_minute=2)))
    first, second = raw(new_key(parley, account)), raw(new_key(parley, account))
    assert first.post(COUNT_PATH, json=count(MODEL)).status_code == 200
    assert second.post(COUNT_PATH, json=count(MODEL)).status_code == 200
    refused = first.post(COUNT_PATH, json=count(MODEL))
    assert "this account's rate limit" in assert_error(refused, 429, "rate_limit_error")


def test_count_tokens_is_not_billed(parley, raw, one_minute):
    client = raw(new_key(parley, limits=Limits(requests_per_minute=5, tokens_per_minute=1)))
    for _ in range(2):  # a tokens-per-minute limit does not apply: counting uses no tokens
        response = client.post(COUNT_PATH, json=count(MODEL))
        assert response.status_code == 200, response.text
    assert parley.services.metered(), "the metering loop did not catch up"
    assert parley.services.usage.record_of(response.headers["request-id"]) is None
