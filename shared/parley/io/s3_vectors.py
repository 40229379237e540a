"""Knowledge bases on Amazon S3 Vectors: `KnowledgeBaseStore`'s interface, through boto3 alone, for
AWS Lambda (whose layer LanceDB does not fit: knowledge_bases.py).

A knowledge base is one vector index of the store's vector bucket (float32, cosine, the record's
dimensions), named as the LanceDB store names its table, `kb-<16 hex>-<24 hex>` from hashes of the
account and of the account and name: 44 of the 3 to 63 lowercase letters, digits, hyphens and dots
an index name may have. No name reaches AWS, and an account's indexes share a prefix.

    vector       key                       data           metadata
    the record   parley.knowledge_base     (1, 0, …, 0)   knowledge_base: the KnowledgeBase as JSON
    a chunk      <source digest>:<index>   its vector     source (filterable); position, start,
                                                          end, title, text (not filterable)

Every operation reads the record first (GetVectors) and checks its account and name. create is
two requests (CreateIndex, then the record): an index without its record is no knowledge base
(get gives None, list leaves it out), and create refuses its name until `remove` drops it. A
search asks for chunks only (`source` exists), so the record is never found.

S3 Vectors' limits: metadata of 40 KB a vector, 2 KB of it filterable (read as 40,000 and 2,000
bytes of compact UTF-8 JSON, the safer reading): replace_source refuses a source of more than
~2,000 bytes, or a chunk whose metadata is over 40,000 (a title and text of ~40,000 characters;
Parley's chunks are ~1,000), with a KnowledgeBaseError and before writing anything. Requests:
PutVectors and DeleteVectors at most 500 vectors (and 20 MiB), GetVectors 100, topK 100.

replace_source is not atomic, unlike LanceDB's one commit: it puts the new chunks (keys 0 to n-1,
overwriting the old ones of the same keys), then deletes the keys from n on that are still there,
found by GetVectors of `<digest>:n`, … in windows of 100 until one finds none. A search meanwhile
can see new chunks beside old ones. The window finds every key because writes keep a source's
keys `0…p-1` plus at most a window's width beyond: puts go upward and deletions downward, 100
consecutive keys a request, so even a request applied in part and cut short leaves them so, and
running the replace again (or remove_source) clears what it left.

IAM, on arn:aws:s3vectors:<region>:<account>:bucket/<bucket>/index/kb-*: a request's search needs
s3vectors:GetVectors and s3vectors:QueryVectors (GetVectors too because the query filters and
returns metadata); the CLI's writes need GetIndex, CreateIndex, DeleteIndex, PutVectors,
DeleteVectors, GetVectors, ListVectors, and ListIndexes on the bucket itself.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import re
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from botocore.exceptions import ClientError

from .knowledge_bases import (
    _RECORD_KEY,
    ChunkLike,
    FoundChunk,
    KnowledgeBase,
    KnowledgeBaseError,
    _account_prefix,
    _check_account,
    _check_names,
    _check_replacement,
    _check_source,
    _check_top_k,
    _chunk_key_prefix,
    _float32_vectors,
    _missing,
    _new_knowledge_base,
    _record_from_text,
    _record_text,
    _table_name,
    _taken,
)

__all__ = ["MAX_FILTERABLE_METADATA_BYTES", "MAX_METADATA_BYTES", "S3VectorsKnowledgeBaseStore"]

MAX_METADATA_BYTES = 40_000  # S3 Vectors: 40 KB a vector, filterable and not
MAX_FILTERABLE_METADATA_BYTES = 2_000  # of which filterable 2 KB
_BATCH = 100  # consecutive keys a request (GetVectors takes 100; PutVectors, DeleteVectors 500)
_MAX_REQUEST_BYTES = 20 * 1024 * 1024 - 64 * 1024  # PutVectors' 20 MiB, less room for the rest
_RECORD = _RECORD_KEY.decode()
_NON_FILTERABLE = ("position", "start", "end", "title", "text", "knowledge_base")
_CHUNKS_ONLY = {"source": {"$exists": True}}
_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")


class S3VectorsKnowledgeBaseStore:
    """Knowledge bases in the vector bucket `vector_bucket`, which must exist. `client`: a boto3
    "s3vectors" client, made on first use if not given (its region and credentials the
    environment's). Errors of S3 Vectors other than a missing index or name (throttling, access,
    a missing bucket) come out as botocore's ClientError."""

    def __init__(self, vector_bucket: str, client: Any | None = None) -> None:
        if not isinstance(vector_bucket, str) or not _BUCKET.fullmatch(vector_bucket):
            raise KnowledgeBaseError(f"a vector bucket's name must match {_BUCKET.pattern}, not {vector_bucket!r}")
        self.vector_bucket = vector_bucket
        self._s3vectors = client
        self._making_client = threading.Lock()

    def create(self, account: str, name: str, embedder: str, dimensions: int) -> KnowledgeBase:
        kb = _new_knowledge_base(account, name, embedder, dimensions)
        index = _table_name(account, name)
        if self._index_exists(index):  # S3 Vectors refuses a second CreateIndex, moto overwrites
            raise _taken(account, name)
        try:
            self._client().create_index(
                vectorBucketName=self.vector_bucket,
                indexName=index,
                dataType="float32",
                dimension=kb.dimensions,
                distanceMetric="cosine",
                metadataConfiguration={"nonFilterableMetadataKeys": list(_NON_FILTERABLE)},
            )
        except ClientError as error:
            if _code(error) == "ConflictException":  # made since GetIndex looked
                raise _taken(account, name) from error
            raise
        try:
            self._put(index, [_record_vector(kb)], account, name)
        except BaseException:
            with contextlib.suppress(ClientError):  # else `remove` drops it
                self._delete_index(index)
            raise
        return kb

    def get(self, account: str, name: str) -> KnowledgeBase | None:
        _check_names(account, name)
        kb = self._record_at(_table_name(account, name))
        return kb if kb is not None and (kb.account, kb.name) == (account, name) else None

    def list(self, account: str) -> list[KnowledgeBase]:
        _check_account(account)
        prefix = _account_prefix(account)
        listing = self._client().get_paginator("list_indexes")
        found = []
        for page in listing.paginate(vectorBucketName=self.vector_bucket, prefix=prefix):
            for index in page["indexes"]:
                if index["indexName"].startswith(prefix):  # as S3 Vectors does (moto ignores the prefix)
                    kb = self._record_at(index["indexName"])
                    if kb is not None and kb.account == account:
                        found.append(kb)
        return sorted(found, key=lambda kb: kb.name)

    def remove(self, account: str, name: str) -> bool:
        """Drops the knowledge base's index (one left without its record too)."""
        _check_names(account, name)
        index = _table_name(account, name)
        kb = self._record_at(index)
        if kb is not None and (kb.account, kb.name) != (account, name):
            return False
        return self._delete_index(index)

    def replace_source(
        self,
        account: str,
        name: str,
        source: str,
        chunks: Sequence[ChunkLike],
        vectors: Sequence[Sequence[float]],
    ) -> int:
        """The source's chunks become these: the new put, then the old beyond them deleted, in
        several requests (not atomic: the module's docstring)."""
        _check_replacement(account, name, source, chunks, vectors)
        kb, index = self._knowledge_base(account, name)
        rows = _float32_vectors(vectors, kb.dimensions) if chunks else []
        prefix = _chunk_key_prefix(source)
        put = [_chunk_vector(f"{prefix}{i}", chunk, rows[i]) for i, chunk in enumerate(chunks)]
        for start in range(0, len(put), _BATCH):  # upward, `_BATCH` consecutive keys a request at most
            for request in _within_request_size(put[start : start + _BATCH]):
                self._put(index, request, account, name)
        stale = self._positions_from(index, prefix, len(chunks), account, name)
        self._delete_downward(index, prefix, stale, account, name)
        return len(chunks)

    def remove_source(self, account: str, name: str, source: str) -> int:
        _check_names(account, name)
        _check_source(source)
        _, index = self._knowledge_base(account, name)
        prefix = _chunk_key_prefix(source)
        positions = self._positions_from(index, prefix, 0, account, name)
        self._delete_downward(index, prefix, positions, account, name)
        return len(positions)

    def sources(self, account: str, name: str) -> list[tuple[str, int]]:
        """Each source with its count of chunks, by source (a listing of every chunk)."""
        _check_names(account, name)
        _, index = self._knowledge_base(account, name)
        counts: Counter[str] = Counter()
        listing = self._client().get_paginator("list_vectors")
        try:
            for page in listing.paginate(vectorBucketName=self.vector_bucket, indexName=index, returnMetadata=True):
                counts.update(vector["metadata"]["source"] for vector in page["vectors"] if vector["key"] != _RECORD)
        except ClientError as error:
            raise _translated(error, account, name) from error
        return sorted(counts.items())

    def search(
        self, account: str, name: str, vector: Sequence[float], top_k: int, known: KnowledgeBase | None = None
    ) -> list[FoundChunk]:
        """The `top_k` chunks closest to `vector` (cosine), closest first. `known`: the record
        `get` has just read for this account and name (a request's retrieval), not read again."""
        _check_names(account, name)
        _check_top_k(top_k)
        if known is not None and (known.account, known.name) == (account, name):
            kb, index = known, _table_name(account, name)
        else:
            kb, index = self._knowledge_base(account, name)
        [row] = _float32_vectors([vector], kb.dimensions)
        try:
            answer = self._client().query_vectors(
                vectorBucketName=self.vector_bucket,
                indexName=index,
                topK=top_k,
                queryVector={"float32": row.tolist()},
                filter=_CHUNKS_ONLY,
                returnMetadata=True,
                returnDistance=True,
            )
        except ClientError as error:
            raise _translated(error, account, name) from error
        return [_found(found) for found in answer["vectors"]]

    def _client(self) -> Any:
        if self._s3vectors is None:
            with self._making_client:  # boto3's default session is not safe to share while it makes one
                if self._s3vectors is None:
                    import boto3

                    self._s3vectors = boto3.client("s3vectors")
        return self._s3vectors

    def _knowledge_base(self, account: str, name: str) -> tuple[KnowledgeBase, str]:
        index = _table_name(account, name)
        kb = self._record_at(index)
        if kb is None or (kb.account, kb.name) != (account, name):
            raise _missing(account, name)
        return kb, index

    def _record_at(self, index: str) -> KnowledgeBase | None:
        try:
            answer = self._client().get_vectors(
                vectorBucketName=self.vector_bucket, indexName=index, keys=[_RECORD], returnMetadata=True
            )
        except ClientError as error:
            if _code(error) == "NotFoundException":
                return None
            raise
        for vector in answer["vectors"]:
            text = (vector.get("metadata") or {}).get("knowledge_base")
            if vector["key"] == _RECORD and isinstance(text, str):
                return _record_from_text(text)
        return None

    def _index_exists(self, index: str) -> bool:
        try:
            self._client().get_index(vectorBucketName=self.vector_bucket, indexName=index)
        except ClientError as error:
            if _code(error) == "NotFoundException":
                return False
            raise
        return True

    def _delete_index(self, index: str) -> bool:
        try:
            self._client().delete_index(vectorBucketName=self.vector_bucket, indexName=index)
        except ClientError as error:
            if _code(error) == "NotFoundException":
                return False
            raise
        return True

    def _put(self, index: str, vectors: list[dict[str, Any]], account: str, name: str) -> None:
        try:
            self._client().put_vectors(vectorBucketName=self.vector_bucket, indexName=index, vectors=vectors)
        except ClientError as error:
            raise _translated(error, account, name) from error

    def _positions_from(self, index: str, prefix: str, start: int, account: str, name: str) -> list[int]:
        """The source's positions from `start` that are in the index, a window of keys at a time
        until one finds none."""
        positions: list[int] = []
        low = start
        while True:
            keys = [f"{prefix}{i}" for i in range(low, low + _BATCH)]
            try:
                answer = self._client().get_vectors(vectorBucketName=self.vector_bucket, indexName=index, keys=keys)
            except ClientError as error:
                raise _translated(error, account, name) from error
            present = {vector["key"] for vector in answer["vectors"]}
            if not present:
                return positions
            positions.extend(i for i in range(low, low + _BATCH) if f"{prefix}{i}" in present)
            low += _BATCH

    def _delete_downward(self, index: str, prefix: str, positions: list[int], account: str, name: str) -> None:
        """Deletes from the highest position down, positions within `_BATCH` of each other a
        request, so that what a failure leaves is what `_positions_from` finds all of."""
        remaining = sorted(positions)
        while remaining:
            cut = bisect.bisect_right(remaining, remaining[-1] - _BATCH)
            keys = [f"{prefix}{i}" for i in remaining[cut:]]
            del remaining[cut:]
            try:
                self._client().delete_vectors(vectorBucketName=self.vector_bucket, indexName=index, keys=keys)
            except ClientError as error:
                raise _translated(error, account, name) from error


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _translated(error: ClientError, account: str, name: str) -> Exception:
    """A missing index, once its record was read, is a knowledge base removed meanwhile."""
    return _missing(account, name) if _code(error) == "NotFoundException" else error


def _record_vector(kb: KnowledgeBase) -> dict[str, Any]:
    direction = [1.0] + [0.0] * (kb.dimensions - 1)  # any but zeros, which cosine refuses
    return {"key": _RECORD, "data": {"float32": direction}, "metadata": {"knowledge_base": _record_text(kb)}}


def _chunk_vector(key: str, chunk: ChunkLike, row: Any) -> dict[str, Any]:
    """The chunk as PutVectors takes it, refused if its metadata is over S3 Vectors' limits."""
    filterable = {"source": chunk.source}
    metadata = {**filterable, "position": chunk.position, "start": chunk.start, "end": chunk.end}
    metadata.update(title=chunk.title, text=chunk.text)
    if (size := _metadata_bytes(filterable)) > MAX_FILTERABLE_METADATA_BYTES:
        raise KnowledgeBaseError(
            f"a source is at most {MAX_FILTERABLE_METADATA_BYTES} bytes of S3 Vectors' filterable metadata, not {size}"
        )
    if (size := _metadata_bytes(metadata)) > MAX_METADATA_BYTES:
        raise KnowledgeBaseError(
            f"chunk {chunk.position} of {chunk.source!r} is {size} bytes of S3 Vectors metadata with its title "
            f"and text, over the {MAX_METADATA_BYTES} a vector may have"
        )
    return {"key": key, "data": {"float32": row.tolist()}, "metadata": metadata}


def _metadata_bytes(metadata: dict[str, Any]) -> int:
    return len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode())


def _within_request_size(vectors: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Consecutive runs of `vectors` of at most `_MAX_REQUEST_BYTES` as botocore writes them (100
    vectors of 4,096 dimensions and ~1,000 characters are ~9 MB: one run unless near the limits)."""
    run: list[dict[str, Any]] = []
    size = 0
    for vector in vectors:
        length = len(json.dumps(vector)) + 2
        if run and size + length > _MAX_REQUEST_BYTES:
            yield run
            run, size = [], 0
        run.append(vector)
        size += length
    if run:
        yield run


def _found(vector: dict[str, Any]) -> FoundChunk:
    metadata = vector["metadata"]
    return FoundChunk(
        source=metadata["source"],
        position=int(metadata["position"]),
        start=int(metadata["start"]),
        end=int(metadata["end"]),
        title=metadata["title"],
        text=metadata["text"],
        score=1.0 - float(vector["distance"]),  # S3 Vectors' cosine distance is 1 - similarity
    )
