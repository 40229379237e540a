"""Security checks: header and body size limits, constant-time key comparison, and no key in any
answer (the suite-wide scan in tests/conftest.py covers every log line and every error body the
uvicorn-served stacks send; see tests/stack.py)."""

from __future__ import annotations

import hmac
import json
import logging
import socket
import time

import pytest

from parley.io import keys as keys_module
from parley.io.keys import KeyRecord, check_active, hash_key
from tests.stack import ERROR_BODIES

from .helpers import MAX_BODY_BYTES, assert_error, request
from .test_fuzz import raw_exchange

# How long a test waits for something that takes milliseconds before it fails: a safety net, so a
# defect fails the test instead of hanging it. It measures nothing.
SAFETY_NET = 30.0


def raw_status(url: str, head_lines: list[bytes], body: bytes = b"") -> int | None:
    head = b"POST /v1/messages HTTP/1.1\r\nhost: parley\r\nconnection: close\r\n" + b"".join(head_lines)
    head += b"content-length: %d\r\n\r\n" % len(body)
    answer = raw_exchange(url, head + body, half_close=False)
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


# uvicorn's h11 parser refuses a request head over 16 KiB (h11_max_incomplete_event_size) with a
# 431 before Parley sees it; Parley itself refuses keys over 512 characters with a 401.
@pytest.mark.parametrize(
    "head_lines",
    [
        pytest.param([b"x-api-key: " + b"k" * 20_000 + b"\r\n"], id="one-20KB-header"),
        pytest.param([b"x-api-key: " + b"k" * 2_000_000 + b"\r\n"], id="one-2MB-header"),
        pytest.param([b"x-junk-%d: %s\r\n" % (n, b"v" * 40) for n in range(2_000)], id="2000-headers"),
    ],
)
def test_huge_request_heads_are_refused_and_the_server_lives_on(parley, http, head_lines):
    status = raw_status(parley.url, head_lines)
    assert status is None or 400 <= status < 500, status
    assert http.get("/health").status_code == 200


def test_a_long_key_under_the_head_limit_is_an_authentication_error(anonymous_http, worker):
    response = anonymous_http.post("/v1/messages", json=request(), headers={"x-api-key": "sk-" + "k" * 8000})
    assert_error(response, 401, "authentication_error")
    assert not worker.requests


def test_body_limit_holds_when_the_declared_length_is_small(parley, http):
    """A content-length under the limit followed by more bytes: Parley reads only what was declared."""
    body = b'{"model": "x"}' + b" " * (MAX_BODY_BYTES * 2)
    head = b"POST /v1/messages HTTP/1.1\r\nhost: parley\r\nconnection: close\r\nx-api-key: %s\r\n" % parley.key.encode()
    head += b"content-length: 14\r\n\r\n"
    host, port = parley.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        try:
            connection.sendall(head + body)
        except OSError:
            pass
        answer = connection.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert http.get("/health").status_code == 200


def test_keys_are_compared_in_constant_time(monkeypatch):
    calls: list[tuple[str, str]] = []
    compare_digest = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", spy)
    key = "sk-parley-constant-time-check"
    record = KeyRecord(key_id="key_1", account="a", name="n", status="active", created_at="", key_hash=hash_key(key))
    assert check_active(record, key) is record
    with pytest.raises(Exception, match="invalid x-api-key"):
        check_active(record, key + "x")
    assert calls == [(record.key_hash, hash_key(key)), (record.key_hash, hash_key(key + "x"))]


def test_a_client_leaving_mid_upload_is_not_an_unhandled_error(parley, http, caplog):
    # `expect: 100-continue`: the server says "100 Continue" once Parley starts reading the body,
    # so the client leaves while Parley is reading it.
    head = b"POST /v1/messages HTTP/1.1\r\nhost: parley\r\nx-api-key: %s\r\n" % parley.key.encode()
    head += b"expect: 100-continue\r\ncontent-length: 100000\r\n\r\n"
    host, port = parley.url.removeprefix("http://").split(":")
    answered = len(ERROR_BODIES)
    with caplog.at_level(logging.ERROR):
        with socket.create_connection((host, int(port)), timeout=SAFETY_NET) as connection:
            connection.sendall(head)
            assert connection.recv(65536).startswith(b"HTTP/1.1 100 "), "Parley did not start reading the body"
            connection.sendall(b'{"model": "test-')
        # Parley's answer to the abandoned request, which nobody reads: a client error, not a crash.
        deadline = time.monotonic() + SAFETY_NET
        while len(ERROR_BODIES) == answered:
            if time.monotonic() > deadline:
                pytest.fail(f"Parley did not answer the abandoned request within {SAFETY_NET:g} s")
            time.sleep(0.01)
        error = json.loads(ERROR_BODIES[answered])["error"]
        assert error["type"] == "invalid_request_error" and "disconnected" in error["message"], error
        assert http.get("/health").status_code == 200
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR], caplog.text
