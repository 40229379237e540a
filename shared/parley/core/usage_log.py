"""Usage events as log lines: how the Lambda functions meter without a write the client waits for.

A function writes each request's usage event to its log as one line, `PARLEY_USAGE {json}`,
before the response's last byte (a write to stdout: microseconds, and durable once CloudWatch
Logs has it). A subscription filter on that marker delivers the lines to the metering
function, which does the usual conditional write; a line delivered twice is refused there by
the request id, so each request is still counted exactly once.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
from typing import Any, Iterable

import orjson

from .metering import UsageEvent

__all__ = ["USAGE_MARKER", "subscription_messages", "usage_events", "usage_line"]

USAGE_MARKER = "PARLEY_USAGE"
_FIELDS = {field.name for field in dataclasses.fields(UsageEvent)}


def usage_line(event: UsageEvent) -> str:
    return f"{USAGE_MARKER} {orjson.dumps(event).decode()}\n"  # orjson encodes dataclasses natively


def usage_events(messages: Iterable[str]) -> list[UsageEvent]:
    """The usage events in these log messages; other messages are skipped. A marked message that
    does not parse raises ValueError: it is usage, and dropping it would lose it."""
    events = []
    for message in messages:
        start = message.find(USAGE_MARKER + " ")
        if start < 0:
            continue
        data = orjson.loads(message[start + len(USAGE_MARKER) + 1 :])
        if not isinstance(data, dict) or not _FIELDS >= set(data):
            raise ValueError(f"not a usage event: {message[:200]!r}")
        events.append(UsageEvent(**data))
    return events


def subscription_messages(event: dict[str, Any]) -> list[str]:
    """The log messages of a CloudWatch Logs subscription delivery (base64 of gzipped JSON)."""
    payload = orjson.loads(gzip.decompress(base64.b64decode(event["awslogs"]["data"])))
    return [log_event["message"] for log_event in payload.get("logEvents", ())]
