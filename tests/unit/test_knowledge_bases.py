"""Knowledge bases on LanceDB: the contract every store keeps (knowledge_base_contract.py), here in
a temporary folder, and what is LanceDB's own: a lazy import, compaction of many writes, and two
writers on S3 with the DynamoDB commit store. The commit table is on DynamoDB Local, as all of
the suite's DynamoDB is; S3 is moto's server, a mock, because no S3-compatible server can be
installed from the registries this project reaches (neither MinIO's nor Adobe S3Mock's host
resolves; docs/rag.md)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from parley.io.knowledge_bases import KnowledgeBase, KnowledgeBaseStore
from tests.unit.knowledge_base_contract import DIMENSIONS, EMBEDDER, KnowledgeBaseContract, axis, chunks_of


@pytest.fixture
def folder(tmp_path: Path) -> str:
    return str(tmp_path / "knowledge")


@pytest.fixture
def store(folder: str) -> KnowledgeBaseStore:
    return KnowledgeBaseStore(folder)


@pytest.fixture
def another_store(folder: str) -> KnowledgeBaseStore:
    return KnowledgeBaseStore(folder)


@pytest.fixture
def docs(store: KnowledgeBaseStore) -> KnowledgeBase:
    return store.create("acme", "docs", EMBEDDER, DIMENSIONS)


class TestKnowledgeBaseContract(KnowledgeBaseContract):
    """Every store's contract, on LanceDB in a folder."""


def test_importing_the_module_does_not_load_lancedb() -> None:
    code = "import sys, parley.io.knowledge_bases; print(sorted({'lancedb', 'pyarrow', 'numpy'} & set(sys.modules)))"
    assert subprocess.check_output([sys.executable, "-c", code], text=True).strip() == "[]"


def test_many_writes_keep_every_chunk(store: KnowledgeBaseStore, docs: KnowledgeBase) -> None:
    for number in range(40):  # enough fragments to be compacted, twice
        source = f"doc-{number}.md"
        store.replace_source("acme", "docs", source, chunks_of(source, [f"{source} 0", f"{source} 1"]), [axis(1)] * 2)
    store.replace_source("acme", "docs", "doc-7.md", chunks_of("doc-7.md", ["only"]), [axis(0)])

    assert store.sources("acme", "docs") == sorted([(f"doc-{n}.md", 1 if n == 7 else 2) for n in range(40)])
    assert [chunk.text for chunk in store.search("acme", "docs", axis(0), top_k=1)] == ["only"]


@pytest.fixture
def s3_with_commit_store(dynamodb: Any) -> Iterator[tuple[str, dict[str, str], str]]:
    """moto's server as S3 (a bucket) and DynamoDB Local holding the commit table LanceDB's
    s3+ddb:// expects."""
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
        table = f"parley-knowledge-commits-{uuid.uuid4().hex[:8]}"
        dynamodb.create_table(
            TableName=table,
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
        dynamodb.get_waiter("table_exists").wait(TableName=table)
        options = {
            "aws_endpoint": endpoint,
            "dynamodb_endpoint": dynamodb.meta.endpoint_url,
            "aws_region": "us-east-1",
            "aws_access_key_id": "test",
            "aws_secret_access_key": "test",
            "allow_http": "true",
        }
        yield f"s3+ddb://parley-knowledge/kb?ddbTableName={table}", options, table
    finally:
        server.stop()


def test_two_writers_on_s3_with_the_dynamodb_commit_store(
    s3_with_commit_store: tuple[str, dict[str, str], str], dynamodb: Any
) -> None:
    uri, options, table = s3_with_commit_store
    first, second = (KnowledgeBaseStore(uri, options, read_consistency_seconds=0) for _ in range(2))
    docs = first.create("acme", "docs", EMBEDDER, DIMENSIONS)

    first.replace_source("acme", "docs", "a.md", chunks_of("a.md", ["from the first"]), [axis(0)])
    second.replace_source("acme", "docs", "b.md", chunks_of("b.md", ["from the second"]), [axis(1)])

    reader = KnowledgeBaseStore(uri, options)
    assert reader.list("acme") == [docs]
    assert reader.sources("acme", "docs") == [("a.md", 1), ("b.md", 1)]
    assert [chunk.text for chunk in reader.search("acme", "docs", axis(1), top_k=1)] == ["from the second"]
    assert [chunk.text for chunk in first.search("acme", "docs", axis(1), top_k=1)] == ["from the second"]
    commits = dynamodb.scan(TableName=table)["Items"]
    assert sorted(int(item["version"]["N"]) for item in commits) == [1, 2, 3]  # create, then one per writer
