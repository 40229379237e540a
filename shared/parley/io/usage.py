"""Usage metering on DynamoDB: every request recorded exactly once, with its aggregates.

One transaction puts the raw record under the request id (only if absent) into the records
table and adds to the aggregates in the usage table, so the aggregates always equal the sum of
the records. A retry of the same request is idempotent twice over: DynamoDB's
ClientRequestToken (the request id) for ten minutes, and the raw record's condition forever
after. Raw records expire (TTL); aggregates are kept.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..core.metering import UsageEvent, month_of, usd
from .expiring import ExpiringCache

__all__ = ["MeteringError", "UsageStore", "public_row"]

RAW_RECORD_DAYS = 90
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
_COUNTERS = ("requests", "errors", "input_tokens", "output_tokens", "cache_read_input_tokens", "cost_micros")


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
        "cost_usd": round(usd(row["cost_micros"]), 6),
    }


class MeteringError(Exception):
    """Usage could not be written after every retry."""


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


def _increments(event: UsageEvent) -> dict[str, dict[str, str]]:
    return {
        ":requests": _number(1),
        ":errors": _number(1 if event.error_type else 0),
        ":input_tokens": _number(event.input_tokens),
        ":output_tokens": _number(event.output_tokens),
        ":cache_read_input_tokens": _number(event.cache_read_input_tokens),
        ":cost_micros": _number(event.cost_micros),
    }


def _cancellation_codes(error: ClientError) -> list[str]:
    return [reason.get("Code", "") for reason in error.response.get("CancellationReasons", [])]


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
        """Write the event and its aggregates; False when it was already recorded."""
        add = "ADD " + ", ".join(f"{name} :{name}" for name in _COUNTERS)
        items: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._records_table,
                    "Item": _raw_item(event),
                    "ConditionExpression": "attribute_not_exists(request_id)",
                }
            }
        ]
        for partition, sort in event.aggregate_keys():
            items.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": {"pk": {"S": partition}, "sk": {"S": sort}},
                        "UpdateExpression": add,
                        "ExpressionAttributeValues": _increments(event),
                    }
                }
            )
        for attempt in range(self._max_attempts):
            try:
                self._dynamodb.transact_write_items(TransactItems=items, ClientRequestToken=event.request_id[:36])
                return True
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code", "")
                reasons = _cancellation_codes(error) if code == "TransactionCanceledException" else []
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    return False
                if code == "IdempotentParameterMismatchException":
                    return False
                server_error = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500
                transient = code in _RETRYABLE or server_error or bool(reasons and set(reasons) <= _TRANSIENT_REASONS)
                if not transient:
                    raise MeteringError(f"usage for {event.request_id} was not written: {code}") from error
            except BotoCoreError as error:
                if attempt == self._max_attempts - 1:
                    raise MeteringError(f"usage for {event.request_id} was not written: {error}") from error
            time.sleep(min(1.0, 0.01 * 2**attempt) * random.uniform(0.2, 1.0))
        raise MeteringError(f"usage for {event.request_id} was not written after {self._max_attempts} attempts")

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
