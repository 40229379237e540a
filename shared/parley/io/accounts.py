"""Accounts: the limits shared by all of an account's keys. An account with no record has none."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.metering import Limits
from .expiring import ExpiringCache

__all__ = ["AccountRecord", "AccountStore", "limits_from_item", "limits_to_item"]


@dataclass(frozen=True, slots=True)
class AccountRecord:
    account: str
    limits: Limits = Limits()


def limits_from_item(item: dict[str, Any]) -> Limits:
    def number(name: str) -> float | None:
        return float(item[name]["N"]) if name in item else None

    rpm, tpm = number("requests_per_minute"), number("tokens_per_minute")
    return Limits(
        requests_per_minute=int(rpm) if rpm is not None else None,
        tokens_per_minute=int(tpm) if tpm is not None else None,
        monthly_spend_usd=number("monthly_spend_usd"),
    )


def limits_to_item(limits: Limits) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for name in ("requests_per_minute", "tokens_per_minute", "monthly_spend_usd"):
        value = getattr(limits, name)
        if value is not None:
            item[name] = {"N": str(value)}
    return item


class AccountStore:
    def __init__(self, dynamodb: Any, table: str, cache_seconds: float = 60.0) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self._cache: ExpiringCache[AccountRecord] = ExpiringCache(cache_seconds)

    def put(self, record: AccountRecord) -> None:
        self._dynamodb.put_item(
            TableName=self._table, Item={"account": {"S": record.account}, **limits_to_item(record.limits)}
        )
        self._cache.clear()

    def cached(self, account: str) -> AccountRecord | object:
        return self._cache.get(account)

    def due(self, account: str) -> bool:
        return self._cache.due(account)

    def get(self, account: str) -> AccountRecord:
        item = self._dynamodb.get_item(TableName=self._table, Key={"account": {"S": account}}).get("Item")
        record = AccountRecord(account, limits_from_item(item)) if item else AccountRecord(account)
        self._cache.put(account, record)
        return record

    def list(self) -> list[AccountRecord]:
        items = self._dynamodb.scan(TableName=self._table).get("Items", [])
        return sorted(
            (AccountRecord(item["account"]["S"], limits_from_item(item)) for item in items), key=lambda r: r.account
        )
