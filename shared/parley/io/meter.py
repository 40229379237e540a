"""Metering usage lines: the one step between a usage log and DynamoDB, for the Lambda metering
function and the local metering loop alike.

Each line is judged on its own. A line that starts with the usage marker but is not a usage
event, and an event DynamoDB refuses for a reason that is not transient, are logged with what is
known of them (the request id) and kept as dead letters for a replay (`parley replay-usage`):
never silently dropped, and never at the cost of the good lines beside them. Events that still
fail transiently after every retry are left to the caller, who keeps them to try again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

import orjson

from ..core.metering import UsageEvent
from ..core.usage_log import UsageLineError, is_usage_line, parse_usage_line
from .usage import UsageStore

__all__ = ["DeadLetters", "FileDeadLetters", "MeteringReport", "QueueDeadLetters", "meter_lines"]

logger = logging.getLogger("parley.metering")


class DeadLetters(Protocol):
    def keep(self, line: str, reason: str) -> None: ...


class FileDeadLetters:
    """Dead letters as JSON lines in a local file: `{"at", "reason", "line"}`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def keep(self, line: str, reason: str) -> None:
        record = orjson.dumps({"at": time.time(), "reason": reason, "line": line.rstrip("\n")}) + b"\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(descriptor, record)
            finally:
                os.close(descriptor)


class QueueDeadLetters:
    """Dead letters as SQS messages (the metering function's dead-letter queue in AWS)."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self._sqs = sqs
        self._queue_url = queue_url

    def keep(self, line: str, reason: str) -> None:
        body = orjson.dumps({"at": time.time(), "reason": reason, "line": line.rstrip("\n")[:200_000]}).decode()
        self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=body)


@dataclass
class MeteringReport:
    recorded: int = 0
    already_recorded: int = 0
    dead_letters: int = 0
    unavailable: list[str] = field(default_factory=list)  # lines to try again later

    def as_dict(self) -> dict[str, int]:
        return {
            "recorded": self.recorded,
            "already_recorded": self.already_recorded,
            "dead_letters": self.dead_letters,
            "unavailable": len(self.unavailable),
        }


def _request_id_of(line: str) -> str:
    try:
        data = orjson.loads(line.split(" ", 1)[1])
        value = data.get("request_id") if isinstance(data, dict) else None
        return value[:64] if isinstance(value, str) else "unknown"
    except (IndexError, orjson.JSONDecodeError):
        return "unknown"


def meter_lines(lines: Iterable[str], store: UsageStore, dead_letters: DeadLetters) -> MeteringReport:
    """Write the usage events of these log lines exactly once; lines that are not usage are skipped."""
    report = MeteringReport()
    events: list[UsageEvent] = []
    line_of: dict[str, str] = {}
    for line in lines:
        if not is_usage_line(line):
            continue
        try:
            event = parse_usage_line(line)
        except UsageLineError as error:
            logger.error("usage line of request %s rejected (%s); kept as a dead letter", _request_id_of(line), error)
            dead_letters.keep(line, f"malformed: {error}")
            report.dead_letters += 1
            continue
        events.append(event)
        line_of.setdefault(event.request_id, line)
    if not events:
        return report
    result = store.record_batch(events)
    report.recorded, report.already_recorded = len(result.recorded), len(result.already_recorded)
    for event, reason in result.refused:
        logger.error(
            "usage of request %s was refused by DynamoDB (%s); kept as a dead letter", event.request_id, reason
        )
        dead_letters.keep(line_of[event.request_id], f"refused: {reason}")
        report.dead_letters += 1
    report.unavailable = [line_of[event.request_id] for event in result.unavailable]
    if report.unavailable:
        logger.warning("usage of %d requests not written yet: DynamoDB keeps failing", len(report.unavailable))
    return report
