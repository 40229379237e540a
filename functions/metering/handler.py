"""The metering function: usage log lines (CloudWatch Logs subscription) → DynamoDB, exactly once.

The API functions write each request's usage as a `PARLEY_USAGE {json}` line (core.usage_log);
this writes each one with the same conditional transaction the API would. A delivery that fails
raises, so Lambda retries it (then its dead-letter queue keeps it); events already written are
refused by their request id, so a retry or a duplicate delivery counts nothing twice.
"""

from __future__ import annotations

from typing import Any

from parley.core.usage_log import subscription_messages, usage_events
from parley.io.usage import UsageStore
from parley.settings import Settings

_store: UsageStore | None = None


def _usage_store() -> UsageStore:
    global _store
    if _store is None:
        import boto3

        settings = Settings.from_environment()
        _store = UsageStore(boto3.client("dynamodb"), settings.usage_table, settings.usage_records_table)
    return _store


def handler(event: dict[str, Any], context: Any = None, store: UsageStore | None = None) -> dict[str, int]:
    usage = store or _usage_store()
    written = [usage.record(usage_event) for usage_event in usage_events(subscription_messages(event))]
    return {"recorded": written.count(True), "already_recorded": written.count(False)}
