"""Workers that speak the Anthropic Messages API themselves: their answers pass through.

What changes on the way: the request's `model` becomes the worker's and `max_tokens` is
clamped; the answer's `model` becomes the name the client asked for. Every event of a stream
is forwarded in order; the relay only watches usage (for metering) and the end of the stream
(a stream cut before `message_stop` ends with an `error` event, as a translated one does).

Usage is the exception to "as it came": a figure of the worker's that is no count
(`worker_token_count`) is replaced, in what the client sees and what is metered alike, by
Parley's figure: the worker's last count, else the estimate.
"""

from __future__ import annotations

from typing import Any

import orjson

from .errors import ApiError, ParleyError, error_body
from .request import WorkerProfile, fit_max_tokens
from .response import AnswerContext, message_shell
from .sse import SSEDecoder
from .stream import PING, Event
from .tokens import estimate_text_tokens, estimate_tokens_of_size, worker_token_count_or

__all__ = ["AnthropicStreamRelay", "anthropic_request_for_worker", "message_from_worker", "usage_of_message"]

_USAGE_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
_CACHE_CREATION_FIELDS = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")


def anthropic_request_for_worker(body: dict[str, Any], worker: WorkerProfile) -> dict[str, Any]:
    forwarded = dict(body)
    forwarded["model"] = worker.model
    if isinstance(body.get("max_tokens"), int):
        forwarded["max_tokens"] = fit_max_tokens(body["max_tokens"], worker)
    return forwarded


def _usage(fields: Any, into: dict[str, int]) -> None:
    """The worker's figures that are counts replace those in `into`; the others leave them be."""
    if isinstance(fields, dict):
        for name in _USAGE_FIELDS:
            into[name] = worker_token_count_or(fields.get(name), into[name])


def _usage_for_client(fields: Any, figures: dict[str, int]) -> dict[str, Any]:
    """The worker's usage object, each of its figures replaced by Parley's (`figures`, taken from it
    by `_usage`: the same number where the worker's is a count). Not an object: Parley's figures."""
    if not isinstance(fields, dict):
        return dict(figures)
    usage = {**fields, **{name: figures[name] for name in _USAGE_FIELDS if name in fields}}
    if "cache_creation" in fields:
        usage["cache_creation"] = _cache_creation_for_client(fields["cache_creation"])
    return usage


def _cache_creation_for_client(fields: Any) -> dict[str, Any] | None:
    """The breakdown of cache writes by lifetime; a figure in it that is no count becomes 0."""
    if not isinstance(fields, dict):
        return None
    counts = {name: worker_token_count_or(fields[name], 0) for name in _CACHE_CREATION_FIELDS if name in fields}
    return {**fields, **counts}


def _output_estimate(content: Any) -> int:
    """Output tokens estimated from the text, thinking and tool input of a message's content."""
    parts: list[str] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        parts += (block[field] for field in ("text", "thinking") if isinstance(block.get(field), str))
        if block.get("type") == "tool_use":
            try:
                parts.append(orjson.dumps(block.get("input")).decode())
            except orjson.JSONEncodeError:
                pass
    return estimate_text_tokens("".join(parts))


def usage_of_message(message: dict[str, Any], input_estimate: int) -> dict[str, int]:
    """What is metered for a worker's message: its figures that are counts, else estimates."""
    usage = {name: 0 for name in _USAGE_FIELDS}
    usage["input_tokens"] = input_estimate
    usage["output_tokens"] = _output_estimate(message.get("content"))
    _usage(message.get("usage"), usage)
    return usage


def message_from_worker(message: dict[str, Any], context: AnswerContext) -> dict[str, Any]:
    if message.get("type") != "message" or not isinstance(message.get("content"), list):
        raise ApiError("The worker's answer is not an Anthropic message.")
    answer = {**message, "model": context.model}
    if "usage" in message:
        figures = usage_of_message(message, context.input_tokens_estimate)
        answer["usage"] = _usage_for_client(message["usage"], figures)
    return answer


class AnthropicStreamRelay:
    """A worker's Anthropic SSE bytes → the same events for the client.

    Once Parley has sent its own `message_start` (`started`: while waiting for the worker, with
    pings), the worker's is dropped (its usage still counts), so the client sees one.
    """

    def __init__(self, context: AnswerContext, started: bool = False) -> None:
        self._context = context
        self._decoder = SSEDecoder()
        self._started = started
        self.finished = False
        self.usage: dict[str, int] = usage_of_message({}, context.input_tokens_estimate)
        self._output_bytes = 0

    def ping(self) -> list[Event]:
        if self.finished:
            return []
        events: list[Event] = []
        if not self._started:
            self._started = True
            start = message_shell(self._context, [], None, None, self.usage)
            events.append(("message_start", {"type": "message_start", "message": start}))
        events.append(PING)
        return events

    def fail(self, error: ParleyError) -> list[Event]:
        if self.finished:
            return []
        events = [] if self._started else self.ping()[:-1]
        self.finished = True
        return [*events, ("error", error_body(error))]

    def feed(self, data: bytes) -> list[Event]:
        try:
            payloads = self._decoder.feed(data)
        except ParleyError as error:
            return self.fail(error)
        events: list[Event] = []
        for payload in payloads:
            events += self._event(payload)
        return events

    def end(self) -> list[Event]:
        events: list[Event] = []
        for payload in self._decoder.close():
            events += self._event(payload)
        if not self.finished:
            events += self.fail(ApiError("The worker's stream ended before the answer was complete."))
        return events

    def _event(self, payload: str) -> list[Event]:
        if self.finished:
            return []
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return self.fail(ApiError("The worker sent a stream event that is not valid JSON."))
        kind = event.get("type") if isinstance(event, dict) else None
        if not isinstance(kind, str):
            return self.fail(ApiError("The worker sent a stream event without a type."))
        if kind == "message_start":
            message = event.get("message") if isinstance(event.get("message"), dict) else {}
            _usage(message.get("usage"), self.usage)
            if self._started:
                return []
            self._started = True
            message = {**message, "model": self._context.model}
            if "usage" in message:
                message["usage"] = _usage_for_client(message["usage"], self.usage)
            return [(kind, {**event, "message": message})]
        if kind == "content_block_delta":
            self._count_output(event.get("delta"))
        elif kind == "message_delta":
            # The worker's output_tokens, if it is a count, replaces the estimate of what streamed.
            self.usage["output_tokens"] = max(self.usage["output_tokens"], estimate_tokens_of_size(self._output_bytes))
            _usage(event.get("usage"), self.usage)
            if "usage" in event:
                event = {**event, "usage": _usage_for_client(event["usage"], self.usage)}
        elif kind in ("message_stop", "error"):
            self.finished = True
        return [(kind, event)]

    def _count_output(self, delta: Any) -> None:
        if isinstance(delta, dict):
            for field in ("text", "thinking", "partial_json"):
                if isinstance(delta.get(field), str):
                    self._output_bytes += len(delta[field].encode())
