"""Usage metering on DynamoDB: every request recorded exactly once, with its aggregates.

A batch of usage events is written in as few transactions as fit: each puts the events' raw
records under their request ids (only if absent) into the records table and adds their summed
counters to the aggregate rows they touch in the usage table, so the aggregates always equal the
sum of the records. Each raw record's condition makes any retry or replay safe (a write whose
answer was lost, a redelivery, a replay of dead letters): a record already there is dropped from
its batch and the rest is written, and the report says which were already recorded. (No
ClientRequestToken: within its ten minutes DynamoDB answers a replay as a success, which would
report events written twice as written.) A batch DynamoDB refuses
for a reason that is not transient is split until the event at fault stands alone, so one bad
event never costs a good one. Raw records expire (TTL); aggregates are kept.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from botocore.exceptions import BotoCoreError, ClientError

from ..core.metering import UsageEvent, month_of, usd
from .expiring import ExpiringCache

__all__ = ["BatchResult", "MeteringError", "UsageStore", "public_row"]

RAW_RECORD_DAYS = 90
MAX_TRANSACTION_ITEMS = 100  # DynamoDB's limit for one TransactWriteItems
_RETRYABLE = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
}
_TRANSIENT_REASONS = {"None", "", "ThrottlingError", "TransactionConflict", "ProvisionedThroughputExceeded"}
_COUNTERS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cost_micros",
    "cache_hits",
)
_ADD = "ADD " + ", ".join(f"{name} :{name}" for name in _COUNTERS)


def public_row(row: dict[str, Any]) -> dict[str, Any]:
    """An aggregate row as operators and key holders see it: cost in USD."""
    return {
        "day": row["day"],
        "model": row["model"],
        "requests": row["requests"],
        "errors": row["errors"],
        "input_tokens": row["input_tokens"],
        "cache_read_input_tokens": row["cache_read_input_tokens"],
        "output_tokens": row["output_tokens"],
        "cache_hits": row["cache_hits"],
        "cost_usd": round(usd(row["cost_micros"]), 6),
    }


class MeteringError(Exception):
    """Usage could not be written after every retry."""


@dataclass
class BatchResult:
    """What became of each event of a batch, by request id."""

    recorded: list[str] = field(default_factory=list)
    already_recorded: list[str] = field(default_factory=list)
    refused: list[tuple[UsageEvent, str]] = field(default_factory=list)  # not transient: kept for replay
    unavailable: list[UsageEvent] = field(default_factory=list)  # still failing after every retry


def _number(value: float | int) -> dict[str, str]:
    return {"N": str(value)}


def _raw_item(event: UsageEvent) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for name, value in asdict(event).items():
        if value is None:
            continue
        if isinstance(value, bool):
            item[name] = {"BOOL": value}
        elif isinstance(value, (int, float)):
            item[name] = _number(value)
        else:
            item[name] = {"S": str(value)}
    item["ttl"] = _number(int(event.at) + RAW_RECORD_DAYS * 86400)
    return item


def _counters(event: UsageEvent) -> tuple[int, ...]:
    return (
        1,
        1 if event.error_type else 0,
        event.input_tokens,
        event.output_tokens,
        event.cache_read_input_tokens,
        event.cost_micros,
        1 if event.cache_hit else 0,
    )


def _aggregates(events: Iterable[UsageEvent]) -> dict[tuple[str, str], list[int]]:
    """Each aggregate row the events add to → the summed counters."""
    rows: dict[tuple[str, str], list[int]] = {}
    for event in events:
        counters = _counters(event)
        for row_key in event.aggregate_keys():
            row = rows.get(row_key)
            if row is None:
                rows[row_key] = list(counters)
            else:
                for index, value in enumerate(counters):
                    row[index] += value
    return rows


def _cancellation_codes(error: ClientError) -> list[str]:
    return [reason.get("Code", "") or "None" for reason in error.response.get("CancellationReasons", [])]


def _error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _transient(error: ClientError) -> bool:
    code = _error_code(error)
    if code == "TransactionCanceledException":
        return set(_cancellation_codes(error)) <= _TRANSIENT_REASONS
    return code in _RETRYABLE or error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500


class UsageStore:
    def __init__(
        self,
        dynamodb: Any,
        table: str,
        records_table: str,
        max_attempts: int = 12,
        spend_cache_seconds: float = 10.0,
    ) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self._records_table = records_table
        self._max_attempts = max_attempts
        self._spend: ExpiringCache[int] = ExpiringCache(spend_cache_seconds)

    def record(self, event: UsageEvent) -> bool:
        """Write one event and its aggregates; False when it was already recorded."""
        result = self.record_batch([event])
        if result.refused or result.unavailable:
            reason = result.refused[0][1] if result.refused else "DynamoDB kept failing"
            raise MeteringError(f"usage for {event.request_id} was not written: {reason}")
        return bool(result.recorded)

    def record_batch(self, events: Iterable[UsageEvent]) -> BatchResult:
        """Write every event exactly once, in as few transactions as fit."""
        result = BatchResult()
        unique: dict[str, UsageEvent] = {}
        for event in events:
            if event.request_id in unique:
                result.already_recorded.append(event.request_id)
            else:
                unique[event.request_id] = event
        for chunk in self._chunks(list(unique.values())):
            self._write(chunk, result)
        return result

    @staticmethod
    def _chunks(events: list[UsageEvent]) -> Iterable[list[UsageEvent]]:
        """Runs of events whose records and aggregate rows fit one transaction."""
        chunk: list[UsageEvent] = []
        rows: set[tuple[str, str]] = set()
        for event in events:
            keys = set(event.aggregate_keys())
            if chunk and len(chunk) + 1 + len(rows | keys) > MAX_TRANSACTION_ITEMS:
                yield chunk
                chunk, rows = [], set()
            chunk.append(event)
            rows |= keys
        if chunk:
            yield chunk

    def _items(self, events: list[UsageEvent]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._records_table,
                    "Item": _raw_item(event),
                    "ConditionExpression": "attribute_not_exists(request_id)",
                }
            }
            for event in events
        ]
        for (partition, sort), counters in _aggregates(events).items():
            items.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": {"pk": {"S": partition}, "sk": {"S": sort}},
                        "UpdateExpression": _ADD,
                        "ExpressionAttributeValues": {
                            f":{name}": _number(value) for name, value in zip(_COUNTERS, counters, strict=True)
                        },
                    }
                }
            )
        return items

    def _write(self, events: list[UsageEvent], result: BatchResult) -> None:
        attempt = 0
        while events:
            try:
                self._dynamodb.transact_write_items(TransactItems=self._items(events))
                result.recorded.extend(event.request_id for event in events)
                return
            except ClientError as error:
                codes = _cancellation_codes(error) if _error_code(error) == "TransactionCanceledException" else []
                present = {index for index, code in enumerate(codes[: len(events)]) if code == "ConditionalCheckFailed"}
                if present:  # nothing was written; write the others without them
                    result.already_recorded.extend(events[index].request_id for index in sorted(present))
                    events = [event for index, event in enumerate(events) if index not in present]
                    continue
                if not _transient(error):
                    self._isolate(events, result, f"{_error_code(error)}: {error}"[:500])
                    return
            except BotoCoreError:  # no answer: it may have landed; the records' condition makes the retry safe
                pass
            attempt += 1
            if attempt >= self._max_attempts:
                result.unavailable.extend(events)
                return
            time.sleep(min(1.0, 0.01 * 2**attempt) * random.uniform(0.2, 1.0))

    def _isolate(self, events: list[UsageEvent], result: BatchResult, reason: str) -> None:
        """DynamoDB refused the batch for a reason that is not transient: find the event at fault."""
        if len(events) == 1:
            result.refused.append((events[0], reason))
            return
        middle = len(events) // 2
        self._write(events[:middle], result)
        self._write(events[middle:], result)

    def cached_month_spend(self, scope: str, now: float) -> int | object:
        """This month's cached spend of `scope`, or ExpiringCache.MISSING (no I/O)."""
        return self._spend.get(f"{scope}|month#{month_of(now)}")

    def month_spend_due(self, scope: str, now: float) -> bool:
        return self._spend.due(f"{scope}|month#{month_of(now)}")

    def month_spend_micros(self, scope: str, now: float) -> int:
        """This month's spend of `key#ID` or `account#NAME`, read now and cached per instance for
        a few seconds (`cached_month_spend`)."""
        sort = f"month#{month_of(now)}"
        item = self._dynamodb.get_item(
            TableName=self._table, Key={"pk": {"S": scope}, "sk": {"S": sort}}, ProjectionExpression="cost_micros"
        ).get("Item")
        spend = int(item["cost_micros"]["N"]) if item and "cost_micros" in item else 0
        self._spend.put(f"{scope}|{sort}", spend)
        return spend

    def aggregates(self, scope: str, first_day: str, last_day: str) -> list[dict[str, Any]]:
        """Daily rows of `key#ID`, `account#NAME` or `model#NAME`: totals, and per model for keys and accounts."""
        rows: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :first AND :last",
            "ExpressionAttributeValues": {
                ":pk": {"S": scope},
                ":first": {"S": f"day#{first_day}"},
                ":last": {"S": f"day#{last_day}~"},
            },
        }
        while True:
            page = self._dynamodb.query(**kwargs)
            for item in page.get("Items", []):
                _, day, *model = item["sk"]["S"].split("#")
                row: dict[str, Any] = {"scope": scope, "day": day, "model": model[-1] if model else None}
                row.update({name: int(item[name]["N"]) if name in item else 0 for name in _COUNTERS})
                rows.append(row)
            if "LastEvaluatedKey" not in page:
                return rows
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def record_of(self, request_id: str) -> dict[str, Any] | None:
        item = self._dynamodb.get_item(TableName=self._records_table, Key={"request_id": {"S": request_id}}).get("Item")
        if not item:
            return None
        return {name: next(iter(value.values())) for name, value in item.items()}
