"""Guardrail policies in DynamoDB: one document per account, and optionally one per key.

Items are keyed by `scope`, "account#<account>" or "key#<key_id>"; `document` holds the policy's
JSON (normalised by core.policy.policy_document), `version` a counter every change increments,
and `updated_at` the time of the last change. Removing a policy keeps its item, without a
document, so that versions never repeat (a version is part of cache keys).

A request is held to its key's policy if the key has one, else to its account's, else to none
(NO_POLICY): both are read in one BatchGetItem and the answer is cached per instance for
`cache_seconds`, so a changed policy reaches every instance within that time (this instance at
once: put and remove clear its cache).
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone
from typing import Any

import orjson

from ..core.errors import ApiError
from ..core.policy import NO_POLICY, Policy, PolicyError, parse_policy, policy_document
from .expiring import ExpiringCache
from .tables import MAX_VALUE_BYTES

__all__ = ["MAX_DOCUMENT_BYTES", "PolicyStore", "policy_scope"]

MAX_DOCUMENT_BYTES = MAX_VALUE_BYTES
"""The largest document stored."""

_BATCH_ATTEMPTS = 5


def policy_scope(account: str, key_id: str | None = None) -> str:
    """The item key of a key's policy (with `key_id`) or of an account's."""
    return f"key#{key_id}" if key_id else f"account#{account}"


class PolicyStore:
    """Policies in DynamoDB, the effective one per (account, key) cached for `cache_seconds`."""

    def __init__(self, dynamodb: Any, table: str, cache_seconds: float = 60.0) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self._cache: ExpiringCache[Policy] = ExpiringCache(cache_seconds)

    def put(self, account: str, document: Any, key_id: str | None = None) -> Policy:
        """Validate and store a document for the account (or one of its keys); the stored Policy."""
        policy = parse_policy(document)
        text = orjson.dumps(policy_document(policy)).decode()
        if len(text.encode()) > MAX_DOCUMENT_BYTES:
            raise PolicyError(f"the policy document is too large: at most {MAX_DOCUMENT_BYTES} bytes of JSON")
        scope = policy_scope(account, key_id)
        updated = self._dynamodb.update_item(
            TableName=self._table,
            Key={"scope": {"S": scope}},
            UpdateExpression="SET #document = :document, #account = :account, updated_at = :now ADD #version :one",
            ExpressionAttributeNames={"#document": "document", "#account": "account", "#version": "version"},
            ExpressionAttributeValues={
                ":document": {"S": text},
                ":account": {"S": account},
                ":now": {"S": _now()},
                ":one": {"N": "1"},
            },
            ReturnValues="UPDATED_NEW",
        )
        self._cache.clear()
        return dataclasses.replace(policy, version=f"{scope}@{updated['Attributes']['version']['N']}")

    def get(self, account: str, key_id: str | None = None) -> Policy | None:
        """The policy stored for exactly this scope (no fallback), or None."""
        scope = policy_scope(account, key_id)
        item = self._dynamodb.get_item(TableName=self._table, Key={"scope": {"S": scope}}).get("Item")
        return _policy(item) if item and "document" in item else None

    def remove(self, account: str, key_id: str | None = None) -> bool:
        """Remove this scope's policy (its version counter stays); whether there was one."""
        try:
            self._dynamodb.update_item(
                TableName=self._table,
                Key={"scope": {"S": policy_scope(account, key_id)}},
                UpdateExpression="REMOVE #document SET updated_at = :now ADD #version :one",
                ConditionExpression="attribute_exists(#document)",
                ExpressionAttributeNames={"#document": "document", "#version": "version"},
                ExpressionAttributeValues={":now": {"S": _now()}, ":one": {"N": "1"}},
            )
        except self._dynamodb.exceptions.ConditionalCheckFailedException:
            return False
        finally:
            self._cache.clear()
        return True

    def cached(self, account: str, key_id: str | None) -> Policy | object:
        """The cached effective policy, or ExpiringCache.MISSING (no I/O)."""
        return self._cache.get(_cache_key(account, key_id))

    def due(self, account: str, key_id: str | None) -> bool:
        """Whether the cached effective policy should be looked up again now (ExpiringCache.due)."""
        return self._cache.due(_cache_key(account, key_id))

    def lookup(self, account: str, key_id: str | None) -> Policy:
        """The policy a request of this key is held to, read in one BatchGetItem, and cached.

        A stored document this version of Parley refuses is an ApiError (the request fails
        rather than pass unguarded).
        """
        scopes = [policy_scope(account, key_id)] + ([policy_scope(account)] if key_id else [])
        items = {item["scope"]["S"]: item for item in self._batch_get(scopes) if "document" in item}
        found = next((items[scope] for scope in scopes if scope in items), None)
        policy = _policy(found) if found else NO_POLICY
        self._cache.put(_cache_key(account, key_id), policy)
        return policy

    def _batch_get(self, scopes: list[str]) -> list[dict[str, Any]]:
        request: dict[str, Any] = {self._table: {"Keys": [{"scope": {"S": scope}} for scope in scopes]}}
        items: list[dict[str, Any]] = []
        for attempt in range(_BATCH_ATTEMPTS):
            answer = self._dynamodb.batch_get_item(RequestItems=request)
            items.extend(answer.get("Responses", {}).get(self._table, []))
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                return items
            time.sleep(0.05 * 2**attempt)  # DynamoDB throttled part of the batch
        raise ApiError("The guardrail policy could not be read (DynamoDB kept throttling).", should_retry=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _cache_key(account: str, key_id: str | None) -> str:
    return f"{account}\x00{key_id or ''}"


def _policy(item: dict[str, Any]) -> Policy:
    version = f"{item['scope']['S']}@{item['version']['N']}"
    try:
        return parse_policy(orjson.loads(item["document"]["S"]), version)
    except (PolicyError, orjson.JSONDecodeError) as error:
        raise ApiError(f"The stored guardrail policy {version} is not valid: {error}") from None
