"""The metering function: usage log lines (CloudWatch Logs subscription) → DynamoDB, exactly once.

The API functions write each request's usage as a `PARLEY_USAGE {json}` line (core.usage_log);
this meters the delivery's lines with the same step as the local metering loop (io.meter): only
lines that start with the marker, each judged on its own. A malformed line or an event DynamoDB
refuses is sent alone to the dead-letter queue (PARLEY_METERING_DEAD_LETTERS_URL) and logged with
its request id; the good lines beside it are written. Only when DynamoDB keeps failing does the
invocation raise, so Lambda retries the delivery (then its own dead-letter queue keeps it); lines
already written are refused by their request id, so a retry counts nothing twice.
"""

from __future__ import annotations

import os
from typing import Any

from parley.core.usage_log import subscription_messages
from parley.io.meter import DeadLetters, QueueDeadLetters, meter_lines
from parley.io.usage import UsageStore
from parley.settings import Settings

_store: UsageStore | None = None
_dead_letters: DeadLetters | None = None


class MeteringUnavailableError(RuntimeError):
    """DynamoDB kept failing for some lines: the delivery is retried (written lines count once)."""


def _defaults() -> tuple[UsageStore, DeadLetters]:
    global _store, _dead_letters
    if _store is None or _dead_letters is None:
        import boto3

        settings = Settings.from_environment()
        _store = UsageStore(boto3.client("dynamodb"), settings.usage_table, settings.usage_records_table)
        _dead_letters = QueueDeadLetters(boto3.client("sqs"), os.environ["PARLEY_METERING_DEAD_LETTERS_URL"])
    return _store, _dead_letters


def handler(
    event: dict[str, Any],
    context: Any = None,
    store: UsageStore | None = None,
    dead_letters: DeadLetters | None = None,
) -> dict[str, int]:
    if store is None or dead_letters is None:
        default_store, default_dead_letters = _defaults()
        store, dead_letters = store or default_store, dead_letters or default_dead_letters
    report = meter_lines(subscription_messages(event), store, dead_letters)
    if report.unavailable:
        raise MeteringUnavailableError(f"{len(report.unavailable)} usage lines not written; the delivery is retried")
    return report.as_dict()
