"""Knowledge bases on LanceDB in a temporary folder (and, with moto's server, on S3 with the
DynamoDB commit store): what a store keeps, finds and refuses, and what a second store sees."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from parley.io.knowledge_bases import (
    FoundChunk,
    KnowledgeBase,
    KnowledgeBaseError,
    KnowledgeBaseExistsError,
    KnowledgeBaseNotFoundError,
    KnowledgeBaseStore,
)

DIMENSIONS = 4
EMBEDDER = "builtin:test-4"


@dataclass(frozen=True)
class Chunk:
    source: str
    position: int
    start: int
    end: int
    title: str
    text: str


def axis(index: int, length: int = DIMENSIONS) -> list[float]:
    return [1.0 if i == index else 0.0 for i in range(length)]


def chunks_of(source: str, texts: list[str]) -> list[Chunk]:
    chunks, offset = [], 0
    for position, text in enumerate(texts):
        chunks.append(Chunk(source, position, offset, offset + len(text), f"{source} part {position}", text))
        offset += len(text)
    return chunks


@pytest.fixture
def folder(tmp_path: Path) -> str:
    return str(tmp_path / "knowledge")


@pytest.fixture
def store(folder: str) -> KnowledgeBaseStore:
    return KnowledgeBaseStore(folder)


@pytest.fixture
def docs(store: KnowledgeBaseStore) -> KnowledgeBase:
    return store.create("acme", "docs", EMBEDDER, DIMENSIONS)


def test_importing_the_module_does_not_load_lancedb() -> None:
    code = "import sys, parley.io.knowledge_bases; print(sorted({'lancedb', 'pyarrow', 'numpy'} & set(sys.modules)))"
    assert subprocess.check_output([sys.executable, "-c", code], text=True).strip() == "[]"


def test_a_knowledge_base_is_created_got_listed_and_removed(store: KnowledgeBaseStore) -> None:
    assert store.list("acme") == []
    docs = store.create("acme", "docs", EMBEDDER, DIMENSIONS)
    faq = store.create("acme", "faq", "route:embedder-7", 8)

    assert (docs.account, docs.name, docs.embedder, docs.dimensions) == ("acme", "docs", EMBEDDER, DIMENSIONS)
    assert docs.created_at.endswith("+00:00")
    assert store.get("acme", "docs") == docs
    assert store.list("acme") == [docs, faq]

    assert store.remove("acme", "docs") is True
    assert store.remove("acme", "docs") is False
    assert store.get("acme", "docs") is None
    assert store.list("acme") == [faq]


def test_a_name_is_created_once(store: KnowledgeBaseStore, docs: KnowledgeBase) -> None:
    with pytest.raises(KnowledgeBaseExistsError):
        store.create("acme", "docs", EMBEDDER, 16)
    assert store.get("acme", "docs") == docs


def test_search_finds_the_nearest_chunks_with_what_they_came_with(
    store: KnowledgeBaseStore, docs: KnowledgeBase
) -> None:
    chunks = chunks_of("guide.md", ["alpha", "beta", "gamma"])
    assert store.replace_source("acme", "docs", "guide.md", chunks, [axis(0), axis(1), axis(2)]) == 3

    found = store.search("acme", "docs", [0.1, 0.9, 0.0, 0.0], top_k=2)

    assert [chunk.text for chunk in found] == ["beta", "alpha"]
    assert found[0] == FoundChunk("guide.md", 1, 5, 9, "guide.md part 1", "beta", pytest.approx(0.9939, abs=1e-4))
    assert found[0].score > found[1].score


def test_replacing_a_source_replaces_its_chunks_and_leaves_the_others(
    store: KnowledgeBaseStore, docs: KnowledgeBase
) -> None:
    store.replace_source("acme", "docs", "a.md", chunks_of("a.md", ["a0", "a1", "a2"]), [axis(0)] * 3)
    store.replace_source("acme", "docs", "b.md", chunks_of("b.md", ["b0"]), [axis(1)])

    assert store.replace_source("acme", "docs", "a.md", chunks_of("a.md", ["new a0", "new a1"]), [axis(2)] * 2) == 2

    assert store.sources("acme", "docs") == [("a.md", 2), ("b.md", 1)]
    found = store.search("acme", "docs", axis(2), top_k=10)
    assert sorted(chunk.text for chunk in found) == ["b0", "new a0", "new a1"]

    assert store.replace_source("acme", "docs", "a.md", [], []) == 0
    assert store.sources("acme", "docs") == [("b.md", 1)]


def test_removing_a_source_removes_only_its_chunks(store: KnowledgeBaseStore, docs: KnowledgeBase) -> None:
    store.replace_source("acme", "docs", "a.md", chunks_of("a.md", ["a0", "a1"]), [axis(0)] * 2)
    store.replace_source("acme", "docs", "b.md", chunks_of("b.md", ["b0"]), [axis(1)])

    assert store.remove_source("acme", "docs", "a.md") == 2
    assert store.remove_source("acme", "docs", "a.md") == 0
    assert store.sources("acme", "docs") == [("b.md", 1)]
    assert [chunk.text for chunk in store.search("acme", "docs", axis(0), top_k=5)] == ["b0"]


@pytest.mark.parametrize("tricky", ["it's' OR source != 'x.md", "back\\", "back\\' OR source != '", "%_*", "é 💥"])
def test_a_source_name_is_data_not_a_filter(store: KnowledgeBaseStore, docs: KnowledgeBase, tricky: str) -> None:
    store.replace_source("acme", "docs", "x.md", chunks_of("x.md", ["x0"]), [axis(0)])
    store.replace_source("acme", "docs", tricky, chunks_of(tricky, ["t0"]), [axis(1)])
    assert store.sources("acme", "docs") == sorted([("x.md", 1), (tricky, 1)])

    assert store.remove_source("acme", "docs", tricky) == 1
    assert store.sources("acme", "docs") == [("x.md", 1)]


def test_many_writes_keep_every_chunk(store: KnowledgeBaseStore, docs: KnowledgeBase) -> None:
    for number in range(40):  # enough fragments to be compacted, twice
        source = f"doc-{number}.md"
        store.replace_source("acme", "docs", source, chunks_of(source, [f"{source} 0", f"{source} 1"]), [axis(1)] * 2)
    store.replace_source("acme", "docs", "doc-7.md", chunks_of("doc-7.md", ["only"]), [axis(0)])

    assert store.sources("acme", "docs") == sorted([(f"doc-{n}.md", 1 if n == 7 else 2) for n in range(40)])
    assert [chunk.text for chunk in store.search("acme", "docs", axis(0), top_k=1)] == ["only"]


def test_an_empty_knowledge_base_finds_nothing(store: KnowledgeBaseStore, docs: KnowledgeBase) -> None:
    assert store.search("acme", "docs", axis(0), top_k=5) == []
    assert store.sources("acme", "docs") == []


def test_one_account_never_reaches_another_accounts_knowledge_base(
    store: KnowledgeBaseStore, docs: KnowledgeBase
) -> None:
    store.replace_source("acme", "docs", "a.md", chunks_of("a.md", ["secret"]), [axis(0)])

    assert store.get("other", "docs") is None
    assert store.list("other") == []
    assert store.remove("other", "docs") is False
    for reach in (
        lambda: store.search("other", "docs", axis(0), top_k=1),
        lambda: store.sources("other", "docs"),
        lambda: store.remove_source("other", "docs", "a.md"),
        lambda: store.replace_source("other", "docs", "a.md", chunks_of("a.md", ["x"]), [axis(0)]),
    ):
        with pytest.raises(KnowledgeBaseNotFoundError):
            reach()

    other = store.create("other", "docs", EMBEDDER, DIMENSIONS)
    assert store.search("other", "docs", axis(0), top_k=1) == []
    assert store.list("acme") == [docs] and store.list("other") == [other]
    assert [chunk.text for chunk in store.search("acme", "docs", axis(0), top_k=1)] == ["secret"]


@pytest.mark.parametrize("account", ["Acme Corp/eu", "team:42", "équipe", "../acme", "a" * 256])
def test_any_account_parley_has_keeps_its_own_knowledge_bases(store: KnowledgeBaseStore, account: str) -> None:
    made = store.create(account, "docs", EMBEDDER, DIMENSIONS)
    store.replace_source(account, "docs", "a.md", chunks_of("a.md", ["mine"]), [axis(0)])
    assert store.list(account) == [made] and store.get("acme", "docs") is None
    assert [chunk.text for chunk in store.search(account, "docs", axis(0), top_k=1)] == ["mine"]


@pytest.mark.parametrize(
    ("account", "name"),
    [
        ("acme", ""),
        ("acme", "../docs"),
        ("acme", "a/b"),
        ("acme", ".hidden"),
        ("acme", "with space"),
        ("acme", "quote'"),
        ("acme", "é"),
        ("acme", "x" * 65),
        ("", "docs"),
        ("a\nb", "docs"),
        ("a" * 257, "docs"),
    ],
)
def test_a_bad_account_or_name_is_refused(store: KnowledgeBaseStore, account: str, name: str) -> None:
    with pytest.raises(KnowledgeBaseError):
        store.create(account, name, EMBEDDER, DIMENSIONS)
    with pytest.raises(KnowledgeBaseError):
        store.get(account, name)
    with pytest.raises(KnowledgeBaseError):
        store.search(account, name, axis(0), top_k=1)


@pytest.mark.parametrize("dimensions", [0, -1, 4097, True, 4.0, "4"])
def test_bad_dimensions_are_refused(store: KnowledgeBaseStore, dimensions: Any) -> None:
    with pytest.raises(KnowledgeBaseError):
        store.create("acme", "docs", EMBEDDER, dimensions)
    assert store.get("acme", "docs") is None


@pytest.mark.parametrize(
    "vector",
    [
        [1.0, 0.0, 0.0],
        [1.0, 0.0, 0.0, 0.0, 0.0],
        [float("nan"), 0.0, 0.0, 1.0],
        [float("inf"), 0.0, 0.0, 1.0],
        [1e39, 0.0, 0.0, 1.0],
        [0.0, 0.0, 0.0, 0.0],
        ["a", "b", "c", "d"],
    ],
)
def test_a_bad_vector_is_refused_and_changes_nothing(
    store: KnowledgeBaseStore, docs: KnowledgeBase, vector: list[Any]
) -> None:
    store.replace_source("acme", "docs", "a.md", chunks_of("a.md", ["a0"]), [axis(0)])
    new = chunks_of("a.md", ["new a0", "new a1"])
    with pytest.raises(KnowledgeBaseError):
        store.replace_source("acme", "docs", "a.md", new, [axis(1), vector])
    with pytest.raises(KnowledgeBaseError):
        store.search("acme", "docs", vector, top_k=1)
    assert store.sources("acme", "docs") == [("a.md", 1)]


def test_bad_chunks_and_counts_are_refused(store: KnowledgeBaseStore, docs: KnowledgeBase) -> None:
    refusals = [
        lambda: store.replace_source("acme", "docs", "a.md", chunks_of("a.md", ["a0", "a1"]), [axis(0)]),
        lambda: store.replace_source("acme", "docs", "a.md", chunks_of("b.md", ["b0"]), [axis(0)]),
        lambda: store.replace_source("acme", "docs", "", chunks_of("", ["x"]), [axis(0)]),
        lambda: store.replace_source("acme", "docs", "a\nb", chunks_of("a\nb", ["x"]), [axis(0)]),
        lambda: store.replace_source("acme", "docs", "a.md", [Chunk("a.md", 0, 0, 1, "t", None)], [axis(0)]),  # type: ignore[arg-type]
        lambda: store.replace_source("acme", "docs", "a.md", [Chunk("a.md", -1, 0, 1, "t", "x")], [axis(0)]),
        lambda: store.replace_source("acme", "docs", "a.md", [Chunk("a.md", 0, 5, 1, "t", "x")], [axis(0)]),
        lambda: store.replace_source("acme", "docs", "a.md", [Chunk("a.md", True, 0, 1, "t", "x")], [axis(0)]),
        lambda: store.search("acme", "docs", axis(0), top_k=0),
        lambda: store.search("acme", "docs", axis(0), top_k=101),
    ]
    for refusal in refusals:
        with pytest.raises(KnowledgeBaseError):
            refusal()
    assert store.sources("acme", "docs") == []


def test_another_store_on_the_same_folder_sees_every_write(folder: str) -> None:
    writer, reader = KnowledgeBaseStore(folder), KnowledgeBaseStore(folder)
    writer.create("acme", "docs", EMBEDDER, DIMENSIONS)
    writer.replace_source("acme", "docs", "a.md", chunks_of("a.md", ["first"]), [axis(0)])
    assert [chunk.text for chunk in reader.search("acme", "docs", axis(0), top_k=1)] == ["first"]

    writer.replace_source("acme", "docs", "a.md", chunks_of("a.md", ["second"]), [axis(0)])
    assert [chunk.text for chunk in reader.search("acme", "docs", axis(0), top_k=1)] == ["second"]

    writer.remove("acme", "docs")
    assert reader.get("acme", "docs") is None
    with pytest.raises(KnowledgeBaseNotFoundError):
        reader.search("acme", "docs", axis(0), top_k=1)

    again = writer.create("acme", "docs", "route:bigger", 8)
    assert reader.get("acme", "docs") == again
    assert reader.search("acme", "docs", axis(0, 8), top_k=1) == []


@pytest.fixture
def s3_with_commit_store() -> Iterator[tuple[str, dict[str, str], Any]]:
    """moto's server as S3 and DynamoDB: a bucket, and the commit table LanceDB's s3+ddb:// expects."""
    pytest.importorskip("moto.server")
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        credentials = {"region_name": "us-east-1", "aws_access_key_id": "test", "aws_secret_access_key": "test"}
        boto3.client("s3", endpoint_url=endpoint, **credentials).create_bucket(Bucket="parley-knowledge")
        dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, **credentials)
        dynamodb.create_table(
            TableName="parley-knowledge-commits",
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[
                {"AttributeName": "base_uri", "KeyType": "HASH"},
                {"AttributeName": "version", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "base_uri", "AttributeType": "S"},
                {"AttributeName": "version", "AttributeType": "N"},
            ],
        )
        options = {
            "aws_endpoint": endpoint,
            "dynamodb_endpoint": endpoint,
            "aws_region": "us-east-1",
            "aws_access_key_id": "test",
            "aws_secret_access_key": "test",
            "allow_http": "true",
        }
        yield "s3+ddb://parley-knowledge/kb?ddbTableName=parley-knowledge-commits", options, dynamodb
    finally:
        server.stop()


def test_two_writers_on_s3_with_the_dynamodb_commit_store(
    s3_with_commit_store: tuple[str, dict[str, str], Any],
) -> None:
    uri, options, dynamodb = s3_with_commit_store
    first, second = (KnowledgeBaseStore(uri, options, read_consistency_seconds=0) for _ in range(2))
    docs = first.create("acme", "docs", EMBEDDER, DIMENSIONS)

    first.replace_source("acme", "docs", "a.md", chunks_of("a.md", ["from the first"]), [axis(0)])
    second.replace_source("acme", "docs", "b.md", chunks_of("b.md", ["from the second"]), [axis(1)])

    reader = KnowledgeBaseStore(uri, options)
    assert reader.list("acme") == [docs]
    assert reader.sources("acme", "docs") == [("a.md", 1), ("b.md", 1)]
    assert [chunk.text for chunk in reader.search("acme", "docs", axis(1), top_k=1)] == ["from the second"]
    assert [chunk.text for chunk in first.search("acme", "docs", axis(1), top_k=1)] == ["from the second"]
    commits = dynamodb.scan(TableName="parley-knowledge-commits")["Items"]
    assert sorted(int(item["version"]["N"]) for item in commits) == [1, 2, 3]  # create, then one per writer
