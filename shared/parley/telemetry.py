"""What Parley reports about each request: one structured log line, and metrics.

In Lambda (AWS_LAMBDA_FUNCTION_NAME is set) the line is JSON through Powertools' Logger and the
metrics are CloudWatch EMF through Powertools' Metrics; locally it is one readable console line.
Neither ever carries an API key: only the key's public id. Every field of the console line is
escaped (`log_field`): a client's model name or path cannot start a line of its own or pose as
another field.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .core.metering import Prices

__all__ = ["RequestOutcome", "Telemetry", "log_field", "log_text", "worker_label"]

NAMESPACE = "Parley"


# Control characters (C0, DEL, C1), the Unicode line and paragraph separators, the space that
# separates fields, and the backslash that starts an escape.
_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029\\]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


_UNSAFE_IN_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")


def log_text(value: object) -> str:
    """`value` (a message that may hold a worker's or a client's words) inside a log line: as
    `log_field`, but spaces stay spaces."""
    return _UNSAFE_IN_TEXT.sub(_escape, str(value))


def log_field(value: object) -> str:
    """`value` as one field of a console log line: what could end the line or the field shows as
    an escape (\\n, \\r, \\t, \\\\, \\xNN for the space and other controls, \\u2028)."""
    return _UNSAFE.sub(_escape, str(value))


def worker_label(base_url: str) -> str:
    """The worker's host and port, never credentials or paths."""
    parts = urlsplit(base_url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


@dataclass(slots=True)
class RequestOutcome:
    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.perf_counter)
    key_id: str | None = None
    account: str | None = None
    model: str | None = None  # the route's public name
    requested_model: str | None = None  # the client's spelling, when it differs (an alias)
    worker: str | None = None
    stream: bool = False
    status: int = 0
    error_type: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    first_token_at: float | None = None
    finished: float | None = None
    client_disconnected: bool = False
    cache: str | None = None  # the response cache's verdict: hit, miss or bypass (docs/cache.md)
    retrieved_tokens: int = 0  # put into the prompt from a knowledge base (docs/rag.md)
    batch: bool = False  # one request of a message batch (docs/batches.md)
    prices: Prices = field(default_factory=Prices, repr=False)
    allowances: list[Any] = field(default_factory=list, repr=False)
    estimated_tokens: int = 0

    @property
    def latency_ms(self) -> float:
        return round(((self.finished or time.perf_counter()) - self.started) * 1000, 2)

    @property
    def time_to_first_token_ms(self) -> float | None:
        if self.first_token_at is None:
            return None
        return round((self.first_token_at - self.started) * 1000, 2)

    def to_log(self) -> dict[str, Any]:
        fields = asdict(self)
        for name in ("started", "first_token_at", "finished", "prices", "allowances", "estimated_tokens"):
            fields.pop(name)
        fields["latency_ms"] = self.latency_ms
        fields["time_to_first_token_ms"] = self.time_to_first_token_ms
        return {name: value for name, value in fields.items() if value is not None}


class Telemetry:
    def __init__(self, in_lambda: bool | None = None) -> None:
        self._in_lambda = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME")) if in_lambda is None else in_lambda
        if self._in_lambda:
            from aws_lambda_powertools import Logger, Metrics

            self._logger: Any = Logger(service="parley")
            self._metrics: Any = Metrics(namespace=NAMESPACE, service="parley")
        else:
            self._logger = logging.getLogger("parley.requests")
            self._metrics = None

    def record(self, outcome: RequestOutcome) -> None:
        if self._in_lambda:
            self._logger.info("request", extra=outcome.to_log())
            self._emit_metrics(outcome)
        else:
            self._logger.info(_console_line(outcome))

    def _emit_metrics(self, outcome: RequestOutcome) -> None:
        from aws_lambda_powertools.metrics import MetricUnit

        metrics = self._metrics
        metrics.add_dimension(name="model", value=outcome.model or "none")
        metrics.add_dimension(name="worker", value=outcome.worker or "none")
        metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="Errors", unit=MetricUnit.Count, value=1 if outcome.error_type else 0)
        metrics.add_metric(name="InputTokens", unit=MetricUnit.Count, value=outcome.input_tokens)
        metrics.add_metric(name="OutputTokens", unit=MetricUnit.Count, value=outcome.output_tokens)
        metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=outcome.latency_ms)
        if outcome.time_to_first_token_ms is not None:
            metrics.add_metric(
                name="TimeToFirstToken", unit=MetricUnit.Milliseconds, value=outcome.time_to_first_token_ms
            )
        metrics.flush_metrics()
        if outcome.error_type:
            metrics.add_dimension(name="error_type", value=outcome.error_type)
            metrics.add_metric(name="ErrorsByType", unit=MetricUnit.Count, value=1)
            metrics.flush_metrics()


def _console_line(outcome: RequestOutcome) -> str:
    field = log_field
    line = f"{field(outcome.request_id)} {field(outcome.method)} {field(outcome.path)} {outcome.status}"
    if outcome.model:
        line += f" model={field(outcome.model)} worker={field(outcome.worker)}"
    if outcome.requested_model:
        line += f" requested={field(outcome.requested_model)}"
    if outcome.key_id:
        line += f" key={field(outcome.key_id)}"
    if outcome.input_tokens or outcome.output_tokens:
        line += f" tokens={outcome.input_tokens}+{outcome.output_tokens}"
    line += f" {outcome.latency_ms}ms"
    if outcome.time_to_first_token_ms is not None:
        line += f" ttft={outcome.time_to_first_token_ms}ms"
    if outcome.stream:
        line += " stream"
    if outcome.error_type:
        line += f" error={field(outcome.error_type)}"
    if outcome.client_disconnected:
        line += " client-disconnected"
    return line
