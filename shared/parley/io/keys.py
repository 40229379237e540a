"""API keys, stored by the SHA-256 of the key (never the key itself)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..core.errors import AuthenticationError
from .expiring import ExpiringCache

__all__ = ["KEY_PREFIX", "KeyRecord", "KeyStore", "check_active", "hash_key"]

KEY_PREFIX = "sk-parley-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    account: str
    name: str
    status: str
    created_at: str


def _record(item: dict[str, Any]) -> KeyRecord:
    return KeyRecord(
        key_id=item["key_id"]["S"],
        account=item["account"]["S"],
        name=item.get("name", {}).get("S", ""),
        status=item["status"]["S"],
        created_at=item.get("created_at", {}).get("S", ""),
    )


class KeyStore:
    """Keys in DynamoDB, looked up in one read and cached per instance for `cache_seconds`.

    A revoked key keeps working on an instance that cached it for at most `cache_seconds`.
    """

    def __init__(self, dynamodb: Any, table: str, cache_seconds: float = 60.0) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self._cache: ExpiringCache[KeyRecord | None] = ExpiringCache(cache_seconds)

    def create(self, account: str, name: str, key: str | None = None) -> tuple[str, KeyRecord]:
        """A new key (shown once: only its hash is stored)."""
        key = key or KEY_PREFIX + secrets.token_urlsafe(32)
        record = KeyRecord(
            key_id="key_" + secrets.token_hex(8),
            account=account,
            name=name,
            status="active",
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        self._dynamodb.put_item(
            TableName=self._table,
            Item={
                "key_hash": {"S": hash_key(key)},
                "key_id": {"S": record.key_id},
                "account": {"S": record.account},
                "name": {"S": record.name},
                "status": {"S": record.status},
                "created_at": {"S": record.created_at},
            },
        )
        return key, record

    def cached(self, key: str) -> KeyRecord | None | object:
        """The cached answer for this key, or ExpiringCache.MISSING (no I/O)."""
        return self._cache.get(hash_key(key))

    def lookup(self, key: str) -> KeyRecord | None:
        key_hash = hash_key(key)
        item = self._dynamodb.get_item(TableName=self._table, Key={"key_hash": {"S": key_hash}}).get("Item")
        record = _record(item) if item else None
        self._cache.put(key_hash, record)
        return record

    def list(self) -> list[KeyRecord]:
        records: list[KeyRecord] = []
        kwargs: dict[str, Any] = {"TableName": self._table}
        while True:
            page = self._dynamodb.scan(**kwargs)
            records.extend(_record(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return sorted(records, key=lambda record: record.created_at)
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def revoke(self, key_id: str) -> bool:
        for item in self._dynamodb.scan(
            TableName=self._table,
            FilterExpression="key_id = :id",
            ExpressionAttributeValues={":id": {"S": key_id}},
        ).get("Items", []):
            self._dynamodb.update_item(
                TableName=self._table,
                Key={"key_hash": item["key_hash"]},
                UpdateExpression="SET #s = :revoked",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":revoked": {"S": "revoked"}},
            )
            self._cache.clear()
            return True
        return False


def check_active(record: KeyRecord | None) -> KeyRecord:
    if record is None or record.status != "active":
        raise AuthenticationError("invalid x-api-key")
    return record
