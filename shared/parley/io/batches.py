"""Message batches in DynamoDB (the `batches` table): each batch, its account's listing, and the
result of each of its requests once it has finished.

Items (every one carries `expires_at`, the table's TTL: the batch's creation + 29 days, when its
results are archived; not the batch's own 24-hour `expires_at`, which follows from `created_at`):

    pk=batch#<id>        sk=batch                 the batch: account, key_hash, created_at,
                                                  request_count, chunks, one counter per result
                                                  kind (ADDed to), cancel_initiated_at, ended_at
    pk=account#<account> sk=batch#<created>#<id>  the listing: an account's batches, by time
    pk=batch#<id>        sk=result#<index:06d>    one finished request: custom_id, kind,
                                                  finished_at and `line`, its JSONL line
                                                  zlib-compressed

Times are numbers, epoch seconds with exactly their microseconds; `<created>` is the UTC time
as fixed-width text (`2025-01-29T14:25:40.914571Z`), so that the listing sorts by it.

A request is finished exactly once: its result item and its counter are written in one
transaction that fails when the result item is there already, so a retried or concurrent call
changes nothing and answers False. A batch ends once its counters add up to its requests.

    BatchStoreError
    ├── BatchExistsError          create: that id is taken
    ├── BatchNotFoundError        no such batch (or not the account's: a list cursor)
    ├── ResultTooLargeError       a result over MAX_RESULT_BYTES compressed is not kept
    └── BatchStoreBusyError       DynamoDB kept throttling or conflicting: try again later
"""

from __future__ import annotations

import random
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from ..core.batches import RESULTS_RETENTION, BatchRecord, ListQuery, RequestCounts, result_line
from .tables import MAX_VALUE_BYTES

__all__ = [
    "MAX_RESULT_BYTES",
    "RESULT_KINDS",
    "BatchExistsError",
    "BatchNotFoundError",
    "BatchStore",
    "BatchStoreBusyError",
    "BatchStoreError",
    "ResultKind",
    "ResultTooLargeError",
    "StoredBatch",
]

MAX_RESULT_BYTES = MAX_VALUE_BYTES
"""The largest result kept, as its compressed JSONL line (a DynamoDB item holds at most 400 KB)."""

ResultKind = Literal["succeeded", "errored", "canceled", "expired"]
RESULT_KINDS: tuple[ResultKind, ...] = ("succeeded", "errored", "canceled", "expired")

_MAX_INDEX = 999_999  # six digits in the sort key
_GET_CHUNK = 100  # BatchGetItem's most keys
_WRITE_CHUNK = 25  # BatchWriteItem's most requests
_TRANSIENT_REASONS = {"None", "TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


class BatchStoreError(Exception):
    pass


class BatchExistsError(BatchStoreError):
    pass


class BatchNotFoundError(BatchStoreError):
    pass


class ResultTooLargeError(BatchStoreError):
    pass


class BatchStoreBusyError(BatchStoreError):
    pass


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """A batch with what only the processor needs: the SHA-256 of the key that made it (never
    the key), its chunks."""

    record: BatchRecord
    key_hash: str
    chunks: int


class BatchStore:
    def __init__(self, dynamodb: Any, table: str, max_attempts: int = 12) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self._max_attempts = max_attempts
        self._expiry: dict[str, int] = {}  # batch id → its items' TTL (never changes)

    # --- batches -------------------------------------------------------------------------------

    def create(self, record: BatchRecord, key_hash: str, chunks: int) -> None:
        """Keep a new batch and its listing item together; BatchExistsError when the id is taken."""
        batch = _batch_item(record, key_hash, chunks)
        listing = {
            "pk": {"S": _account_pk(record.account)},
            "sk": {"S": _listing_sk(record.id, record.created_at)},
            "batch_id": {"S": record.id},
            "expires_at": batch["expires_at"],
        }
        try:
            self._transact(
                [
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": batch,
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {"Put": {"TableName": self._table, "Item": listing}},
                ]
            )
        except _Refused as refused:
            raise BatchExistsError(f"a batch {record.id} exists already") from refused.error

    def get(self, batch_id: str, account: str) -> BatchRecord | None:
        """The account's batch, or None (also when it is another account's)."""
        stored = self.get_any(batch_id)
        return stored.record if stored is not None and stored.record.account == account else None

    def get_any(self, batch_id: str) -> StoredBatch | None:
        """The batch whoever's it is (for the processor), or None."""
        item = self._batch(batch_id)
        if item is None:
            return None
        return StoredBatch(_record(item), item["key_hash"]["S"], int(item["chunks"]["N"]))

    def list(self, account: str, query: ListQuery) -> tuple[list[BatchRecord], bool]:
        """A page of the account's batches, newest first, and whether there are more beyond it
        (older ones, or with `before_id` newer ones). A cursor that is not one of the account's
        batches is BatchNotFoundError."""
        if query.after_id is not None and query.before_id is not None:
            raise ValueError("a page is either after_id's or before_id's, not both")
        cursor_id = query.after_id or query.before_id
        start: dict[str, Any] | None = None
        if cursor_id is not None:
            cursor = self.get(cursor_id, account)
            if cursor is None:
                raise BatchNotFoundError(f"no batch {cursor_id} to page from")
            start = {"pk": {"S": _account_pk(account)}, "sk": {"S": _listing_sk(cursor.id, cursor.created_at)}}
        newer = query.before_id is not None
        ids = self._listed(account, start, newest_first=not newer, count=query.limit + 1)
        has_more = len(ids) > query.limit
        ids = ids[: query.limit]
        if newer:
            ids.reverse()
        found = {item["batch_id"]["S"]: _record(item) for item in self._batch_get([_batch_key(i) for i in ids])}
        return [found[batch_id] for batch_id in ids if batch_id in found], has_more

    def cancel(self, batch_id: str, account: str, now: datetime) -> BatchRecord | None:
        """Start canceling the account's batch (once: while it has not ended nor is canceling
        already); the batch as it stands then, or None when it is not the account's."""
        try:
            answer = self._dynamodb.update_item(
                TableName=self._table,
                Key=_batch_key(batch_id),
                UpdateExpression="SET cancel_initiated_at = :now",
                ConditionExpression="#account = :account"
                " AND attribute_not_exists(ended_at) AND attribute_not_exists(cancel_initiated_at)",
                ExpressionAttributeNames={"#account": "account"},
                ExpressionAttributeValues={":account": {"S": account}, ":now": _time(now)},
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self._dynamodb.exceptions.ConditionalCheckFailedException as refused:
            item = refused.response.get("Item")
            return _record(item) if item is not None and item["account"]["S"] == account else None
        return _record(answer["Attributes"])

    def end(self, batch_id: str, now: datetime) -> bool:
        """Mark the batch ended, once every request is counted; whether it is ended now."""
        for _ in range(self._max_attempts):
            item = self._batch(batch_id)
            if item is None:
                raise BatchNotFoundError(f"no batch {batch_id}")
            if "ended_at" in item:
                return True
            counted = {kind: item[kind] for kind in RESULT_KINDS}
            if sum(int(value["N"]) for value in counted.values()) < int(item["request_count"]["N"]):
                return False
            try:  # no arithmetic in conditions: the counters must be those just added up
                self._dynamodb.update_item(
                    TableName=self._table,
                    Key=_batch_key(batch_id),
                    UpdateExpression="SET ended_at = :now",
                    ConditionExpression=" AND ".join(
                        ["attribute_not_exists(ended_at)", *(f"#{kind} = :{kind}" for kind in RESULT_KINDS)]
                    ),
                    ExpressionAttributeNames={f"#{kind}": kind for kind in RESULT_KINDS},
                    ExpressionAttributeValues={":now": _time(now), **{f":{k}": v for k, v in counted.items()}},
                )
                return True
            except self._dynamodb.exceptions.ConditionalCheckFailedException:
                continue  # ended (or counted) meanwhile: read it again
        raise BatchStoreBusyError(f"batch {batch_id} kept changing while it was being ended")

    def delete(self, batch_id: str, account: str) -> bool:
        """Remove the account's batch, its listing and its results; whether it was there.

        The batch goes first, so no result can be finished after it; results left by a crash
        here expire with the TTL."""
        item = self._batch(batch_id)
        if item is None or item["account"]["S"] != account:
            return False
        try:
            self._transact(
                [
                    {
                        "Delete": {
                            "TableName": self._table,
                            "Key": _batch_key(batch_id),
                            "ConditionExpression": "#account = :account",
                            "ExpressionAttributeNames": {"#account": "account"},
                            "ExpressionAttributeValues": {":account": {"S": account}},
                        }
                    },
                    {
                        "Delete": {
                            "TableName": self._table,
                            "Key": {
                                "pk": {"S": _account_pk(account)},
                                "sk": {"S": _listing_sk(batch_id, _moment(item["created_at"]))},
                            },
                        }
                    },
                ]
            )
        except _Refused:
            return False  # deleted meanwhile
        keys = ({"pk": result["pk"], "sk": result["sk"]} for result in self._results(batch_id, projection="pk, sk"))
        chunk: list[dict[str, Any]] = []
        for key in keys:
            chunk.append(key)
            if len(chunk) == _WRITE_CHUNK:
                self._batch_delete(chunk)
                chunk = []
        if chunk:
            self._batch_delete(chunk)
        return True

    # --- results -------------------------------------------------------------------------------

    def finish_request(
        self, batch_id: str, index: int, custom_id: str, kind: ResultKind, result: dict[str, Any], now: datetime
    ) -> bool:
        """Keep request `index`'s result and count it under `kind`, exactly once: False (and
        nothing changed) when that request was finished already, by this call's retry or by
        another processor.

        A result whose compressed line is over MAX_RESULT_BYTES is ResultTooLargeError, before
        anything is written (the processor keeps an errored result in its place). A batch that
        is not there is BatchNotFoundError; an index past its requests, ValueError."""
        if kind not in RESULT_KINDS or result.get("type") != kind:
            raise ValueError(
                f"a {kind!r} result must be one of {RESULT_KINDS} with that type, not {result.get('type')!r}"
            )
        if not 0 <= index <= _MAX_INDEX:
            raise ValueError(f"request index {index} is out of range")
        line = zlib.compress(result_line(custom_id, result), 6)
        if len(line) > MAX_RESULT_BYTES:
            raise ResultTooLargeError(
                f"the result of request {index} ({custom_id}) of {batch_id} is {len(line)} bytes compressed,"
                f" over the {MAX_RESULT_BYTES} kept"
            )
        expires_at = self._expires_at(batch_id)
        items = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {
                        "pk": {"S": _batch_pk(batch_id)},
                        "sk": {"S": _result_sk(index)},
                        "custom_id": {"S": custom_id},
                        "kind": {"S": kind},
                        "line": {"B": line},
                        "finished_at": _time(now),
                        "expires_at": {"N": str(expires_at)},
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _batch_key(batch_id),
                    "UpdateExpression": "ADD #kind :one",
                    "ConditionExpression": "attribute_exists(pk) AND request_count > :index",
                    "ExpressionAttributeNames": {"#kind": kind},
                    "ExpressionAttributeValues": {":one": {"N": "1"}, ":index": {"N": str(index)}},
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
        ]
        try:
            self._transact(items)
        except _Refused as refused:
            if refused.reasons[0].get("Code") == "ConditionalCheckFailed":
                return False
            if not refused.reasons[1].get("Item"):
                self._expiry.pop(batch_id, None)
                raise BatchNotFoundError(f"no batch {batch_id}") from refused.error
            raise ValueError(f"batch {batch_id} has no request {index}") from refused.error
        return True

    def finished(self, batch_id: str, indices: Iterable[int]) -> set[int]:
        """Which of these requests of the batch are finished."""
        wanted = sorted(set(indices))
        keys = [{"pk": {"S": _batch_pk(batch_id)}, "sk": {"S": _result_sk(index)}} for index in wanted]
        return {int(item["sk"]["S"].removeprefix("result#")) for item in self._batch_get(keys, projection="sk")}

    def results(self, batch_id: str) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """Every finished request of the batch, by index: (index, custom_id, result)."""
        for item in self._results(batch_id):
            line = orjson.loads(zlib.decompress(item["line"]["B"]))
            yield int(item["sk"]["S"].removeprefix("result#")), line["custom_id"], line["result"]

    def result_lines(self, batch_id: str) -> Iterator[bytes]:
        """The results JSONL, a line at a time, by index, as `core.batches.result_line` wrote them."""
        for item in self._results(batch_id):
            yield zlib.decompress(item["line"]["B"])

    # --- DynamoDB ------------------------------------------------------------------------------

    def _batch(self, batch_id: str) -> dict[str, Any] | None:
        return self._dynamodb.get_item(TableName=self._table, Key=_batch_key(batch_id), ConsistentRead=True).get("Item")

    def _expires_at(self, batch_id: str) -> int:
        expires_at = self._expiry.get(batch_id)
        if expires_at is None:
            item = self._batch(batch_id)
            if item is None:
                raise BatchNotFoundError(f"no batch {batch_id}")
            expires_at = int(item["expires_at"]["N"])
            if len(self._expiry) >= 10_000:
                self._expiry.clear()
            self._expiry[batch_id] = expires_at
        return expires_at

    def _listed(self, account: str, start: dict[str, Any] | None, newest_first: bool, count: int) -> list[str]:
        """Up to `count` batch ids of the account's listing, from just past `start`."""
        ids: list[str] = []
        while len(ids) < count:
            page = self._dynamodb.query(
                TableName=self._table,
                KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
                ExpressionAttributeValues={":pk": {"S": _account_pk(account)}, ":prefix": {"S": "batch#"}},
                ProjectionExpression="batch_id",
                ScanIndexForward=not newest_first,
                Limit=count - len(ids),
                ConsistentRead=True,
                **({"ExclusiveStartKey": start} if start else {}),
            )
            ids.extend(item["batch_id"]["S"] for item in page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if start is None:
                break
        return ids

    def _results(self, batch_id: str, projection: str | None = None) -> Iterator[dict[str, Any]]:
        pages = self._dynamodb.get_paginator("query").paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": {"S": _batch_pk(batch_id)}, ":prefix": {"S": "result#"}},
            ConsistentRead=True,
            **({"ProjectionExpression": projection} if projection else {}),
        )
        for page in pages:
            yield from page.get("Items", [])

    def _batch_get(self, keys: list[dict[str, Any]], projection: str | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for start in range(0, len(keys), _GET_CHUNK):
            wanted: dict[str, Any] = {"Keys": keys[start : start + _GET_CHUNK], "ConsistentRead": True}
            if projection:
                wanted["ProjectionExpression"] = projection
            request: dict[str, Any] = {self._table: wanted}
            for attempt in range(self._max_attempts):
                answer = self._dynamodb.batch_get_item(RequestItems=request)
                items.extend(answer.get("Responses", {}).get(self._table, []))
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                _pause(attempt)  # DynamoDB left part of it for later (throttled)
            else:
                raise BatchStoreBusyError("DynamoDB kept leaving batch reads unprocessed")
        return items

    def _batch_delete(self, keys: list[dict[str, Any]]) -> None:
        request: dict[str, Any] = {self._table: [{"DeleteRequest": {"Key": key}} for key in keys]}
        for attempt in range(self._max_attempts):
            request = self._dynamodb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
            if not request:
                return
            _pause(attempt)
        raise BatchStoreBusyError("DynamoDB kept leaving batch deletes unprocessed")

    def _transact(self, items: list[dict[str, Any]]) -> None:
        """Write `items` together, through conflicts and throttling; _Refused when a condition
        failed. After no answer, the retry keeps the request token: a transaction that landed
        is not written twice (DynamoDB answers the retry as a success)."""
        token = str(uuid.uuid4())
        for attempt in range(self._max_attempts):
            try:
                self._dynamodb.transact_write_items(TransactItems=items, ClientRequestToken=token)
                return
            except self._dynamodb.exceptions.TransactionCanceledException as error:
                reasons = error.response.get("CancellationReasons", [])
                if any(reason.get("Code") == "ConditionalCheckFailed" for reason in reasons):
                    raise _Refused(error, reasons) from None
                if not {reason.get("Code") or "None" for reason in reasons} <= _TRANSIENT_REASONS:
                    raise
                token = str(uuid.uuid4())  # nothing was written: a fresh attempt
            except self._dynamodb.exceptions.TransactionInProgressException:
                pass  # the same token is still being written
            except ClientError as error:
                if not _transient(error):
                    raise
            except BotoCoreError:
                pass  # no answer: it may have landed, and the same token says so
            _pause(attempt)
        raise BatchStoreBusyError("DynamoDB kept refusing a batch transaction (conflicts or throttling)")


class _Refused(Exception):
    """A transaction's condition failed: nothing was written. `reasons` are per item."""

    def __init__(self, error: ClientError, reasons: list[dict[str, Any]]) -> None:
        super().__init__(str(error))
        self.error = error
        self.reasons = reasons


# --- items ---------------------------------------------------------------------------------------


def _batch_item(record: BatchRecord, key_hash: str, chunks: int) -> dict[str, Any]:
    counts = record.request_counts
    item: dict[str, Any] = {
        **_batch_key(record.id),
        "batch_id": {"S": record.id},
        "account": {"S": record.account},
        "key_hash": {"S": key_hash},
        "created_at": _time(record.created_at),
        "request_count": {"N": str(record.request_count)},
        "chunks": {"N": str(chunks)},
        "succeeded": {"N": str(counts.succeeded)},
        "errored": {"N": str(counts.errored)},
        "canceled": {"N": str(counts.canceled)},
        "expired": {"N": str(counts.expired)},
        "expires_at": {"N": str(int((record.created_at + RESULTS_RETENTION).timestamp()))},
    }
    if record.cancel_initiated_at is not None:
        item["cancel_initiated_at"] = _time(record.cancel_initiated_at)
    if record.ended_at is not None:
        item["ended_at"] = _time(record.ended_at)
    return item


def _record(item: dict[str, Any]) -> BatchRecord:
    counted = {kind: int(item[kind]["N"]) for kind in RESULT_KINDS}
    processing = int(item["request_count"]["N"]) - sum(counted.values())
    return BatchRecord(
        id=item["batch_id"]["S"],
        account=item["account"]["S"],
        created_at=_moment(item["created_at"]),
        request_counts=RequestCounts(processing=processing, **counted),
        cancel_initiated_at=_moment(item["cancel_initiated_at"]) if "cancel_initiated_at" in item else None,
        ended_at=_moment(item["ended_at"]) if "ended_at" in item else None,
    )


def _batch_pk(batch_id: str) -> str:
    return f"batch#{batch_id}"


def _batch_key(batch_id: str) -> dict[str, Any]:
    return {"pk": {"S": _batch_pk(batch_id)}, "sk": {"S": "batch"}}


def _account_pk(account: str) -> str:
    return f"account#{account}"


def _listing_sk(batch_id: str, created_at: datetime) -> str:
    return f"batch#{created_at.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%S.%fZ}#{batch_id}"


def _result_sk(index: int) -> str:
    return f"result#{index:06d}"


def _time(moment: datetime) -> dict[str, str]:
    """Epoch seconds with exactly the microseconds (a float would round them)."""
    return {"N": str(Decimal((moment - _EPOCH) // _MICROSECOND).scaleb(-6))}


def _moment(value: dict[str, str]) -> datetime:
    return _EPOCH + int(Decimal(value["N"]).scaleb(6)) * _MICROSECOND


def _transient(error: ClientError) -> bool:
    code = error.response.get("Error", {}).get("Code", "")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return code in ("ThrottlingException", "ProvisionedThroughputExceededException", "RequestLimitExceeded") or (
        status >= 500
    )


def _pause(attempt: int) -> None:
    time.sleep(min(1.0, 0.01 * 2**attempt) * random.uniform(0.2, 1.0))
