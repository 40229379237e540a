"""Hostile input, property-based: every answer to a generated or mutated request is a 4xx Anthropic
error envelope or a valid answer, never a 5xx and never a hang.

Most cases run in-process (the app on httpx's ASGITransport: the same middleware, auth, stores and
translation, with a mock worker); a share goes over real uvicorn on loopback, and a few as raw bytes
on a socket. Settings are derandomized with no example database: CI sees the same cases every run.
The session summary prints how many requests were sent.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from .fuzzing import (
    CASES,
    FUZZ_SCALE,
    VALID_REQUESTS,
    check_answer,
    count_tokens_requests,
    damage,
    dumps,
    fuzz,
    header_sets,
    messages_requests,
    mutate,
    presents,
    seeds,
    vector_indexes,
)
from .helpers import MAX_BODY_BYTES
from .inprocess import InProcessParley, in_process

ANSWER_SECONDS = 10.0  # far above any real answer here: a request that takes longer is a hang
MESSAGES_PATHS = ["/v1/messages", "/v1/messages?beta=true", "/v1/anthropic/messages"]
COUNT_PATH = "/v1/messages/count_tokens"
ALL_PATHS = [*MESSAGES_PATHS, COUNT_PATH]
MINIMUM_CASES = 10_000
# Hypothesis examples per test, and requests sent per example; what one CI run sends is the sum
# of their products (at least MINIMUM_CASES).
GENERATED, COUNT, HEADERS = 800, 600, 1000  # one request per example, the first two twice
MUTATED, MUTATIONS = 700, 9
UVICORN, RAW = 500, 300


@pytest.fixture(scope="module")
def app(parley, dynamodb) -> Iterator[InProcessParley]:
    yield from in_process(parley.services, dynamodb, parley.key)


def send(
    app: InProcessParley, test: str, path: str, body: bytes, headers: dict[Any, Any] | None = None
) -> httpx.Response:
    """POST `body` in-process and check the answer."""
    CASES.add(test)
    if headers is None:
        headers = {"x-api-key": app.key, "content-type": "application/json"}
    request = app.client.post(path, content=body, headers=headers)
    response = app.call(asyncio.wait_for(request, ANSWER_SECONDS), timeout=ANSWER_SECONDS + 5)
    check_answer(response, path, app.key)
    return response


@fuzz(GENERATED)
@given(body=messages_requests, path=st.sampled_from(MESSAGES_PATHS))
def test_generated_messages_requests(app, body, path):
    """Structured requests, any field of the wrong type or value; each also sent to count_tokens."""
    data = dumps(body)
    send(app, "generated", path, data)
    send(app, "generated", COUNT_PATH, data)


@fuzz(COUNT)
@given(body=count_tokens_requests, seed=seeds)
def test_generated_count_tokens_requests(app, body, seed):
    data = dumps(body)
    send(app, "count-tokens", COUNT_PATH, data)
    send(app, "count-tokens", COUNT_PATH, damage(seed, data))


@fuzz(MUTATED)
@given(index=vector_indexes, seed=seeds)
def test_mutated_request_vectors(app, index, seed):
    """Each real request vector, mutated several ways (values, types, nesting, size, bytes)."""
    name, original = VALID_REQUESTS[index]
    for _ in range(MUTATIONS):
        send(app, "mutated-vectors", seed.choice(ALL_PATHS), mutate(seed, original))


@fuzz(HEADERS)
@given(data=st.data(), path=st.sampled_from(ALL_PATHS))
def test_hostile_headers(app, data, path):
    headers = data.draw(header_sets(app.key))
    body = dumps(data.draw(st.sampled_from(VALID_REQUESTS[:12]))[1])
    response = send(app, "headers", path, body, headers)
    if not presents(headers, app.key):
        assert response.status_code == 401, response.text


# -- over real uvicorn on loopback -------------------------------------------------------------------


@pytest.fixture(scope="module")
def uvicorn_http(parley) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=parley.url, timeout=ANSWER_SECONDS) as client:
        yield client


@fuzz(UVICORN)
@given(index=vector_indexes, seed=seeds, path=st.sampled_from(ALL_PATHS))
def test_over_uvicorn(parley, uvicorn_http, worker, index, seed, path):
    """Mutated vectors through uvicorn, its HTTP parser and the real fake worker."""
    CASES.add("uvicorn")
    body = mutate(seed, VALID_REQUESTS[index][1])
    response = uvicorn_http.post(path, content=body, headers={"x-api-key": parley.key})
    check_answer(response, path, parley.key)


def raw_exchange(url: str, request: bytes, half_close: bool) -> bytes:
    """Send raw bytes to uvicorn and read until it closes (`connection: close`). `half_close` ends
    our side first (uvicorn then sees a client that left). A server may answer early (a 413 from
    the declared length) and reset the connection on the unread rest: what arrived is returned."""
    host, port = url.removeprefix("http://").split(":")
    answer = b""
    with socket.create_connection((host, int(port)), timeout=ANSWER_SECONDS) as connection:
        try:
            connection.sendall(request)
            if half_close:
                connection.shutdown(socket.SHUT_WR)
            while chunk := connection.recv(65536):
                answer += chunk
        except TimeoutError:
            raise
        except OSError:  # reset, broken pipe, not connected: the server has closed
            pass
    return answer


@fuzz(RAW)
@given(
    index=vector_indexes,
    seed=seeds,
    declared=st.sampled_from(["exact", "short", "long", "none", "garbage", "negative", "huge"]),
    path=st.sampled_from(ALL_PATHS),
)
def test_raw_bytes_with_lying_content_length(parley, uvicorn_http, worker, index, seed, declared, path):
    """A content-length that lies: uvicorn or Parley refuses it with a 4xx; the server never crashes."""
    CASES.add("raw-socket")
    body = mutate(seed, VALID_REQUESTS[index][1])
    lengths = {
        "exact": str(len(body)),
        "short": str(max(0, len(body) - 7)),
        "long": str(len(body) + 7),
        "garbage": "12abc",
        "negative": "-5",
        "huge": str(10**30),
    }
    head = f"POST {path} HTTP/1.1\r\nhost: parley\r\nx-api-key: {parley.key}\r\nconnection: close\r\n"
    if declared in lengths:
        head += f"content-length: {lengths[declared]}\r\n"
    answer = raw_exchange(parley.url, head.encode() + b"\r\n" + body, half_close=declared == "long")
    if not answer:  # waiting for bytes that never came, or reset after an early answer
        assert declared in ("long", "huge") or len(body) > MAX_BODY_BYTES, "a well-framed request got no answer"
        uvicorn_http.get("/health").raise_for_status()
        return
    status_line = answer.split(b"\r\n", 1)[0]
    status = int(status_line.split()[1])
    assert status < 500, answer[:2000]
    if declared in ("exact", "none", "short") and b"content-type: application/json" in answer.lower():
        head_bytes, _, payload = answer.partition(b"\r\n\r\n")
        if status != 200 and b"transfer-encoding: chunked" not in head_bytes.lower():
            check_answer(httpx.Response(status, headers=_headers_of(head_bytes), content=payload), path, parley.key)
    uvicorn_http.get("/health").raise_for_status()


def _headers_of(head: bytes) -> list[tuple[str, str]]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return [tuple(part.strip() for part in line.split(":", 1)) for line in lines if ":" in line]  # type: ignore[misc]


def test_every_answer_was_checked_and_enough_were_sent(app):
    """Runs last in this module: at least MINIMUM_CASES requests when the whole module ran, and
    every in-process request that was metered is in DynamoDB exactly once: each usage line the
    journal took was written, none was refused or found written before."""
    if len(CASES.by_test) == 6 and FUZZ_SCALE >= 1:
        assert CASES.total >= MINIMUM_CASES, dict(CASES.by_test)
    assert app.services.metered(timeout=120)
    journal = app.services.usage_log
    assert journal.appended > 0
    loop = journal.loop
    assert (loop.recorded, loop.already_recorded, loop.dead_lettered) == (journal.appended, 0, 0)
