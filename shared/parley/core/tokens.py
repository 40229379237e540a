"""Token estimates, for when the worker has not (yet) said how many tokens a prompt has.

The estimate is the serialized prompt's UTF-8 length divided by four (about right for English
and code with the tokenizers of common open models), plus a fixed cost per image. The worker's
own count replaces it as soon as the worker reports usage.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["IMAGE_TOKENS", "estimate_prompt_tokens", "estimate_text_tokens"]

IMAGE_TOKENS = 1000
_BYTES_PER_TOKEN = 4


def estimate_text_tokens(text: str) -> int:
    return -(-len(text.encode()) // _BYTES_PER_TOKEN)


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
    return max(1, -(-size // _BYTES_PER_TOKEN) + images * IMAGE_TOKENS)
