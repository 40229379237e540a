"""The HTTP surface around the routes: no slash redirects, 405 with Allow, models a key may not use
kept out of sight, and console log lines a client cannot forge."""

from __future__ import annotations

import logging
from typing import Iterator

import httpx
import pytest
from fastapi.routing import APIRoute

from parley.web.app import create_app
from parley.web.chat_completions import CHAT_COMPLETIONS_PATH
from tests.fakeworker import Answer

from .helpers import ALIAS, DOWN_MODEL, MODEL, assert_error, request

# -- 6. trailing slashes and wrong methods ------------------------------------------------------------


def _routes() -> list[tuple[str, set[str]]]:
    """Every API path of the app (those of its included routers too), made concrete, and the
    methods it takes (on one path, all its routes' methods)."""
    found: dict[str, set[str]] = {}
    pending = list(create_app(lambda: None).routes)  # type: ignore[arg-type, return-value]
    while pending:
        route = pending.pop(0)
        if isinstance(route, APIRoute):
            path = route.path.replace("{model_id:path}", MODEL).replace("{batch_id}", BATCH_ID)
            found.setdefault(path, set()).update(route.methods)
        elif (included := getattr(route, "original_router", None)) is not None:  # FastAPI's include_router
            pending.extend(included.routes)
    return list(found.items())


BATCH_ID = "msgbatch_01NoSuchBatch0000000000"
ROUTES = _routes()


def assert_openai_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", status)
    return error["message"]


def test_every_route_is_checked():
    paths = {path for path, _ in ROUTES}
    assert {"/v1/messages", "/v1/messages/count_tokens", CHAT_COMPLETIONS_PATH, "/v1/models", "/", "/health"} <= paths
    assert {
        "/v1/messages/batches",
        f"/v1/messages/batches/{BATCH_ID}",
        f"/v1/messages/batches/{BATCH_ID}/results",
    } <= paths


@pytest.mark.parametrize("path, methods", ROUTES, ids=[path for path, _ in ROUTES])
def test_a_wrong_method_is_a_405_naming_the_allowed_ones(anonymous_http, path, methods):
    allowed = ", ".join(sorted(methods))
    for method in sorted({"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"} - methods):
        response = anonymous_http.request(method, path)
        assert response.headers["allow"] == allowed, (method, path)
        if path == CHAT_COMPLETIONS_PATH:
            message = assert_openai_error(response, 405)
        else:
            message = assert_error(response, 405, "invalid_request_error")
        assert message == f"Method {method} is not allowed for {path}; allowed: {allowed}.", message


@pytest.mark.parametrize("path, methods", ROUTES, ids=[path for path, _ in ROUTES])
def test_a_trailing_slash_is_not_found_never_redirected(http, path, methods):
    if path == "/":
        return
    method = "POST" if "POST" in methods else "GET"
    response = http.request(method, path + "/", headers={"host": "attacker.example"}, json=request())
    assert "location" not in response.headers
    assert_error(response, 404, "not_found_error")


# -- 7. models a key may not use --------------------------------------------------------------------


@pytest.fixture
def limited(parley) -> Iterator[httpx.Client]:
    key, _ = parley.services.keys.create(account="models-acct", name="limited", allowed_models=(DOWN_MODEL,))
    with httpx.Client(base_url=parley.url, headers={"x-api-key": key}, timeout=30) as raw:
        yield raw


def test_a_limited_key_lists_only_its_models(limited):
    listed = limited.get("/v1/models").json()
    assert [model["id"] for model in listed["data"]] == [DOWN_MODEL]
    assert listed["first_id"] == listed["last_id"] == DOWN_MODEL and listed["has_more"] is False


@pytest.mark.parametrize("model", [MODEL, ALIAS])
def test_a_limited_key_does_not_see_another_model(limited, model):
    hidden = limited.get(f"/v1/models/{model}")
    unknown = limited.get("/v1/models/no-such-model")
    assert assert_error(hidden, 404, "not_found_error") == f"model: {model}"
    assert unknown.json()["error"]["message"] == "model: no-such-model", "the same answer as for an unknown model"
    assert limited.get(f"/v1/models/{DOWN_MODEL}").status_code == 200


# -- 8. console log lines ---------------------------------------------------------------------------

FORGED = "2026-01-01 req_forged POST /v1/messages 200 model=forged"


@pytest.fixture
def log_lines(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="parley")  # botocore's debug lines would carry request signatures
    return caplog


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [line for record in caplog.records for line in record.getMessage().splitlines()]


def _assert_not_forged(caplog: pytest.LogCaptureFixture, request_id: str) -> str:
    lines = _lines(caplog)
    mine = [line for line in lines if line.startswith(request_id)]
    assert len(mine) == 1, mine
    assert not [line for line in lines if line.startswith(FORGED[:10]) or line.startswith("<")], lines
    return mine[0]


def test_a_model_name_cannot_forge_a_log_line(http, worker, log_lines):
    worker.enqueue(Answer(text="ok"))
    response = http.post("/v1/messages", json=request(model=f"claude-x\n{FORGED}\r<b>"))
    assert response.status_code == 200, response.text  # the alias route answers it
    line = _assert_not_forged(log_lines, response.headers["request-id"])
    assert "requested=claude-x\\n2026-01-01\\x20req_forged" in line, line


def test_a_path_cannot_forge_a_log_line(http, log_lines):
    response = http.post("/v1/messages%0A" + FORGED.replace(" ", "%20") + "%0D%0A<b>", json=request())
    assert_error(response, 404, "not_found_error")
    line = _assert_not_forged(log_lines, response.headers["request-id"])
    assert "/v1/messages\\n2026-01-01\\x20req_forged" in line, line
