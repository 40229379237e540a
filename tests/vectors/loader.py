"""Loading test vectors, and rewriting their expected halves on request.

`PARLEY_UPDATE_VECTORS=1 make test` writes what the code produces into each vector's expected
field; review the diff before committing it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from parley.core.response import AnswerContext

VECTORS = Path(__file__).parent
UPDATE = os.environ.get("PARLEY_UPDATE_VECTORS") == "1"


def vector_params(kind: str) -> list[Any]:
    paths = sorted((VECTORS / kind).glob("*.json"))
    return [pytest.param(path, id=path.stem) for path in paths]


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def check_expected(path: Path, vector: dict[str, Any], field: str, actual: Any) -> None:
    """Assert `actual` equals the vector's `field`, or write it there in update mode."""
    if UPDATE:
        vector[field] = actual
        path.write_text(json.dumps(vector, indent=2, ensure_ascii=False) + "\n")
        return
    assert field in vector, f"{path.name} has no {field!r}; run with PARLEY_UPDATE_VECTORS=1 and review"
    assert actual == vector[field]


def context_of(vector: dict) -> AnswerContext:
    context = vector.get("context", {})
    return AnswerContext(
        model=context.get("model", "claude-sonnet-4-5"),
        message_id="msg_01TestVector000000000000",
        input_tokens_estimate=context.get("input_tokens_estimate", 10),
        thinking=context.get("thinking", False),
        stop_sequences=tuple(context.get("stop_sequences", ())),
    )
