"""Knowledge bases: an account's texts in chunks, each with its vector, searched by similarity.

Two engines serve the one interface, chosen by `knowledge_base_store(uri)`:

    s3vectors://<vector bucket>      Amazon S3 Vectors through boto3 (s3_vectors.py): in AWS Lambda
    anything else                    LanceDB, embedded (`KnowledgeBaseStore`, below): the local stack,
                                     the CLI, any host where the package fits

LanceDB cannot be in the Lambda layer: with pyarrow it is 365 MB for arm64 and Python 3.13,
against Lambda's 250 MB for a function and its layers; S3 Vectors needs nothing beyond boto3.

On LanceDB: in a folder, on S3 (`s3://bucket/prefix`), or on S3 with more than one writer
(`s3+ddb://bucket/prefix?ddbTableName=T`, commits through a DynamoDB table keyed by `base_uri` (S)
and `version` (N)). LanceDB is imported on first use, not with this module (nor is boto3): a
request that retrieves nothing never loads it.

A knowledge base is one table, whose schema metadata holds its record (`KnowledgeBase`): it is
made and removed in one commit, and there is no catalog to keep in step. The table is named from
hashes of the account and of the account and name (`kb-<16 hex>-<24 hex>`), so no name reaches a
path and no account can name another's table; the record's account and name are checked too.
(On S3 Vectors the same name is an index's, and a record vector in it holds the record.)

    KnowledgeBaseError                  bad names, dimensions, vectors or chunks
    ├── KnowledgeBaseExistsError        create: the account has one of that name already
    └── KnowledgeBaseNotFoundError      the account has none of that name
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from array import array
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..core.policy import KNOWLEDGE_BASE_NAME

if TYPE_CHECKING:
    from .s3_vectors import S3VectorsKnowledgeBaseStore

__all__ = [
    "MAX_DIMENSIONS",
    "MAX_TOP_K",
    "ChunkLike",
    "FoundChunk",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "KnowledgeBaseExistsError",
    "KnowledgeBaseNotFoundError",
    "KnowledgeBaseStore",
    "knowledge_base_store",
]

MAX_DIMENSIONS = 4096
MAX_TOP_K = 100
MAX_SOURCE_LENGTH = 1024
MAX_EMBEDDER_LENGTH = 256
MAX_ACCOUNT_LENGTH = 256
_NAME = KNOWLEDGE_BASE_NAME
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RECORD_KEY = b"parley.knowledge_base"
_FIELDS = ("source", "position", "start", "end", "title", "text")
# Each write adds a fragment, and a search scans them all: 10k chunks written as 100 sources are
# searched in 22 ms, in 11.5 ms once compacted into one fragment (which takes 70 ms).
_COMPACT_AT_FRAGMENTS = 16

T = TypeVar("T")


class KnowledgeBaseError(Exception):
    pass


class KnowledgeBaseExistsError(KnowledgeBaseError):
    pass


class KnowledgeBaseNotFoundError(KnowledgeBaseError):
    pass


@dataclass(frozen=True, slots=True)
class KnowledgeBase:
    account: str
    name: str
    embedder: str  # "builtin:wordllama-256", "route:<model>"
    dimensions: int
    created_at: str  # RFC 3339


@dataclass(frozen=True, slots=True)
class FoundChunk:
    source: str
    position: int
    start: int
    end: int
    title: str
    text: str
    score: float  # cosine similarity: higher is closer


class ChunkLike(Protocol):
    @property
    def source(self) -> str: ...
    @property
    def position(self) -> int: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def title(self) -> str: ...
    @property
    def text(self) -> str: ...


@functools.cache
def _engine() -> SimpleNamespace:
    import lancedb
    import numpy
    import pyarrow

    return SimpleNamespace(lancedb=lancedb, np=numpy, pa=pyarrow)


# What both engines check, name and write alike (s3_vectors.py imports these): pure, no engine.


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _account_prefix(account: str) -> str:
    return f"kb-{_digest(account)[:16]}-"


def _table_name(account: str, name: str) -> str:
    return _account_prefix(account) + _digest(f"{account}/{name}")[:24]  # "/" is in neither name


def _chunk_key_prefix(source: str) -> str:
    """A source's chunks are keyed `<this><index>`, index 0 to n-1 in the order given."""
    return _digest(source)[:32] + ":"


def _missing(account: str, name: str) -> KnowledgeBaseNotFoundError:
    return KnowledgeBaseNotFoundError(f"account {account} has no knowledge base {name}")


def _taken(account: str, name: str) -> KnowledgeBaseExistsError:
    return KnowledgeBaseExistsError(f"account {account} has a knowledge base {name} already")


def _check_account(account: str) -> None:
    """Any account Parley has (it only ever reaches a table name hashed)."""
    if not isinstance(account, str) or not 0 < len(account) <= MAX_ACCOUNT_LENGTH or _CONTROL.search(account):
        raise KnowledgeBaseError(f"an account is 1 to {MAX_ACCOUNT_LENGTH} characters, no control characters")


def _check_names(account: str, name: str) -> None:
    _check_account(account)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise KnowledgeBaseError(f"a knowledge base's name must match {_NAME.pattern}, not {name!r}")


def _check_source(source: str) -> None:
    if not isinstance(source, str) or not source or len(source) > MAX_SOURCE_LENGTH or _CONTROL.search(source):
        raise KnowledgeBaseError(f"a source is 1 to {MAX_SOURCE_LENGTH} characters, none of them control characters")


def _check_top_k(top_k: int) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 0 < top_k <= MAX_TOP_K:
        raise KnowledgeBaseError(f"top_k must be an integer from 1 to {MAX_TOP_K}")


def _new_knowledge_base(account: str, name: str, embedder: str, dimensions: int) -> KnowledgeBase:
    """The record of a knowledge base about to be made, its arguments checked."""
    _check_names(account, name)
    if not isinstance(embedder, str) or not 0 < len(embedder) <= MAX_EMBEDDER_LENGTH or _CONTROL.search(embedder):
        raise KnowledgeBaseError(f"an embedder is 1 to {MAX_EMBEDDER_LENGTH} characters, no control characters")
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 0 < dimensions <= MAX_DIMENSIONS:
        raise KnowledgeBaseError(f"dimensions must be an integer from 1 to {MAX_DIMENSIONS}")
    created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return KnowledgeBase(account, name, embedder, dimensions, created_at)


def _record_text(kb: KnowledgeBase) -> str:
    return json.dumps(asdict(kb))


def _record_from_text(text: str) -> KnowledgeBase:
    return KnowledgeBase(**json.loads(text))


def _check_chunk(chunk: ChunkLike) -> None:
    offsets = (chunk.position, chunk.start, chunk.end)
    if not all(isinstance(value, int) and not isinstance(value, bool) and value >= 0 for value in offsets):
        raise KnowledgeBaseError(f"a chunk's position, start and end are integers from 0, not {offsets}")
    if chunk.start > chunk.end:
        raise KnowledgeBaseError(f"a chunk starts at or before its end, not at {chunk.start} after {chunk.end}")
    if not isinstance(chunk.title, str) or not isinstance(chunk.text, str):
        raise KnowledgeBaseError("a chunk's title and text are strings")


def _check_replacement(
    account: str, name: str, source: str, chunks: Sequence[ChunkLike], vectors: Sequence[Sequence[float]]
) -> None:
    """replace_source's arguments, all but the vectors (whose dimensions are the record's)."""
    _check_names(account, name)
    _check_source(source)
    if len(chunks) != len(vectors):
        raise KnowledgeBaseError(f"{len(chunks)} chunks but {len(vectors)} vectors")
    if any(getattr(chunk, "source", None) != source for chunk in chunks):
        raise KnowledgeBaseError(f"every chunk must come from source {source!r}")
    for chunk in chunks:
        _check_chunk(chunk)


def _float32_vectors(vectors: Sequence[Sequence[float]], dimensions: int) -> list[array[float]]:
    """The vectors as float32 rows, each of `dimensions` finite values, none all zeros (cosine
    distance has no meaning for it). Beyond float32's range becomes infinity, refused here."""
    try:
        rows = [array("f", _not_text(vector)) for vector in vectors]
    except (TypeError, ValueError) as error:
        raise KnowledgeBaseError(f"vectors must be lists of {dimensions} numbers") from error
    for row in rows:
        if len(row) != dimensions:
            raise KnowledgeBaseError(f"vectors must have {dimensions} dimensions, not {len(row)}")
        # finite float32 values sum to a finite double (4096 * 3.4e38 is far below 1.8e308): a sum
        # in C instead of a test of each value
        if not math.isfinite(sum(row)):
            raise KnowledgeBaseError("vectors must be finite (no NaN or infinity, nor beyond float32)")
        if not any(row):
            raise KnowledgeBaseError("a vector of zeros has no direction to compare")
    return rows


def _not_text(vector: Sequence[float]) -> Sequence[float]:
    if isinstance(vector, (str, bytes, bytearray)):  # array() would take bytes as raw floats
        raise TypeError("a vector is a sequence of numbers")
    return vector


# LanceDB's own.


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _vectors(vectors: Sequence[Sequence[float]], dimensions: int) -> Any:
    """The vectors as one float32 matrix (checked by `_float32_vectors`)."""
    rows = _float32_vectors(vectors, dimensions)
    np = _engine().np
    return np.frombuffer(b"".join(rows), dtype=np.float32).reshape(len(rows), dimensions)


def _schema(kb: KnowledgeBase) -> Any:
    pa = _engine().pa
    columns = [
        ("key", pa.string()),  # <source's digest>:<index>, what replace_source merges on
        ("source", pa.string()),
        ("position", pa.int64()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("title", pa.string()),
        ("text", pa.string()),
        ("vector", pa.list_(pa.float32(), kb.dimensions)),
    ]
    return pa.schema(
        [pa.field(name, kind, nullable=False) for name, kind in columns],
        metadata={_RECORD_KEY: _record_text(kb)},
    )


def _record(schema: Any) -> KnowledgeBase | None:
    raw = (schema.metadata or {}).get(_RECORD_KEY)
    return _record_from_text(raw) if raw is not None else None


def _rows(kb: KnowledgeBase, source: str, chunks: Sequence[ChunkLike], matrix: Any) -> Any:
    pa = _engine().pa
    prefix = _chunk_key_prefix(source)
    columns: dict[str, Any] = {"key": [f"{prefix}{index}" for index in range(len(chunks))]}
    for field in _FIELDS:
        columns[field] = [getattr(chunk, field) for chunk in chunks]
    columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), kb.dimensions)
    return pa.Table.from_pydict(columns, schema=_schema(kb))


def _compact_if_fragmented(handle: Any) -> None:
    if handle.stats()["fragment_stats"]["num_fragments"] >= _COMPACT_AT_FRAGMENTS:
        handle.optimize()  # old versions stay for LanceDB's 7 days: a reader on one is not cut off


class KnowledgeBaseStore:
    """Knowledge bases at `uri`: a folder, `s3://bucket/prefix`, or
    `s3+ddb://bucket/prefix?ddbTableName=T` for concurrent writers (`storage_options`: LanceDB's,
    such as `region`, `aws_endpoint`, `dynamodb_endpoint`, `allow_http`).

    Tables stay open for the store's life. A table open here sees another process's writes once
    `read_consistency_seconds` have passed since its last check: by default at once in a folder
    (the check is a directory listing), within 10 s on S3 (each check is a request to S3).
    """

    def __init__(
        self,
        uri: str,
        storage_options: dict[str, str] | None = None,
        *,
        read_consistency_seconds: float | None = None,
    ) -> None:
        if read_consistency_seconds is None:
            read_consistency_seconds = 0.0 if "://" not in uri or uri.startswith("file://") else 10.0
        self._uri = uri
        self._storage_options = dict(storage_options or {})
        self._read_consistency = timedelta(seconds=read_consistency_seconds)
        self._connection: Any = None
        self._tables: dict[str, Any] = {}

    def create(self, account: str, name: str, embedder: str, dimensions: int) -> KnowledgeBase:
        kb = _new_knowledge_base(account, name, embedder, dimensions)
        table, db = _table_name(account, name), self._db()
        try:
            self._tables[table] = db.create_table(table, schema=_schema(kb))
        except ValueError as error:  # LanceDB's "Table '…' already exists"
            raise _taken(account, name) from error
        return kb

    def get(self, account: str, name: str) -> KnowledgeBase | None:
        _check_names(account, name)
        try:
            return self._with_table(account, name, lambda _, kb: kb)
        except KnowledgeBaseNotFoundError:
            return None

    def list(self, account: str) -> list[KnowledgeBase]:
        _check_account(account)
        prefix = _account_prefix(account)
        found = []
        for table in self._table_names():
            if table.startswith(prefix):
                kb = self._reopening_if_stale(table, lambda table=table: self._record_at(table))
                if kb is not None and kb.account == account:
                    found.append(kb)
        return sorted(found, key=lambda kb: kb.name)

    def remove(self, account: str, name: str) -> bool:
        _check_names(account, name)
        table, db = _table_name(account, name), self._db()
        self._tables.pop(table, None)
        try:
            db.drop_table(table)
        except ValueError:  # LanceDB's "Table '…' was not found"
            return False
        return True

    def replace_source(
        self,
        account: str,
        name: str,
        source: str,
        chunks: Sequence[ChunkLike],
        vectors: Sequence[Sequence[float]],
    ) -> int:
        """The source's chunks become these, in one commit: a search sees the old ones or the new."""
        _check_replacement(account, name, source, chunks, vectors)

        def replace(handle: Any, kb: KnowledgeBase) -> int:
            if not chunks:
                handle.delete(f"source = {_sql_string(source)}")
            else:
                (
                    handle.merge_insert("key")
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .when_not_matched_by_source_delete(f"source = {_sql_string(source)}")
                    .execute(_rows(kb, source, chunks, _vectors(vectors, kb.dimensions)))
                )
            _compact_if_fragmented(handle)
            return len(chunks)

        return self._with_table(account, name, replace)

    def remove_source(self, account: str, name: str, source: str) -> int:
        _check_names(account, name)
        _check_source(source)

        def remove(handle: Any, _: KnowledgeBase) -> int:
            removed = handle.delete(f"source = {_sql_string(source)}").num_deleted_rows
            _compact_if_fragmented(handle)
            return removed

        return self._with_table(account, name, remove)

    def sources(self, account: str, name: str) -> list[tuple[str, int]]:
        """Each source with its count of chunks, by source."""
        _check_names(account, name)

        def count(handle: Any, _: KnowledgeBase) -> list[tuple[str, int]]:
            column = handle.search().select(["source"]).limit(None).to_arrow().column("source")
            counts = _engine().pa.compute.value_counts(column).to_pylist()
            return sorted((entry["values"], entry["counts"]) for entry in counts)

        return self._with_table(account, name, count)

    def search(
        self, account: str, name: str, vector: Sequence[float], top_k: int, known: KnowledgeBase | None = None
    ) -> list[FoundChunk]:
        """The `top_k` chunks closest to `vector` (cosine), closest first. (`known`, the record
        `get` just read, costs S3 Vectors a call; here the record is the open table's schema.)"""
        _check_names(account, name)
        _check_top_k(top_k)

        def nearest(handle: Any, kb: KnowledgeBase) -> list[FoundChunk]:
            query = handle.search(_vectors([vector], kb.dimensions)[0], vector_column_name="vector")
            rows = query.distance_type("cosine").select([*_FIELDS, "_distance"]).limit(top_k).to_list()
            return [
                FoundChunk(**{field: row[field] for field in _FIELDS}, score=1.0 - row["_distance"]) for row in rows
            ]

        return self._with_table(account, name, nearest)

    def _db(self) -> Any:
        if self._connection is None:
            self._connection = _engine().lancedb.connect(
                self._uri,
                read_consistency_interval=self._read_consistency,
                storage_options=self._storage_options or None,
            )
        return self._connection

    def _open(self, table: str) -> Any | None:
        handle = self._tables.get(table)
        if handle is None:
            db = self._db()
            try:
                handle = db.open_table(table)
            except ValueError:  # LanceDB's "Table '…' was not found"
                return None
            self._tables[table] = handle
        return handle

    def _record_at(self, table: str) -> KnowledgeBase | None:
        handle = self._open(table)
        return _record(handle.schema) if handle is not None else None

    def _with_table(self, account: str, name: str, operation: Callable[[Any, KnowledgeBase], T]) -> T:
        table = _table_name(account, name)

        def run() -> T:
            kb = self._record_at(table)
            if kb is None or (kb.account, kb.name) != (account, name):
                raise _missing(account, name)
            return operation(self._tables[table], kb)

        return self._reopening_if_stale(table, run)

    def _reopening_if_stale(self, table: str, run: Callable[[], T]) -> T:
        """A table kept open may have been removed (and made again) by another process since: an
        error on it is retried once, the table opened again."""
        was_open = table in self._tables
        try:
            return run()
        except (OSError, RuntimeError):
            if not was_open:
                raise
            self._tables.pop(table, None)
            return run()

    def _table_names(self) -> list[str]:
        names: list[str] = []
        token = None
        while True:
            page = self._db().list_tables(page_token=token)
            names.extend(page.tables)
            token = page.page_token
            if not token:
                return names


def knowledge_base_store(uri: str) -> KnowledgeBaseStore | S3VectorsKnowledgeBaseStore:
    """The store at `uri`: `s3vectors://<vector bucket>` on Amazon S3 Vectors (its module, and
    boto3, imported only then), anything else on LanceDB (`KnowledgeBaseStore`)."""
    scheme, separator, bucket = uri.partition("://")
    if separator and scheme == "s3vectors":
        from .s3_vectors import S3VectorsKnowledgeBaseStore

        return S3VectorsKnowledgeBaseStore(bucket.removesuffix("/"))
    return KnowledgeBaseStore(uri)
