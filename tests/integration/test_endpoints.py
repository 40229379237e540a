"""The other routes: beta and alias message paths, count_tokens, models, and the root and health checks."""

from __future__ import annotations

from datetime import datetime

import anthropic
import pytest

from tests.fakeworker import Answer

from .helpers import (
    ALIAS,
    DOWN_MODEL,
    HELLO,
    MODEL,
    WEATHER_TOOL,
    assert_error,
    request,
    stream_raw,
)


def test_beta_messages_path(client, worker):
    # The SDK's beta namespace (and Claude Code) post to /v1/messages?beta=true.
    worker.enqueue(Answer(text="from the beta path"))
    message = client.beta.messages.create(**request(), betas=["interleaved-thinking-2025-05-14"])
    assert message.content[0].text == "from the beta path"
    assert message.model == MODEL and message.stop_reason == "end_turn"


def test_anthropic_messages_alias_path(http, worker):
    worker.enqueue(Answer(text="from the alias path"))
    response = http.post("/v1/anthropic/messages", json=request())
    assert response.status_code == 200
    assert response.json()["content"] == [{"type": "text", "text": "from the alias path"}]

    _, result = stream_raw(http, worker, Answer(text="streamed from the alias path"), path="/v1/anthropic/messages")
    assert result.text == "streamed from the alias path"


def test_count_tokens_is_the_workers_own_count(client, worker):
    # The fake worker has vLLM's POST /tokenize, so Parley asks it (the estimate, for workers
    # without one, grows with the prompt: test_worker_boundary.py).
    def count(**params) -> int:
        return client.messages.count_tokens(**{"model": MODEL, "messages": HELLO, **params}).input_tokens

    worker.token_count = 321
    try:
        assert count() == 321
        assert count(tools=[WEATHER_TOOL]) == 321
        assert client.messages.count_tokens(model=ALIAS, messages=HELLO).input_tokens == 321
    finally:
        worker.token_count = 1234
    assert {seen["path"] for seen in worker.requests} == {"/tokenize"}, "counting tokens must not run the model"
    assert worker.requests[1]["body"]["tools"][0]["function"]["name"] == WEATHER_TOOL["name"]


def test_count_tokens_for_an_unknown_model_is_not_found(client):
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.count_tokens(model="gpt-4o", messages=HELLO)
    assert_error(caught.value.response, 404, "not_found_error")


def test_models_list(client, http):
    models = list(client.models.list())
    assert {model.id for model in models} == {MODEL, DOWN_MODEL}
    for model in models:
        assert model.type == "model"
        assert isinstance(model.created_at, datetime)
        assert model.display_name

    page = http.get("/v1/models").json()
    assert set(page) >= {"data", "has_more", "first_id", "last_id"}
    assert page["has_more"] is False
    assert (page["first_id"], page["last_id"]) == (page["data"][0]["id"], page["data"][-1]["id"])

    first = http.get("/v1/models", params={"limit": 1}).json()
    assert len(first["data"]) == 1 and first["has_more"] is True
    rest = http.get("/v1/models", params={"after_id": first["last_id"]}).json()
    assert [model["id"] for model in first["data"] + rest["data"]] == [model["id"] for model in page["data"]]


def test_models_retrieve(client):
    model = client.models.retrieve(MODEL)
    assert (model.id, model.type) == (MODEL, "model")
    assert model.display_name and isinstance(model.created_at, datetime)
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.models.retrieve("gpt-4o")
    assert_error(caught.value.response, 404, "not_found_error")


def test_root_answers_head_and_get_without_a_key(anonymous_http):
    # Claude Code warms the connection with `HEAD /` before its first request.
    head = anonymous_http.head("/")
    assert head.status_code == 200 and head.content == b""
    assert anonymous_http.get("/").status_code == 200
    assert anonymous_http.get("/health").status_code == 200
