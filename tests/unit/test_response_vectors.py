"""A worker's chat.completion in → the Anthropic message the client receives."""

from __future__ import annotations

from pathlib import Path

import pytest

from parley.core.errors import ParleyError
from parley.core.response import chat_to_message
from tests.vectors.loader import check_expected, context_of, load, vector_params


def generated_ids_masked(message: dict) -> dict:
    """Tool ids Parley generates (the worker's was unusable) are random: compare their shape."""
    for block in message["content"]:
        if block["type"] == "tool_use" and block["id"].startswith("toolu_01") and len(block["id"]) == 30:
            block["id"] = "toolu_01<generated>"
    return message


@pytest.mark.parametrize("path", vector_params("responses"))
def test_response_translation(path: Path) -> None:
    vector = load(path)
    if "error" in vector:
        with pytest.raises(ParleyError) as raised:
            chat_to_message(vector["completion"], context_of(vector))
        check_expected(path, vector, "error", {"type": raised.value.type, "message": raised.value.message})
    else:
        message = generated_ids_masked(chat_to_message(vector["completion"], context_of(vector)))
        check_expected(path, vector, "expected", message)
