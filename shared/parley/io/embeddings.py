"""Embedders (text → vectors) and the reranker for knowledge bases.

- `builtin_embedder()`: WordLlama (l2_supercat, 256 dimensions), in process, on the CPU. Its wheel
  carries the weights and the tokenizer, and it is loaded from them alone, with downloads off:
  it never touches the network.
- `RouteEmbedder`: a worker's OpenAI `POST /embeddings`; `rerank`: a worker's `POST /rerank`
  (vLLM, Jina, Cohere). Both go through `WorkerClient` (keys, the egress guard, error mapping),
  and what a worker answers is checked before anyone uses it: a broken answer is a
  `WorkerFailure`, never a wrong vector or index.

Every embedder returns unit-length vectors (all zeros for a text with nothing to embed), so a
dot product is the cosine similarity.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol, Sequence

from ..core.errors import ApiError
from .routes import Route, Timeouts, Worker
from .worker import WorkerClient, WorkerFailure

if TYPE_CHECKING:
    from wordllama import WordLlamaInference

__all__ = [
    "BUILTIN_DIMENSIONS",
    "BUILTIN_EMBEDDER",
    "EMBEDDING_BATCH",
    "ROUTE_EMBEDDER_PREFIX",
    "BuiltinEmbedder",
    "Embedder",
    "RouteEmbedder",
    "builtin_embedder",
    "embedder_named",
    "rerank",
]

BUILTIN_EMBEDDER = "builtin:wordllama-256"
BUILTIN_DIMENSIONS = 256
EMBEDDING_BATCH = 64
"""Texts per call: to a worker's /embeddings, and per WordLlama batch."""
BUILTIN_MAX_TOKENS = 512
"""Tokens of a text WordLlama averages (a default chunk has some 250); the rest is not read. It
bounds the padded batch WordLlama builds: 64 × 512 tokens × 256 floats is 32 MB."""


class Embedder(Protocol):
    @property
    def name(self) -> str:
        """What a knowledge base records, to embed its queries the same way."""
        ...

    @property
    def dimensions(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in order."""
        ...


class BuiltinEmbedder:
    """WordLlama's l2_supercat at 256 dimensions: the average of a text's token vectors. Loaded on
    first use (some 0.4 s), in the thread that embeds, so no event loop waits for it."""

    name = BUILTIN_EMBEDDER
    dimensions = BUILTIN_DIMENSIONS

    def __init__(self) -> None:
        self._model: WordLlamaInference | None = None
        self._loading = threading.Lock()

    def load(self) -> None:
        """Load the model now (a cold start may, before its first request); then a no-op."""
        with self._loading:
            if self._model is None:
                self._model = _load_wordllama()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        return await asyncio.to_thread(self._embed, list(texts))

    def _embed(self, texts: list[str]) -> list[list[float]]:
        import numpy

        self.load()
        assert self._model is not None
        vectors = self._model.embed(texts, norm=False, batch_size=EMBEDDING_BATCH)
        norms = numpy.linalg.norm(vectors, axis=1, keepdims=True)
        return numpy.divide(vectors, norms, out=numpy.zeros_like(vectors), where=norms > 0).tolist()


def _load_wordllama() -> WordLlamaInference:
    # `import wordllama` calls logging.basicConfig(level=INFO): with a handler in place that is a no-op.
    root = logging.getLogger()
    placeholder = logging.NullHandler()
    root.addHandler(placeholder)
    try:
        import wordllama
        from wordllama import WordLlama
    finally:
        root.removeHandler(placeholder)
    # WordLlama looks for its tokenizer in <package>/tokenizer/ (singular), but the wheel carries it
    # in <package>/tokenizers/, so it would download it. The wheel's own directory has the layout of
    # WordLlama's cache (weights/, tokenizers/): as the cache, with downloads off, it has all it needs.
    model = WordLlama.load(
        "l2_supercat", dim=BUILTIN_DIMENSIONS, cache_dir=Path(wordllama.__file__).parent, disable_download=True
    )
    model.tokenizer.enable_truncation(max_length=BUILTIN_MAX_TOKENS)
    return model


@functools.cache
def builtin_embedder() -> BuiltinEmbedder:
    """The one built-in embedder of this process (its model is loaded once, on first use)."""
    return BuiltinEmbedder()


class RouteEmbedder:
    """A worker's `POST /embeddings` (OpenAI's shape), `EMBEDDING_BATCH` texts a call, with
    `worker.model` as the model. `dimensions`: as given, else learned from the first answer (0
    until then); an answer of other dimensions is an error."""

    def __init__(self, client: WorkerClient, worker: Worker, timeouts: Timeouts, dimensions: int | None = None) -> None:
        self.name = f"route:{worker.model}"
        self._client = client
        self._worker = worker
        self._timeouts = timeouts
        self._dimensions = dimensions

    @property
    def dimensions(self) -> int:
        return self._dimensions or 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), EMBEDDING_BATCH):
            batch = list(texts[start : start + EMBEDDING_BATCH])
            body = {"model": self._worker.model, "input": batch, "encoding_format": "float"}
            answer = await self._client.complete(self._worker, "/embeddings", body, self._timeouts)
            batch_vectors = _embeddings(answer, len(batch), self._dimensions)
            self._dimensions = len(batch_vectors[0])
            vectors += batch_vectors
        return vectors


async def rerank(
    client: WorkerClient, worker: Worker, timeouts: Timeouts, query: str, documents: Sequence[str], top_n: int
) -> list[int]:
    """The indices of the `top_n` documents most relevant to `query`, best first, as the worker's
    `POST /rerank` ranks them (`{"model", "query", "documents", "top_n"}` →
    `{"results": [{"index", "relevance_score"}]}`)."""
    top_n = min(top_n, len(documents))
    if top_n < 1:
        return []
    body = {"model": worker.model, "query": query, "documents": list(documents), "top_n": top_n}
    answer = await client.complete(worker, "/rerank", body, timeouts)
    return _ranking(answer, len(documents), top_n)


ROUTE_EMBEDDER_PREFIX = "route:"


async def embedder_named(
    name: str,
    dimensions: int | None,
    route_of: Callable[[str], Awaitable[Route]],
    client_of: Callable[[Route], WorkerClient],
) -> Embedder:
    """The embedder a knowledge base names: the built-in one, or `route:<model>` (`route_of`
    finds the route, however the caller looks routes up; `client_of` is the client that may
    call its workers). ValueError for a name that is neither."""
    if name == BUILTIN_EMBEDDER:
        return builtin_embedder()
    if name.startswith(ROUTE_EMBEDDER_PREFIX):
        route = await route_of(name.removeprefix(ROUTE_EMBEDDER_PREFIX))
        return RouteEmbedder(client_of(route), route.worker, route.timeouts, dimensions)
    raise ValueError(f"unknown embedder {name}")


def _broken(problem: str) -> WorkerFailure:
    return WorkerFailure(ApiError(f"The worker's answer {problem}."), retryable=True)


def _shown(value: Any) -> str:
    """A worker's value in an error message, cut short."""
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _is_index(value: Any, count: int) -> bool:
    return type(value) is int and 0 <= value < count


def _finite(value: Any) -> bool:
    try:
        return type(value) in (int, float) and math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _embeddings(answer: dict[str, Any], count: int, dimensions: int | None) -> list[list[float]]:
    """The unit vectors of an /embeddings answer for `count` inputs, in input order."""
    data = answer.get("data")
    if not isinstance(data, list):
        raise _broken("to /embeddings has no `data` list")
    if len(data) != count:
        raise _broken(f"to /embeddings has {len(data)} embeddings for {count} inputs")
    vectors: list[list[float] | None] = [None] * count
    for item in data:
        index = item.get("index") if isinstance(item, dict) else None
        if not _is_index(index, count) or vectors[index] is not None:
            raise _broken(f"to /embeddings has an `index` of {_shown(index)}: each of 0 to {count - 1} must come once")
        embedding = item.get("embedding")
        if isinstance(embedding, list) and embedding and all(isinstance(vector, list) for vector in embedding):
            raise _broken(
                f"to /embeddings has one vector per token (index {index}), not one per input: the worker"
                " pools nothing (serve an embedding model with a pooling type, such as mean)"
            )
        if not isinstance(embedding, list) or not embedding or not all(map(_finite, embedding)):
            raise _broken(
                f"to /embeddings has an embedding (index {index}) that is no non-empty list of finite numbers"
            )
        if dimensions is None:
            dimensions = len(embedding)
        elif len(embedding) != dimensions:
            raise _broken(
                f"to /embeddings has an embedding of {len(embedding)} dimensions where {dimensions} were expected"
            )
        vectors[index] = _unit(embedding)
    return vectors  # type: ignore[return-value]  # every index came once


def _unit(vector: list[float]) -> list[float]:
    scale = max(map(abs, vector))  # first, so that squaring a value near the float maximum stays finite
    if scale == 0:
        return [0.0] * len(vector)
    scaled = [value / scale for value in vector]
    norm = math.sqrt(math.fsum(value * value for value in scaled))
    return [value / norm for value in scaled]


def _ranking(answer: dict[str, Any], count: int, top_n: int) -> list[int]:
    results = answer.get("results")
    if not isinstance(results, list):
        raise _broken("to /rerank has no `results` list")
    if not top_n <= len(results) <= count:
        raise _broken(f"to /rerank ranks {len(results)} documents; {top_n} of {count} were asked for")
    scored: dict[int, float] = {}
    for result in results:
        index = result.get("index") if isinstance(result, dict) else None
        if not _is_index(index, count) or index in scored:
            raise _broken(f"to /rerank has an `index` of {_shown(index)}: each must be one of 0 to {count - 1}, once")
        score = result.get("relevance_score")
        if not _finite(score):
            raise _broken(f"to /rerank has a `relevance_score` of {_shown(score)} (index {index}), not a finite number")
        scored[index] = score
    return sorted(scored, key=scored.__getitem__, reverse=True)[:top_n]
