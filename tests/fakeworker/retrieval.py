"""What the fake worker answers to POST /v1/embeddings (OpenAI's shape, as vLLM serves it) and
POST /v1/rerank (vLLM's, Jina's and Cohere's): deterministic, so tests can reason about it.

An embedding is a hashed bag of words: each lower-cased word adds ±1 to one of `dimensions`
coordinates (both chosen by a hash of the word), and the sum is made unit length; texts that share
words are near, texts that share none are nearly orthogonal. A rerank score is the share of the
query's distinct words that the document has.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

__all__ = ["DEFAULT_DIMENSIONS", "embeddings_answer", "hashed_embedding", "overlap_score", "rerank_answer"]

DEFAULT_DIMENSIONS = 64

_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def hashed_embedding(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    vector = [0.0] * dimensions
    for word in _words(text):
        digest = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
        vector[digest % dimensions] += 1.0 if digest >> 63 else -1.0
    norm = math.sqrt(sum(value * value for value in vector))
    return [value / norm for value in vector] if norm else vector


def overlap_score(query: str, document: str) -> float:
    wanted = set(_words(query))
    return len(wanted & set(_words(document))) / len(wanted) if wanted else 0.0


def _invalid(message: str) -> tuple[int, dict[str, Any]]:
    return 400, {"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}}


def embeddings_answer(body: Any, model: str, dimensions: int) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) for an /embeddings request body."""
    texts = body.get("input") if isinstance(body, dict) else None
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(text, str) for text in texts):
        return _invalid("input must be a string or a non-empty list of strings")
    data = [
        {"object": "embedding", "index": index, "embedding": hashed_embedding(text, dimensions)}
        for index, text in enumerate(texts)
    ]
    tokens = sum(len(_words(text)) for text in texts)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}
    return 200, {"object": "list", "id": "embd-fake", "model": body.get("model", model), "data": data, "usage": usage}


def rerank_answer(body: Any, model: str) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) for a /rerank request body: the `top_n` best documents, best first."""
    query = body.get("query") if isinstance(body, dict) else None
    documents = body.get("documents") if isinstance(body, dict) else None
    if not isinstance(query, str) or not isinstance(documents, list):
        return _invalid("query must be a string and documents a list")
    if not all(isinstance(document, str) for document in documents):
        return _invalid("documents must be strings")
    top_n = body.get("top_n") or len(documents)
    scores = [overlap_score(query, document) for document in documents]
    ranked = sorted(range(len(documents)), key=lambda index: -scores[index])[:top_n]
    results = [
        {"index": index, "document": {"text": documents[index]}, "relevance_score": scores[index]} for index in ranked
    ]
    tokens = len(_words(query)) + sum(len(_words(document)) for document in documents)
    return 200, {
        "id": "rerank-fake",
        "model": body.get("model", model),
        "usage": {"total_tokens": tokens},
        "results": results,
    }
