"""API keys, stored by the SHA-256 of the key (never the key itself)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..core.errors import AuthenticationError
from ..core.metering import Limits
from .accounts import limits_from_item, limits_to_item
from .expiring import ExpiringCache

__all__ = ["KEY_PREFIX", "KeyRecord", "KeyStore", "check_active", "check_active_hash", "hash_key"]

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
    key_hash: str = ""
    expires_at: str | None = None
    allowed_models: tuple[str, ...] = ()
    limits: Limits = Limits()

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and datetime.fromisoformat(self.expires_at) <= now

    def allows(self, model: str) -> bool:
        """Whether this key may use the route whose public model name is `model`."""
        return not self.allowed_models or model in self.allowed_models


def _record(item: dict[str, Any]) -> KeyRecord:
    return KeyRecord(
        key_id=item["key_id"]["S"],
        account=item["account"]["S"],
        name=item.get("name", {}).get("S", ""),
        status=item["status"]["S"],
        created_at=item.get("created_at", {}).get("S", ""),
        key_hash=item["key_hash"]["S"],
        expires_at=item["expires_at"]["S"] if "expires_at" in item else None,
        allowed_models=tuple(item.get("allowed_models", {}).get("SS", ())),
        limits=limits_from_item(item),
    )


class KeyStore:
    """Keys in DynamoDB, looked up in one read and cached per instance for `cache_seconds`.

    A revoked key keeps working on an instance that cached it for at most `cache_seconds` (less
    while the key is in use: its record is read again from half that age on).
    """

    def __init__(self, dynamodb: Any, table: str, cache_seconds: float = 60.0) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self._cache: ExpiringCache[KeyRecord | None] = ExpiringCache(cache_seconds)

    def create(
        self,
        account: str,
        name: str,
        key: str | None = None,
        *,
        limits: Limits = Limits(),
        allowed_models: tuple[str, ...] = (),
        expires_at: str | None = None,
    ) -> tuple[str, KeyRecord]:
        """A new key with 256 bits of entropy (shown once: only its SHA-256 is stored)."""
        key = key or KEY_PREFIX + secrets.token_urlsafe(32)
        record = KeyRecord(
            key_id="key_" + secrets.token_hex(8),
            account=account,
            name=name,
            status="active",
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            key_hash=hash_key(key),
            expires_at=expires_at,
            allowed_models=allowed_models,
            limits=limits,
        )
        item: dict[str, Any] = {
            "key_hash": {"S": record.key_hash},
            "key_id": {"S": record.key_id},
            "account": {"S": record.account},
            "name": {"S": record.name},
            "status": {"S": record.status},
            "created_at": {"S": record.created_at},
            **limits_to_item(limits),
        }
        if expires_at:
            item["expires_at"] = {"S": expires_at}
        if allowed_models:
            item["allowed_models"] = {"SS": sorted(set(allowed_models))}
        self._dynamodb.put_item(TableName=self._table, Item=item)
        return key, record

    def cached(self, key: str) -> KeyRecord | None | object:
        """The cached answer for this key, or ExpiringCache.MISSING (no I/O)."""
        return self.cached_hash(hash_key(key))

    def cached_hash(self, key_hash: str) -> KeyRecord | None | object:
        return self._cache.get(key_hash)

    def due(self, key: str) -> bool:
        """Whether this key's cached answer should be looked up again now (ExpiringCache.due)."""
        return self._cache.due(hash_key(key))

    def lookup(self, key: str) -> KeyRecord | None:
        return self.lookup_hash(hash_key(key))

    def lookup_hash(self, key_hash: str) -> KeyRecord | None:
        """The key whose SHA-256 this is (a message batch keeps only that of the key that made it)."""
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


def check_active(record: KeyRecord | None, key: str) -> KeyRecord:
    """The key's record if it may be used now. The stored hash is compared in constant time."""
    return check_active_hash(record, hash_key(key))


def check_active_hash(record: KeyRecord | None, key_hash: str) -> KeyRecord:
    if record is None or not hmac.compare_digest(record.key_hash, key_hash):
        raise AuthenticationError("invalid x-api-key")
    if record.status != "active":
        raise AuthenticationError("This API key has been revoked.")
    if record.expired(datetime.now(timezone.utc)):
        raise AuthenticationError("This API key has expired.")
    return record
