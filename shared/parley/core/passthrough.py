"""Workers that speak the Anthropic Messages API themselves: their answers pass through.

What changes on the way: the request's `model` becomes the worker's and `max_tokens` is
clamped; the answer's `model` becomes the name the client asked for. Every event of a stream
is forwarded in order; the relay only watches usage (for metering) and the end of the stream
(a stream cut before `message_stop` ends with an `error` event, as a translated one does).
"""

from __future__ import annotations

from typing import Any

import orjson

from .errors import ApiError, ParleyError, error_body
from .request import WorkerProfile, fit_max_tokens
from .response import AnswerContext, message_shell
from .sse import SSEDecoder
from .stream import PING, Event

__all__ = ["AnthropicStreamRelay", "anthropic_request_for_worker", "message_from_worker", "usage_of_message"]

_USAGE_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")


def anthropic_request_for_worker(body: dict[str, Any], worker: WorkerProfile) -> dict[str, Any]:
    forwarded = dict(body)
    forwarded["model"] = worker.model
    if isinstance(body.get("max_tokens"), int):
        forwarded["max_tokens"] = fit_max_tokens(body["max_tokens"], worker)
    return forwarded


def _usage(fields: Any, into: dict[str, int]) -> None:
    if isinstance(fields, dict):
        for name in _USAGE_FIELDS:
            if isinstance(fields.get(name), int):
                into[name] = fields[name]


def usage_of_message(message: dict[str, Any], input_estimate: int) -> dict[str, int]:
    usage = {name: 0 for name in _USAGE_FIELDS}
    usage["input_tokens"] = input_estimate
    _usage(message.get("usage"), usage)
    return usage


def message_from_worker(message: dict[str, Any], context: AnswerContext) -> dict[str, Any]:
    if message.get("type") != "message" or not isinstance(message.get("content"), list):
        raise ApiError("The worker's answer is not an Anthropic message.")
    return {**message, "model": context.model}


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
        self.usage["output_tokens"] = 0

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
            return [(kind, {**event, "message": {**message, "model": self._context.model}})]
        if kind == "message_delta":
            _usage(event.get("usage"), self.usage)
        elif kind in ("message_stop", "error"):
            self.finished = True
        return [(kind, event)]
