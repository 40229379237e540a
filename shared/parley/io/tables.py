"""The DynamoDB tables Parley uses, for local stacks and tests (the SAM template declares them in AWS)."""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_VALUE_BYTES", "TABLES", "TIME_TO_LIVE", "create_tables"]

MAX_VALUE_BYTES = 350_000
"""The most one stored value (a policy document, a kept answer, a batch result) may take of a
DynamoDB item, which holds at most 400 KB with its keys and other attributes."""

TABLES: dict[str, dict[str, Any]] = {
    "keys": {
        "KeySchema": [{"AttributeName": "key_hash", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "key_hash", "AttributeType": "S"}],
    },
    "usage": {
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
    },
    "usage_records": {
        "KeySchema": [{"AttributeName": "request_id", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "request_id", "AttributeType": "S"}],
    },
    "limits": {
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
    },
    "accounts": {
        "KeySchema": [{"AttributeName": "account", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "account", "AttributeType": "S"}],
    },
    "routes": {
        "KeySchema": [{"AttributeName": "model", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "model", "AttributeType": "S"}],
    },
    "policies": {
        "KeySchema": [{"AttributeName": "scope", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "scope", "AttributeType": "S"}],
    },
    "response_cache": {
        "KeySchema": [{"AttributeName": "key", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "key", "AttributeType": "S"}],
    },
    "batches": {
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
    },
}

TIME_TO_LIVE: dict[str, str] = {"response_cache": "expires_at", "batches": "expires_at"}
"""The tables whose items expire, and the attribute DynamoDB's TTL reads."""


def create_tables(dynamodb: Any, names: dict[str, str]) -> None:
    """Create each table that does not exist yet. `names` maps a role in TABLES to a table name."""
    existing = set(dynamodb.list_tables().get("TableNames", []))
    for role, name in names.items():
        if name in existing:
            continue
        dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **TABLES[role])
        dynamodb.get_waiter("table_exists").wait(TableName=name)
        if role in TIME_TO_LIVE:
            dynamodb.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": TIME_TO_LIVE[role]}
            )
