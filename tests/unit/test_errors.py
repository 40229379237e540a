"""Worker errors reach the client as the right Anthropic error, with the worker's message."""

from __future__ import annotations

import json

import pytest

from parley.core.errors import error_body, retry_after_seconds, worker_error
from tests.vectors.loader import VECTORS

CASES = json.loads((VECTORS / "worker_errors.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[f"{case['status']}-{index}" for index, case in enumerate(CASES)])
def test_worker_error_mapping(case: dict) -> None:
    error = worker_error(
        case["status"], case["body"], retry_after=case.get("retry_after"), content_type=case.get("content_type")
    )
    expected = case["expected"]
    assert (error.status, error.type, error.message, error.should_retry) == (
        expected["status"],
        expected["type"],
        expected["message"],
        expected["should_retry"],
    )
    assert error.headers == expected.get("headers", {})
    assert error_body(error, "req_1") == {
        "type": "error",
        "error": {"type": expected["type"], "message": expected["message"]},
        "request_id": "req_1",
    }


NOW = 1_767_225_600.0  # Thu, 01 Jan 2026 00:00:00 GMT


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("120", 120.0),
        ("0.25", 0.25),
        ("Thu, 01 Jan 2026 00:02:00 GMT", 120.0),  # an HTTP-date: seconds from now
        ("Wed, 31 Dec 2025 23:59:00 GMT", 0.0),  # already past: retry now
        ("Fri, 02 Jan 2026 00:00:00 GMT", None),  # a day or more away
        ("Thu, 01 Jan 2026 00:02:00", None),  # no zone: no HTTP-date
        ("", None),
        (None, None),
        ("5 seconds", None),
        ("٥", None),  # a digit, but not an ASCII one
        ("+5", None),
    ],
)
def test_retry_after_seconds(value, seconds) -> None:
    assert retry_after_seconds(value, now=NOW) == seconds
