"""Worker errors reach the client as the right Anthropic error, with the worker's message."""

from __future__ import annotations

import json

import pytest

from parley.core.errors import error_body, worker_error
from tests.vectors.loader import VECTORS

CASES = json.loads((VECTORS / "worker_errors.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[f"{case['status']}-{index}" for index, case in enumerate(CASES)])
def test_worker_error_mapping(case: dict) -> None:
    error = worker_error(case["status"], case["body"], retry_after=case.get("retry_after"))
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
