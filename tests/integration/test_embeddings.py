"""Embeddings and rerank for knowledge bases: a worker's POST /embeddings and /rerank (against the
fake worker, whose answers are checked before anyone uses them), and the built-in WordLlama
embedder (256 dimensions, loaded without the network)."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import pytest

from parley.core.errors import ApiError, InvalidRequestError
from parley.io.embeddings import (
    BUILTIN_DIMENSIONS,
    BUILTIN_EMBEDDER,
    EMBEDDING_BATCH,
    RouteEmbedder,
    builtin_embedder,
    rerank,
)
from parley.io.routes import Worker
from parley.io.worker import WorkerClient, WorkerFailure
from tests.fakeworker import RawAnswer, WorkerError
from tests.fakeworker.retrieval import hashed_embedding

from .conftest import SAFETY_NET

T = TypeVar("T")
EMBEDDING_MODEL = "fake-embedder"
REPO = Path(__file__).resolve().parents[2]


def with_client(call: Callable[[WorkerClient], Awaitable[T]]) -> T:
    async def run() -> T:
        client = WorkerClient()
        try:
            return await call(client)
        finally:
            await client.aclose()

    return asyncio.run(run())


def embed(worker, texts: list[str], dimensions: int | None = None) -> tuple[list[list[float]], RouteEmbedder]:
    target = Worker(base_url=worker.base_url, model=EMBEDDING_MODEL)

    async def call(client: WorkerClient) -> tuple[list[list[float]], RouteEmbedder]:
        embedder = RouteEmbedder(client, target, SAFETY_NET, dimensions=dimensions)
        return await embedder.embed(texts), embedder

    return with_client(call)


def ranked(worker, query: str, documents: list[str], top_n: int) -> list[int]:
    target = Worker(base_url=worker.base_url, model="fake-reranker")
    return with_client(lambda client: rerank(client, target, SAFETY_NET, query, documents, top_n))


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def failure(call: Callable[[], Any]) -> WorkerFailure:
    with pytest.raises(WorkerFailure) as caught:
        call()
    return caught.value


# -- a worker's /embeddings -------------------------------------------------------------------------


def test_a_workers_embeddings_come_back_in_input_order_as_unit_vectors(worker):
    texts = ["the cat sat on the mat", "a cat on a mat", "interest rates rose in march"]
    vectors, embedder = embed(worker, texts)
    assert vectors == [pytest.approx(hashed_embedding(text)) for text in texts]
    assert all(math.isclose(cosine(vector, vector), 1.0) for vector in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    assert (embedder.name, embedder.dimensions) == (f"route:{EMBEDDING_MODEL}", 64)
    [sent] = worker.retrieval_requests
    assert sent["path"] == "/v1/embeddings"
    assert sent["body"] == {"model": EMBEDDING_MODEL, "input": texts, "encoding_format": "float"}
    assert worker.requests == [], "the chat request log is left alone"


def test_dimensions_are_learned_from_the_first_answer(worker):
    worker.embedding_dimensions = 384
    vectors, embedder = embed(worker, ["one text"])
    assert len(vectors[0]) == embedder.dimensions == 384


def test_many_texts_go_in_batches_and_come_back_in_order(worker):
    texts = [f"document number {n} about subject {n % 7}" for n in range(2 * EMBEDDING_BATCH + 9)]
    vectors, _ = embed(worker, texts)
    assert vectors == [pytest.approx(hashed_embedding(text)) for text in texts]
    sizes = [len(request["body"]["input"]) for request in worker.retrieval_requests]
    assert sizes == [EMBEDDING_BATCH, EMBEDDING_BATCH, 9]


def test_no_texts_make_no_call(worker):
    assert embed(worker, [])[0] == []
    assert worker.retrieval_requests == []


def test_embeddings_are_put_in_order_by_their_index_and_made_unit_length(worker):
    worker.enqueue_embeddings({"data": [{"index": 1, "embedding": [0, 2]}, {"index": 0, "embedding": [3, 4]}]})
    vectors, _ = embed(worker, ["first", "second"])
    assert vectors == [pytest.approx([0.6, 0.8]), pytest.approx([0.0, 1.0])]


def embedding(index: int, vector: list[Any]) -> dict[str, Any]:
    return {"object": "embedding", "index": index, "embedding": vector}


MALFORMED_EMBEDDINGS = [
    pytest.param({"object": "list"}, "has no `data` list", id="no-data"),
    pytest.param({"data": {"0": [1.0]}}, "has no `data` list", id="data-not-a-list"),
    pytest.param({"data": [embedding(0, [1.0, 0.0])]}, "has 1 embeddings for 2 inputs", id="too-few"),
    pytest.param(
        {"data": [embedding(i, [1.0, 0.0]) for i in range(3)]}, "has 3 embeddings for 2 inputs", id="too-many"
    ),
    pytest.param(
        {"data": [embedding(0, [1.0, 0.0]), embedding(0, [0.0, 1.0])]}, "an `index` of 0: each of 0 to 1", id="dupe"
    ),
    pytest.param({"data": [embedding(0, [1.0]), embedding(2, [1.0])]}, "an `index` of 2", id="out-of-range"),
    pytest.param({"data": [embedding(0, [1.0]), embedding(-1, [1.0])]}, "an `index` of -1", id="negative"),
    pytest.param({"data": [embedding(0, [1.0]), embedding(True, [1.0])]}, "an `index` of True", id="bool-index"),
    pytest.param({"data": [embedding(0, [1.0]), embedding("1", [1.0])]}, "an `index` of '1'", id="string-index"),
    pytest.param({"data": [embedding(0, [1.0]), {"embedding": [1.0]}]}, "an `index` of None", id="no-index"),
    pytest.param({"data": [embedding(0, [1.0]), "nope"]}, "an `index` of None", id="item-not-object"),
    pytest.param(
        {"data": [embedding(0, [1.0, 0.0]), embedding(1, [1.0, 0.0, 0.0])]},
        "an embedding of 3 dimensions where 2 were expected",
        id="mixed-dimensions",
    ),
    pytest.param(
        {"data": [embedding(0, [1.0]), embedding(1, [])]},
        "(index 1) that is no non-empty list of finite numbers",
        id="empty",
    ),
    pytest.param(
        {"data": [embedding(0, [1.0]), embedding(1, [[1.0, 0.0], [0.0, 1.0]])]},
        "one vector per token (index 1), not one per input: the worker pools nothing",
        id="per-token",  # llama.cpp's server on a model without a pooling type
    ),
    pytest.param({"data": [embedding(0, [1.0]), embedding(1, "AACAPw==")]}, "(index 1) that is", id="base64"),
    pytest.param({"data": [embedding(0, [1.0]), embedding(1, ["1.0"])]}, "(index 1) that is", id="string-number"),
    pytest.param({"data": [embedding(0, [1.0]), embedding(1, [True])]}, "(index 1) that is", id="bool-number"),
    pytest.param({"data": [embedding(0, [1.0]), embedding(1, [None])]}, "(index 1) that is", id="null-number"),
    pytest.param({"data": [embedding(0, [1.0]), {"index": 1}]}, "(index 1) that is", id="no-embedding"),
    pytest.param(
        '{"data": [{"index": 0, "embedding": [NaN]}, {"index": 1, "embedding": [1.0]}]}',
        "is not valid JSON",
        id="nan",
    ),
    pytest.param(
        '{"data": [{"index": 0, "embedding": [1e999]}, {"index": 1, "embedding": [1.0]}]}',
        "is not valid JSON",
        id="infinity",
    ),
    pytest.param("[]", "is not a JSON object", id="not-an-object"),
]


@pytest.mark.parametrize("answer, problem", MALFORMED_EMBEDDINGS)
def test_a_malformed_embeddings_answer_is_a_clear_error(worker, answer, problem):
    worker.enqueue_embeddings(answer)
    failed = failure(lambda: embed(worker, ["first", "second"]))
    assert isinstance(failed.error, ApiError) and failed.retryable
    assert failed.error.message.startswith("The worker's answer")
    assert problem in failed.error.message


def test_an_answer_of_other_dimensions_than_given_is_an_error(worker):
    failed = failure(lambda: embed(worker, ["text"], dimensions=256))
    assert "an embedding of 64 dimensions where 256 were expected" in failed.error.message


def test_a_worker_whose_dimensions_change_between_batches_is_an_error(worker):
    worker.enqueue_embeddings(
        {"data": [embedding(i, [1.0, 0.0]) for i in range(EMBEDDING_BATCH)]},
        {"data": [embedding(0, [1.0, 0.0, 0.0])]},
    )
    failed = failure(lambda: embed(worker, ["text"] * (EMBEDDING_BATCH + 1)))
    assert "an embedding of 3 dimensions where 2 were expected" in failed.error.message


def test_a_workers_error_comes_through_as_the_error_a_client_would_see(worker):
    worker.enqueue_embeddings(WorkerError(400, {"error": {"message": "This model does not support embeddings."}}))
    failed = failure(lambda: embed(worker, ["text"]))
    assert isinstance(failed.error, InvalidRequestError) and not failed.retryable
    assert "does not support embeddings" in failed.error.message


def test_a_connection_closed_mid_answer_is_a_retryable_failure(worker):
    worker.enqueue_embeddings(RawAnswer(headers=[(b"content-length", b"100")], chunks=[b'{"data": ['], close_after=1))
    assert failure(lambda: embed(worker, ["text"])).retryable


# -- a worker's /rerank -----------------------------------------------------------------------------

DOCUMENTS = [
    "Interest rates rose in March.",
    "Parcels leave the warehouse at 6 am.",
    "Returns are accepted at the warehouse for 30 days.",
    "The warehouse is closed on Sundays.",
]


def test_rerank_gives_document_indices_best_first(worker):
    assert ranked(worker, "when are warehouse returns accepted", DOCUMENTS, top_n=2) == [2, 1]
    [sent] = worker.retrieval_requests
    assert sent["path"] == "/v1/rerank"
    assert sent["body"] == {
        "model": "fake-reranker",
        "query": "when are warehouse returns accepted",
        "documents": DOCUMENTS,
        "top_n": 2,
    }


def test_rerank_asks_for_no_more_than_there_are_documents(worker):
    assert sorted(ranked(worker, "warehouse", DOCUMENTS, top_n=10)) == [0, 1, 2, 3]
    assert worker.retrieval_requests[0]["body"]["top_n"] == 4


def test_rerank_of_nothing_makes_no_call(worker):
    assert ranked(worker, "anything", [], top_n=3) == []
    assert ranked(worker, "anything", DOCUMENTS, top_n=0) == []
    assert worker.retrieval_requests == []


def test_rerank_orders_by_score_whatever_order_the_worker_sends(worker):
    worker.enqueue_rerank(
        {
            "results": [
                {"index": 0, "relevance_score": 0.1},
                {"index": 3, "relevance_score": 0.9},
                {"index": 1, "relevance_score": 0.5},
            ]
        }
    )
    assert ranked(worker, "q", DOCUMENTS, top_n=2) == [3, 1]


def result(index: Any, score: Any) -> dict[str, Any]:
    return {"index": index, "relevance_score": score}


MALFORMED_RANKINGS = [
    pytest.param({"data": []}, "has no `results` list", id="no-results"),
    pytest.param({"results": [result(0, 0.9)]}, "ranks 1 documents; 2 of 4 were asked for", id="too-few"),
    pytest.param({"results": [result(i % 4, 0.5) for i in range(5)]}, "ranks 5 documents", id="too-many"),
    pytest.param({"results": [result(0, 0.9), result(4, 0.5)]}, "an `index` of 4", id="out-of-range"),
    pytest.param({"results": [result(0, 0.9), result(0, 0.5)]}, "an `index` of 0", id="dupe"),
    pytest.param({"results": [result(0, 0.9), result(1.0, 0.5)]}, "an `index` of 1.0", id="float-index"),
    pytest.param({"results": [result(0, 0.9), {"relevance_score": 0.5}]}, "an `index` of None", id="no-index"),
    pytest.param({"results": [result(0, 0.9), result(1, "high")]}, "`relevance_score` of 'high'", id="word-score"),
    pytest.param({"results": [result(0, 0.9), {"index": 1, "score": 0.5}]}, "`relevance_score` of None", id="tei"),
    pytest.param(
        '{"results": [{"index": 0, "relevance_score": NaN}, {"index": 1, "relevance_score": 0.5}]}',
        "is not valid JSON",
        id="nan",
    ),
]


@pytest.mark.parametrize("answer, problem", MALFORMED_RANKINGS)
def test_a_malformed_rerank_answer_is_a_clear_error(worker, answer, problem):
    worker.enqueue_rerank(answer)
    failed = failure(lambda: ranked(worker, "q", DOCUMENTS, top_n=2))
    assert isinstance(failed.error, ApiError) and failed.retryable
    assert problem in failed.error.message


def test_a_worker_without_rerank_is_a_clear_error(worker):
    worker.enqueue_rerank(WorkerError(404, {"detail": "Not Found"}))
    failed = failure(lambda: ranked(worker, "q", DOCUMENTS, top_n=2))
    assert failed.error.message == "The worker rejected the route's configuration (HTTP 404): Not Found"


# -- the built-in embedder ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wordllama():
    pytest.importorskip("wordllama", reason="the built-in embedder needs wordllama (pyproject has no line for it yet)")
    return builtin_embedder()


def test_the_builtin_embedder_gives_256_dimension_unit_vectors(wordllama):
    vectors = asyncio.run(wordllama.embed(["Parcels leave the warehouse at 6 am.", "Returns take 30 days."]))
    assert (BUILTIN_EMBEDDER, BUILTIN_DIMENSIONS) == ("builtin:wordllama-256", 256)
    assert (wordllama.name, wordllama.dimensions) == (BUILTIN_EMBEDDER, BUILTIN_DIMENSIONS)
    assert [len(vector) for vector in vectors] == [256, 256]
    assert all(math.isclose(cosine(vector, vector), 1.0, rel_tol=1e-5) for vector in vectors)
    assert builtin_embedder() is wordllama, "one embedder (one model) per process"


def test_the_builtin_embedder_puts_similar_texts_closer_than_unrelated_ones(wordllama):
    cat, kitten, markets = asyncio.run(
        wordllama.embed(
            [
                "The cat sat on the mat by the fire.",
                "A kitten was sleeping on the rug near the fireplace.",
                "Stock markets fell sharply after the central bank raised interest rates.",
            ]
        )
    )
    assert cosine(cat, kitten) > cosine(cat, markets) + 0.1
    assert cosine(cat, kitten) > cosine(kitten, markets) + 0.1


def test_the_builtin_embedder_takes_empty_and_very_long_texts(wordllama):
    empty, long, short = asyncio.run(wordllama.embed(["", "warehouse returns policy " * 20_000, "warehouse"]))
    assert empty == [0.0] * 256, "nothing to embed: zeros, not NaN"
    assert len(long) == 256 and all(math.isfinite(value) for value in long)
    assert asyncio.run(wordllama.embed([])) == []


def test_the_builtin_embedder_needs_no_network_no_cache_and_leaves_logging_alone(wordllama, tmp_path):
    probe = textwrap.dedent(
        """
        import asyncio, logging, socket, sys

        def no_network(event, args):
            if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto"):
                raise RuntimeError(f"network use: {event} {args}")

        sys.addaudithook(no_network)
        from parley.io.embeddings import builtin_embedder

        [vector] = asyncio.run(builtin_embedder().embed(["offline"]))
        root = logging.getLogger()
        print(len(vector), len(root.handlers), logging.getLevelName(root.level))
        """
    )
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HOME": str(tmp_path),  # no WordLlama or Hugging Face cache to fall back on
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "HF_HOME": str(tmp_path / "hf"),
        "PYTHONPATH": os.pathsep.join([str(REPO / "shared"), str(REPO)]),
    }
    run = subprocess.run(
        [sys.executable, "-c", probe], env=environment, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["256", "0", "WARNING"], "256 dimensions, and logging left as it was"
    assert not any(tmp_path.iterdir()), "nothing was downloaded or cached"
