"""Knowledge bases on Amazon S3 Vectors (io/s3_vectors.py) against moto, in-process (a mock: nothing
that speaks the S3 Vectors API can be installed from the registries this project reaches): the contract
every store keeps (knowledge_base_contract.py), what S3 Vectors adds (its limits, a replace cut
short, the record vector), and the factory that picks an engine by URI.

moto 5.2.5 implements S3 Vectors but QueryVectors, and shallowly in places. Two test doubles on the
test's boto3 client stand in where it falls short, everything else reaching moto for real:

- `QueryVectorsFake` (a FAKE) answers QueryVectors by brute force over what moto holds.
- `answer_in_pages` cuts moto's one-page listings into pages, so the store must follow nextToken.

What moto does not check, the store does itself (a second CreateIndex overwrites in moto: the
store asks GetIndex first; ListIndexes ignores its prefix: the store filters too).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from moto import mock_aws

from parley.core.chunking import Chunk
from parley.io.knowledge_bases import (
    KnowledgeBase,
    KnowledgeBaseError,
    KnowledgeBaseExistsError,
    KnowledgeBaseNotFoundError,
    KnowledgeBaseStore,
    _table_name,
    knowledge_base_store,
)
from parley.io.s3_vectors import S3VectorsKnowledgeBaseStore
from tests.unit.knowledge_base_contract import DIMENSIONS, EMBEDDER, KnowledgeBaseContract, axis, chunks_of

BUCKET = "parley-knowledge"
CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "test", "aws_secret_access_key": "test"}
# S3 Vectors' limits on one request (docs: "Limitations and restrictions")
MOST_A_REQUEST = {"PutVectors": ("vectors", 500), "DeleteVectors": ("keys", 500), "GetVectors": ("keys", 100)}
INDEX_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class QueryVectorsFake:
    """TEST FAKE of S3 Vectors' QueryVectors, which moto 5.2.5 lacks (the call would go out to AWS).

    Registered on the test's client, it answers just before the request would be sent: the exact
    cosine distance to every vector moto holds for the index (read with moto's own ListVectors),
    the filter applied first, the `topK` nearest, closest first (ties by key), with distances and
    metadata only if asked. It refuses what S3 Vectors refuses with a ValidationException: topK out
    of 1 to 100, a vector of the wrong dimension, a filter on a non-filterable key (remembered from
    CreateIndex, which moto does not give back). Filters: `{key: value}`, `$eq` and `$exists` only;
    anything else fails the test. A missing index is moto's own NotFoundException."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.non_filterable: dict[str, set[str]] = {}
        self.queries: list[dict[str, Any]] = []
        client.meta.events.register("provide-client-params.s3vectors.CreateIndex", self._remember_index)
        client.meta.events.register("before-call.s3vectors.QueryVectors", self._answer)

    def _remember_index(self, params: dict[str, Any], **_: Any) -> None:
        keys = params.get("metadataConfiguration", {}).get("nonFilterableMetadataKeys", [])
        self.non_filterable[params["indexName"]] = set(keys)

    def _answer(self, params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        query = json.loads(params["body"])
        self.queries.append(query)
        try:
            return _answer(200, {"vectors": self._nearest(query), "distanceMetric": "cosine"})
        except ClientError as error:
            return _answer(error.response["ResponseMetadata"]["HTTPStatusCode"], {"Error": error.response["Error"]})
        except _Refused as refusal:
            return _answer(400, {"Error": {"Code": "ValidationException", "Message": str(refusal)}})

    def _nearest(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        where = {"vectorBucketName": query["vectorBucketName"], "indexName": query["indexName"]}
        dimension = self._client.get_index(**where)["index"]["dimension"]
        wanted, top_k, condition = query["queryVector"]["float32"], query["topK"], query.get("filter")
        if not 1 <= top_k <= 100:
            raise _Refused(f"topK must be from 1 to 100, not {top_k}")
        if len(wanted) != dimension:
            raise _Refused(f"the query vector must have length {dimension}, not {len(wanted)}")
        if refused := set(condition or {}) & self.non_filterable.get(query["indexName"], set()):
            raise _Refused(f"cannot filter on non-filterable metadata keys {sorted(refused)}")
        pages = self._client.get_paginator("list_vectors").paginate(**where, returnData=True, returnMetadata=True)
        candidates = [vector for page in pages for vector in page["vectors"] if _matches(condition, vector)]
        ranked = sorted(((_cosine_distance(wanted, v["data"]["float32"]), v["key"], v) for v in candidates))[:top_k]
        found = []
        for distance, key, vector in ranked:
            found.append({"key": key})
            if query.get("returnDistance"):
                found[-1]["distance"] = distance
            if query.get("returnMetadata"):
                found[-1]["metadata"] = vector.get("metadata") or {}
        return found


class _Refused(Exception):
    pass


def _answer(status: int, parsed: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
    parsed["ResponseMetadata"] = {"HTTPStatusCode": status}
    return AWSResponse("https://s3vectors.us-east-1.api.aws/QueryVectors", status, {}, None), parsed


def _matches(condition: dict[str, Any] | None, vector: dict[str, Any]) -> bool:
    metadata = vector.get("metadata") or {}
    for key, test in (condition or {}).items():
        operator, operand = next(iter(test.items())) if isinstance(test, dict) else ("$eq", test)
        if key.startswith("$") or (isinstance(test, dict) and len(test) != 1) or operator not in ("$eq", "$exists"):
            raise NotImplementedError(f"the fake filters with {{key: value}}, $eq and $exists only, not {condition}")
        held = key in metadata if operator == "$exists" else metadata.get(key)
        if held != operand:
            return False
    return True


def _cosine_distance(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return 1.0 - dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def answer_in_pages(client: Any, operation: str, result_key: str, size: int) -> None:
    """moto answers a listing in one page whatever its nextToken: this cuts each answer to `size`
    items from the offset that nextToken carries, and gives the next offset while items remain."""
    offset = [0]

    def take_token(params: dict[str, Any], **_: Any) -> None:
        offset[0] = int(params.pop("nextToken", 0))

    def cut(parsed: dict[str, Any], **_: Any) -> None:
        if result_key in parsed:
            items, start = parsed[result_key], offset[0]
            parsed[result_key] = items[start : start + size]
            if start + size < len(items):
                parsed["nextToken"] = str(start + size)

    client.meta.events.register(f"provide-client-params.s3vectors.{operation}", take_token)
    client.meta.events.register(f"after-call.s3vectors.{operation}", cut)


def cut_short(client: Any, operation: str, field: str, applied: Callable[[list[Any]], list[Any]], after: int) -> None:
    """The `operation` request after `after` more applies to only the `applied` part of its
    `field`, then fails: as if S3 Vectors took it in part and the connection was lost."""
    countdown = [after]

    def take_part(params: dict[str, Any], **_: Any) -> None:
        if countdown[0] == 0:
            params[field] = applied(params[field])

    def fail(**_: Any) -> None:
        countdown[0] -= 1
        if countdown[0] == -1:
            raise ConnectionError(f"{operation} cut short")

    client.meta.events.register(f"provide-client-params.s3vectors.{operation}", take_part)
    client.meta.events.register(f"after-call.s3vectors.{operation}", fail)


@pytest.fixture
def client() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3vectors", **CREDENTIALS)
        client.create_vector_bucket(vectorBucketName=BUCKET)
        yield client


@pytest.fixture
def calls(client: Any) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every request the test's client makes; at the end, each checked against S3 Vectors' limits."""
    made: list[tuple[str, dict[str, Any]]] = []
    client.meta.events.register(
        "provide-client-params.s3vectors", lambda params, model, **_: made.append((model.name, dict(params)))
    )
    yield made
    for operation, params in made:
        if operation in MOST_A_REQUEST:
            field, most = MOST_A_REQUEST[operation]
            assert 1 <= len(params[field]) <= most, (operation, len(params[field]))
        if operation == "PutVectors":
            assert len(json.dumps(params)) < 20 * 1024 * 1024
        if operation == "QueryVectors":
            assert 1 <= params["topK"] <= 100


@pytest.fixture
def fake(client: Any) -> QueryVectorsFake:
    return QueryVectorsFake(client)


@pytest.fixture
def store(client: Any, fake: QueryVectorsFake, calls: list[Any]) -> S3VectorsKnowledgeBaseStore:
    return S3VectorsKnowledgeBaseStore(BUCKET, client=client)


@pytest.fixture
def another_store(client: Any, store: S3VectorsKnowledgeBaseStore) -> S3VectorsKnowledgeBaseStore:
    return S3VectorsKnowledgeBaseStore(BUCKET, client)


@pytest.fixture
def docs(store: S3VectorsKnowledgeBaseStore) -> KnowledgeBase:
    return store.create("acme", "docs", EMBEDDER, DIMENSIONS)


class TestKnowledgeBaseContract(KnowledgeBaseContract):
    """Every store's contract, on S3 Vectors (moto, with the QueryVectors fake; each request
    checked against S3 Vectors' limits by `calls`)."""


def test_importing_knowledge_bases_loads_no_engine_and_s3_vectors_no_lancedb() -> None:
    heavy = {"boto3", "botocore", "lancedb", "numpy", "pyarrow", "parley.io.s3_vectors"}
    code = f"import sys, parley.io.knowledge_bases; print(sorted({heavy!r} & set(sys.modules)))"
    assert subprocess.check_output([sys.executable, "-c", code], text=True).strip() == "[]"
    code = "import sys, parley.io.s3_vectors; print(sorted({'lancedb', 'numpy', 'pyarrow'} & set(sys.modules)))"
    assert subprocess.check_output([sys.executable, "-c", code], text=True).strip() == "[]"


@pytest.mark.parametrize("uri", [".parley/knowledge", "/srv/kb", "file:///srv/kb", "s3://b/kb", "s3+ddb://b/kb?x=y"])
def test_the_factory_gives_lancedb_for_any_other_uri(uri: str) -> None:
    assert type(knowledge_base_store(uri)) is KnowledgeBaseStore


@pytest.mark.parametrize("uri", ["s3vectors://parley-knowledge", "s3vectors://parley-knowledge/"])
def test_the_factory_gives_s3_vectors_for_a_vector_bucket(uri: str) -> None:
    store = knowledge_base_store(uri)
    assert isinstance(store, S3VectorsKnowledgeBaseStore) and store.vector_bucket == "parley-knowledge"


@pytest.mark.parametrize("uri", ["s3vectors://", "s3vectors://ab", "s3vectors://Parley_KB", "s3vectors://kb-x/prefix"])
def test_the_factory_refuses_what_is_no_vector_bucket(uri: str) -> None:
    with pytest.raises(KnowledgeBaseError):
        knowledge_base_store(uri)


def test_the_client_is_made_on_first_use_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", CREDENTIALS["region_name"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        boto3.client("s3vectors", **CREDENTIALS).create_vector_bucket(vectorBucketName=BUCKET)
        store = knowledge_base_store(f"s3vectors://{BUCKET}")
        docs = store.create("acme", "docs", EMBEDDER, DIMENSIONS)
        assert store.get("acme", "docs") == docs


def test_a_knowledge_base_is_a_cosine_index_named_from_hashes(
    client: Any, fake: QueryVectorsFake, docs: KnowledgeBase
) -> None:
    name = _table_name("acme", "docs")
    index = client.get_index(vectorBucketName=BUCKET, indexName=name)["index"]

    assert INDEX_NAME.fullmatch(name) and "acme" not in name and "docs" not in name
    assert (index["dataType"], index["dimension"], index["distanceMetric"]) == ("float32", DIMENSIONS, "cosine")
    assert fake.non_filterable[name] == {"position", "start", "end", "title", "text", "knowledge_base"}


def test_an_index_left_without_its_record_is_no_knowledge_base_until_removed(
    client: Any, store: S3VectorsKnowledgeBaseStore
) -> None:
    index = _table_name("acme", "docs")  # as if a create stopped between its two requests
    client.create_index(
        vectorBucketName=BUCKET, indexName=index, dataType="float32", dimension=DIMENSIONS, distanceMetric="cosine"
    )

    assert store.get("acme", "docs") is None
    assert store.list("acme") == []
    with pytest.raises(KnowledgeBaseNotFoundError):
        store.search("acme", "docs", axis(0), top_k=1)
    with pytest.raises(KnowledgeBaseExistsError):
        store.create("acme", "docs", EMBEDDER, DIMENSIONS)

    assert store.remove("acme", "docs") is True
    assert store.get("acme", "docs") is None
    assert store.create("acme", "docs", EMBEDDER, DIMENSIONS) == store.get("acme", "docs")


def test_a_retrieval_reads_the_record_once(
    store: S3VectorsKnowledgeBaseStore, docs: KnowledgeBase, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    """A request's retrieval is `get`, then `search` with the record it read: one GetVectors, one
    QueryVectors. A record of another knowledge base is never taken for this one."""
    store.replace_source("acme", "docs", "guide.md", chunks_of("guide.md", ["alpha"]), [axis(0)])
    calls.clear()
    known = store.get("acme", "docs")
    assert [chunk.text for chunk in store.search("acme", "docs", axis(0), 1, known)] == ["alpha"]
    made = [operation for operation, _ in calls]  # (the fake answers QueryVectors with moto's own calls)
    assert (made.count("GetVectors"), made.count("QueryVectors")) == (1, 1), made
    other = store.create("other", "docs", docs.embedder, docs.dimensions)
    with pytest.raises(KnowledgeBaseNotFoundError):
        store.search("acme", "nothing", axis(0), 1, other)


def test_a_search_asks_for_chunks_only_with_their_metadata_and_distances(
    store: S3VectorsKnowledgeBaseStore, fake: QueryVectorsFake, docs: KnowledgeBase
) -> None:
    chunks = chunks_of("guide.md", ["alpha", "beta", "gamma"])
    store.replace_source("acme", "docs", "guide.md", chunks, [axis(0), axis(1), axis(2)])

    store.search("acme", "docs", [0.1, 0.9, 0.0, 0.0], top_k=2)

    asked = fake.queries[-1]
    assert (asked["topK"], asked["returnMetadata"], asked["returnDistance"]) == (2, True, True)
    assert asked["filter"] == {"source": {"$exists": True}}  # chunks only: never the record


def test_a_long_source_is_written_and_shrunk_in_requests_within_the_limits(
    store: S3VectorsKnowledgeBaseStore, docs: KnowledgeBase, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    texts = [f"part {n}" for n in range(250)]
    store.replace_source("acme", "docs", "long.md", chunks_of("long.md", texts), [axis(n % 4) for n in range(250)])
    puts = [params for operation, params in calls if operation == "PutVectors"]
    assert [len(params["vectors"]) for params in puts[1:]] == [100, 100, 50]  # after the record's

    store.replace_source("acme", "docs", "long.md", chunks_of("long.md", texts[:30]), [axis(0)] * 30)

    assert store.sources("acme", "docs") == [("long.md", 30)]
    deletes = [params["keys"] for operation, params in calls if operation == "DeleteVectors"]
    assert [len(keys) for keys in deletes] == [100, 100, 20]  # from the top down
    assert deletes[0][-1].endswith(":249") and deletes[-1][0].endswith(":30")


@pytest.mark.parametrize(
    ("operation", "field", "applied", "after", "count", "again"),
    [
        # 120 chunks become 250: the third put (200 to 249) writes only 249, leaving 200 to 248
        # out; 120 again must find 249 beyond the gap (one put of all 250 would leave 120 to 248)
        ("PutVectors", "vectors", lambda vectors: vectors[-1:], 2, 250, 120),
        # 120 chunks become 10: the first delete (20 to 119) leaves 119 alone, 20 to 118 gone; 10
        # again must find 119 beyond the gap (one delete of 10 to 119 would leave 10 to 118 gone)
        ("DeleteVectors", "keys", lambda keys: keys[:-1], 0, 10, 10),
    ],
)
def test_a_replace_cut_short_midway_is_repaired_by_the_next(
    client: Any,
    store: S3VectorsKnowledgeBaseStore,
    docs: KnowledgeBase,
    operation: str,
    field: str,
    applied: Callable[[list[Any]], list[Any]],
    after: int,
    count: int,
    again: int,
) -> None:
    texts = [f"part {n}" for n in range(250)]
    store.replace_source("acme", "docs", "a.md", chunks_of("a.md", texts[:120]), [axis(0)] * 120)
    cut_short(client, operation, field, applied, after)
    with pytest.raises(ConnectionError):
        store.replace_source("acme", "docs", "a.md", chunks_of("a.md", texts[:count]), [axis(1)] * count)
    assert store.sources("acme", "docs") == [("a.md", 201 if operation == "PutVectors" else 21)]

    assert store.replace_source("acme", "docs", "a.md", chunks_of("a.md", texts[:again]), [axis(2)] * again) == again
    assert store.sources("acme", "docs") == [("a.md", again)]
    assert store.remove_source("acme", "docs", "a.md") == again


def test_listings_follow_every_page(
    client: Any, store: S3VectorsKnowledgeBaseStore, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    answer_in_pages(client, "ListIndexes", "indexes", 1)
    answer_in_pages(client, "ListVectors", "vectors", 2)
    made = [store.create("acme", f"kb{n}", EMBEDDER, DIMENSIONS) for n in range(3)]
    store.create("other", "kb0", EMBEDDER, DIMENSIONS)
    store.replace_source("acme", "kb1", "a.md", chunks_of("a.md", ["a0", "a1", "a2"]), [axis(0)] * 3)
    store.replace_source("acme", "kb1", "b.md", chunks_of("b.md", ["b0", "b1"]), [axis(1)] * 2)

    before = len(calls)
    assert store.list("acme") == made
    listing = [operation for operation, _ in calls[before:]]
    assert listing.count("ListIndexes") == 4 and listing.count("GetVectors") == 3  # not other's record
    assert store.sources("acme", "kb1") == [("a.md", 3), ("b.md", 2)]
    assert sum(operation == "ListVectors" for operation, _ in calls) == 3  # 6 vectors with the record


def test_a_record_is_checked_against_the_account_and_name_asked(
    client: Any, store: S3VectorsKnowledgeBaseStore, docs: KnowledgeBase
) -> None:
    """As if two names hashed alike: the index named for other/docs holds acme/docs's record."""
    mine, theirs = _table_name("acme", "docs"), _table_name("other", "docs")
    [record] = client.get_vectors(
        vectorBucketName=BUCKET, indexName=mine, keys=["parley.knowledge_base"], returnData=True, returnMetadata=True
    )["vectors"]
    client.create_index(
        vectorBucketName=BUCKET, indexName=theirs, dataType="float32", dimension=DIMENSIONS, distanceMetric="cosine"
    )
    client.put_vectors(vectorBucketName=BUCKET, indexName=theirs, vectors=[record])

    assert store.get("other", "docs") is None
    assert store.list("other") == []
    assert store.remove("other", "docs") is False
    with pytest.raises(KnowledgeBaseNotFoundError):
        store.search("other", "docs", axis(0), top_k=1)


@pytest.mark.parametrize(
    ("source", "title", "text"),
    [
        ("a.md", "", "x" * 40_000),  # over 40 KB of metadata with the rest
        ("a.md", "é" * 10_000, "é" * 10_000),  # 40,000 bytes of UTF-8 in 20,000 characters
        ("💥" * 600, "", "x"),  # 2,400 bytes: over the 2 KB a vector's filterable metadata may be
    ],
)
def test_a_chunk_over_s3_vectors_metadata_limits_is_refused_before_any_write(
    store: S3VectorsKnowledgeBaseStore, docs: KnowledgeBase, source: str, title: str, text: str
) -> None:
    chunks = [*chunks_of(source, ["fine"]), Chunk(source, 1, 4, 4 + len(text), title, text)]
    with pytest.raises(KnowledgeBaseError, match="S3 Vectors"):
        store.replace_source("acme", "docs", source, chunks, [axis(1), axis(2)])
    assert store.sources("acme", "docs") == []  # not even the first, fine chunk
    assert store.remove_source("acme", "docs", source) == 0


def test_a_chunk_of_parleys_size_fits(store: S3VectorsKnowledgeBaseStore, docs: KnowledgeBase) -> None:
    text = "Ünïcödé 💥 text, " * 70  # ~1,200 characters, ~1,500 bytes
    chunk = Chunk("a" * 1000, 0, 0, len(text), "A heading " * 20, text)
    assert store.replace_source("acme", "docs", chunk.source, [chunk], [axis(3)]) == 1
    [found] = store.search("acme", "docs", axis(3), top_k=1)
    assert (found.source, found.title, found.text, found.score) == (chunk.source, chunk.title, text, pytest.approx(1))


def test_a_knowledge_base_removed_meanwhile_is_not_found(
    client: Any, store: S3VectorsKnowledgeBaseStore, docs: KnowledgeBase
) -> None:
    """Its record read, then its index gone before the write: NotFound, not botocore's error."""

    def remove_first(**_: Any) -> None:
        client.delete_index(vectorBucketName=BUCKET, indexName=_table_name("acme", "docs"))

    client.meta.events.register("before-call.s3vectors.PutVectors", remove_first)
    with pytest.raises(KnowledgeBaseNotFoundError):
        store.replace_source("acme", "docs", "a.md", chunks_of("a.md", ["a0"]), [axis(0)])
