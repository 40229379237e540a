"""Anthropic request in → the Chat Completions request the worker receives (or the 400 a client gets)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from parley.core.anthropic_types import parse_messages_request
from parley.core.errors import InvalidRequestError
from parley.core.request import WorkerProfile, messages_to_chat
from tests.vectors.loader import check_expected, load, vector_params


def translate(vector: dict) -> dict:
    request = vector["request"]
    body = request.encode() if isinstance(request, str) else orjson.dumps(request)
    limits = WorkerProfile(**vector.get("worker", {"model": "worker-model"}))
    return messages_to_chat(parse_messages_request(body), limits)


@pytest.mark.parametrize("path", vector_params("requests"))
def test_request_translation(path: Path) -> None:
    vector = load(path)
    if "error" in vector:
        with pytest.raises(InvalidRequestError) as raised:
            translate(vector)
        check_expected(path, vector, "error", raised.value.message)
    else:
        check_expected(path, vector, "expected", translate(vector))
