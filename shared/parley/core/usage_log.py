"""Usage events as log lines: the one way every Parley process hands its usage to the meter.

Each request's usage event becomes one line, `PARLEY_USAGE {json}`, written before the
response's last byte: to stdout in Lambda (CloudWatch Logs delivers it to the metering function
through a subscription filter), to the local usage journal elsewhere (a metering loop in the
same process reads it). Both meter the lines with the same conditional write, so a line read
twice still counts once.

Only a line that *starts* with the marker is usage; each is parsed and checked on its own, so a
malformed one is rejected alone (`UsageLineError`) and never costs the good lines beside it.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
from typing import Any

import orjson

from .metering import UsageEvent

__all__ = [
    "USAGE_MARKER",
    "UsageLineError",
    "is_usage_line",
    "parse_usage_line",
    "subscription_messages",
    "usage_line",
]

USAGE_MARKER = "PARLEY_USAGE"
_PREFIX = USAGE_MARKER + " "
MAX_LINE_CHARS = 16_384
MAX_COUNT = 10**12  # tokens, micro-dollars: far above any real request, far below overflow
MAX_TEXT = 1_024

_FIELDS = {field.name: field for field in dataclasses.fields(UsageEvent)}
_REQUIRED = {name for name, field in _FIELDS.items() if field.default is dataclasses.MISSING}
_TEXT_FIELDS = {"request_id", "key_id", "account", "model", "worker", "requested_model", "error_type"}
_NAMES = {"request_id", "key_id", "account", "model"}  # never empty
_COUNT_FIELDS = {
    "status",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cost_micros",
    "retrieved_tokens",
}
_TIME_FIELDS = {"at", "latency_ms", "time_to_first_token_ms"}
_FLAG_FIELDS = {"stream", "client_disconnected", "cache_hit", "batch"}


class UsageLineError(ValueError):
    """A line that starts with the usage marker but is not a well-formed usage event."""


def usage_line(event: UsageEvent) -> str:
    return f"{_PREFIX}{orjson.dumps(event).decode()}\n"  # orjson encodes dataclasses natively


def is_usage_line(message: str) -> bool:
    return message.startswith(_PREFIX)


def _check(name: str, value: Any) -> None:
    if value is None:
        if name in _REQUIRED:
            raise UsageLineError(f"{name} is missing")
        return
    if name in _TEXT_FIELDS:
        if not isinstance(value, str) or len(value) > MAX_TEXT or (name in _NAMES and not value):
            raise UsageLineError(f"{name} must be a string of {int(name in _NAMES)} to {MAX_TEXT} characters")
    elif name in _COUNT_FIELDS:
        if type(value) is not int or not 0 <= value <= MAX_COUNT:
            raise UsageLineError(f"{name} must be an integer from 0 to {MAX_COUNT}")
    elif name in _TIME_FIELDS:
        if type(value) not in (int, float) or not 0 <= value < 10**13:
            raise UsageLineError(f"{name} must be a non-negative number")
    elif name in _FLAG_FIELDS and type(value) is not bool:
        raise UsageLineError(f"{name} must be true or false")


def parse_usage_line(message: str) -> UsageEvent:
    """The usage event of one marked line; UsageLineError names what is wrong with it."""
    if not is_usage_line(message):
        raise UsageLineError("not a usage line")
    if len(message) > MAX_LINE_CHARS:
        raise UsageLineError(f"longer than {MAX_LINE_CHARS} characters")
    try:
        data = orjson.loads(message[len(_PREFIX) :])
    except orjson.JSONDecodeError as error:
        raise UsageLineError(f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise UsageLineError("not a JSON object")
    unknown = set(data) - set(_FIELDS)
    if unknown:
        raise UsageLineError(f"unknown fields: {', '.join(sorted(unknown))[:200]}")
    for name in _FIELDS:
        _check(name, data.get(name))
    return UsageEvent(**data)


def subscription_messages(event: dict[str, Any]) -> list[str]:
    """The log messages of a CloudWatch Logs subscription delivery (base64 of gzipped JSON)."""
    payload = orjson.loads(gzip.decompress(base64.b64decode(event["awslogs"]["data"])))
    return [log_event["message"] for log_event in payload.get("logEvents", ())]
