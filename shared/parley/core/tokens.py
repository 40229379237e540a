"""Token estimates, for when the worker has not (yet) said how many tokens a prompt has.

The estimate is the serialized prompt's UTF-8 length divided by four (about right for English
and code with the tokenizers of common open models), plus a fixed cost per image. The worker's
own count replaces it as soon as the worker reports usage, if that count is one
(`worker_token_count`): a figure that is not an int from 0 to MAX_WORKER_TOKENS is no count, and
the estimate stands.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = [
    "IMAGE_TOKENS",
    "MAX_WORKER_TOKENS",
    "estimate_prompt_tokens",
    "estimate_text_tokens",
    "estimate_tokens_of_size",
    "worker_token_count",
    "worker_token_count_or",
]

IMAGE_TOKENS = 1000
MAX_WORKER_TOKENS = 100_000_000
"""The most tokens Parley believes a worker used for one answer (its prompt, or its output)."""
_BYTES_PER_TOKEN = 4


def estimate_tokens_of_size(size: int) -> int:
    """Tokens in `size` bytes (or characters) of text: a quarter of it, rounded up."""
    return -(-size // _BYTES_PER_TOKEN)


def estimate_text_tokens(text: str) -> int:
    return estimate_tokens_of_size(len(text.encode()))


def _without_images(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    images = 0
    stripped = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts = [part for part in content if part.get("type") != "image_url"]
            images += len(content) - len(parts)
            message = {**message, "content": parts}
        stripped.append(message)
    return stripped, images


def estimate_prompt_tokens(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> int:
    stripped, images = _without_images(messages)
    size = len(orjson.dumps(stripped))
    if tools:
        size += len(orjson.dumps(tools))
    return max(1, estimate_tokens_of_size(size) + images * IMAGE_TOKENS)


def worker_token_count(value: Any) -> int | None:
    """A token figure from a worker's usage, or None when it is no count (then it counts as absent).

    Only an int from 0 to MAX_WORKER_TOKENS: not a bool, a float (orjson reads integers past 64
    bits as floats), a string, or a negative number, which would credit the key's metered totals.
    """
    return value if type(value) is int and 0 <= value <= MAX_WORKER_TOKENS else None


def worker_token_count_or(value: Any, fallback: int) -> int:
    """The worker's figure if it is a count, else `fallback` (Parley's estimate, or its last count)."""
    count = worker_token_count(value)
    return fallback if count is None else count
