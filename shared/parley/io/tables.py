"""The DynamoDB tables Parley uses, for local stacks and tests (the SAM template declares them in AWS)."""

from __future__ import annotations

from typing import Any

__all__ = ["TABLES", "create_tables"]

TABLES: dict[str, dict[str, Any]] = {
    "keys": {
        "KeySchema": [{"AttributeName": "key_hash", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "key_hash", "AttributeType": "S"}],
    },
    "routes": {
        "KeySchema": [{"AttributeName": "model", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "model", "AttributeType": "S"}],
    },
}


def create_tables(dynamodb: Any, names: dict[str, str]) -> None:
    """Create each table that does not exist yet. `names` maps "keys"/"routes" to table names."""
    existing = set(dynamodb.list_tables().get("TableNames", []))
    for role, name in names.items():
        if name in existing:
            continue
        dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **TABLES[role])
        dynamodb.get_waiter("table_exists").wait(TableName=name)
