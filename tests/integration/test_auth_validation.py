"""Authentication, request validation and limits: always Anthropic's envelope, never a 422 or 500."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from .helpers import HELLO, MAX_BODY_BYTES, MODEL, assert_error, request

ENDPOINTS = [
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    ("GET", "/v1/models"),
    ("GET", f"/v1/models/{MODEL}"),
]


@pytest.mark.parametrize("method,path", ENDPOINTS)
def test_no_key_is_rejected(anonymous_http, worker, method, path):
    response = anonymous_http.request(method, path, json=request())
    assert assert_error(response, 401, "authentication_error") == "x-api-key header is required"
    assert worker.requests == []


def test_wrong_key_is_rejected(parley, worker):
    stranger = anthropic.Anthropic(base_url=parley.url, api_key="sk-parley-not-a-real-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        stranger.messages.create(**request())
    assert assert_error(caught.value.response, 401, "authentication_error") == "invalid x-api-key"
    assert worker.requests == []


def test_bearer_token_works(parley, worker, monkeypatch):
    # Claude Code with ANTHROPIC_AUTH_TOKEN sends `Authorization: Bearer <key>` and no x-api-key.
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    bearer = anthropic.Anthropic(base_url=parley.url, api_key=None, auth_token=parley.key, max_retries=0)
    assert bearer.messages.create(**request()).content[0].text == "ok"
    assert "x-api-key" not in worker.requests[-1]["headers"]  # and the key is not passed on to the worker
    assert parley.key not in str(worker.requests[-1]["headers"])


def test_wrong_bearer_token_is_rejected(anonymous_http):
    response = anonymous_http.post("/v1/messages", json=request(), headers={"authorization": "Bearer sk-parley-wrong"})
    assert assert_error(response, 401, "authentication_error") == "invalid x-api-key"


def test_revoked_key_stops_working(parley, anonymous_http):
    keys = parley.services.keys
    key, record = keys.create(account="acct", name="soon revoked")
    headers = {"x-api-key": key}
    assert anonymous_http.post("/v1/messages", json=request(), headers=headers).status_code == 200
    assert keys.revoke(record.key_id)
    assert_error(anonymous_http.post("/v1/messages", json=request(), headers=headers), 401, "authentication_error")


def test_unknown_model_is_not_found(client, worker):
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(**request(model="gpt-4o"))
    assert assert_error(caught.value.response, 404, "not_found_error") == "model: gpt-4o"
    assert worker.requests == []


# -- validation ---------------------------------------------------------------------------------

BASE = request()
INVALID = {
    "missing-max_tokens": ({"model": MODEL, "messages": HELLO}, "max_tokens"),
    "max_tokens-as-string": ({**BASE, "max_tokens": "100"}, "max_tokens"),
    "max_tokens-zero": ({**BASE, "max_tokens": 0}, "max_tokens"),
    "missing-model": ({"max_tokens": 10, "messages": HELLO}, "model"),
    "missing-messages": ({"model": MODEL, "max_tokens": 10}, "messages"),
    "messages-not-a-list": ({**BASE, "messages": "Hello"}, "messages"),
    "no-messages": ({**BASE, "messages": []}, "messages"),
    "bad-role": ({**BASE, "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    "content-a-number": ({**BASE, "messages": [{"role": "user", "content": 42}]}, "messages.0.content"),
    "unknown-block-type": (
        {**BASE, "messages": [{"role": "user", "content": [{"type": "hologram", "text": "hi"}]}]},
        "messages.0.content.0",
    ),
    "text-block-without-text": (
        {**BASE, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
        "messages.0.content.0.text",
    ),
    "tool_result-without-id": (
        {**BASE, "messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]},
        "messages.0.content.0.tool_use_id",
    ),
    "temperature-as-string": ({**BASE, "temperature": "hot"}, "temperature"),
    "stream-as-string": ({**BASE, "stream": "yes"}, "stream"),
    "system-a-number": ({**BASE, "system": 5}, "system"),
    "tools-not-a-list": ({**BASE, "tools": {"name": "x", "input_schema": {}}}, "tools"),
    "tool-without-schema": ({**BASE, "tools": [{"name": "get_weather"}]}, "tools.0.input_schema"),
    "thinking-budget-too-small": (
        {**BASE, "max_tokens": 4000, "thinking": {"type": "enabled", "budget_tokens": 10}},
        "thinking.budget_tokens",
    ),
}


@pytest.mark.parametrize("case", INVALID)
def test_invalid_request_names_the_field(http, worker, case):
    body, field = INVALID[case]
    message = assert_error(http.post("/v1/messages", json=body), 400, "invalid_request_error")
    assert message.startswith(f"{field}:"), f"{message!r} should start with {field!r}"
    assert worker.requests == []


@pytest.mark.parametrize(
    "content",
    [b'{"model": "test-model", "max_tokens": 10,', b"[1, 2, 3]", b"", b"\xff\xfe not utf-8"],
    ids=["truncated-json", "array", "empty", "not-utf8"],
)
def test_body_that_is_not_a_json_object_is_invalid(http, worker, content):
    response = http.post("/v1/messages", content=content, headers={"content-type": "application/json"})
    assert_error(response, 400, "invalid_request_error")
    assert worker.requests == []


def test_count_tokens_validates_too(http):
    message = assert_error(http.post("/v1/messages/count_tokens", json={"model": MODEL}), 400, "invalid_request_error")
    assert message.startswith("messages:")


def oversized_body() -> bytes:
    padding = "x" * (MAX_BODY_BYTES + 1024)
    return httpx.Request("POST", "/", json=request(messages=[{"role": "user", "content": padding}])).content


def test_body_over_the_limit_is_request_too_large(http, worker):
    assert_error(http.post("/v1/messages", content=oversized_body()), 413, "request_too_large")
    assert worker.requests == []


def test_chunked_body_over_the_limit_is_request_too_large(http, worker):
    body = oversized_body()
    chunks = (body[i : i + 16384] for i in range(0, len(body), 16384))  # no content-length: chunked upload
    assert_error(http.post("/v1/messages", content=chunks), 413, "request_too_large")
    assert worker.requests == []


@pytest.mark.parametrize(
    "method,path", [("GET", "/v1/nothing-here"), ("POST", "/v1/complete"), ("GET", "/v2/messages")]
)
def test_unknown_path_is_not_found(http, method, path):
    assert_error(http.request(method, path, json=request()), 404, "not_found_error")
