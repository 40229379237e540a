"""Workers that speak the Anthropic Messages API themselves: their answers pass through, checked.

What changes on the way: the request's `model` becomes the worker's and `max_tokens` is
clamped; the answer's `model` becomes the name the client asked for. The worker is not trusted
to speak the API well: what reaches the client is always a valid Anthropic message, or stream, or
an error naming what was wrong.

- A message: `type` message and `role` assistant; an id that is not `msg_…` becomes Parley's; blocks
  text (an empty one is dropped), thinking, redacted_thinking and tool_use only, each with its
  fields' types; a tool_use id that is not `toolu_…` is replaced (`response.tool_use_id`), its
  input an object Parley can send back (`tool_input`); a stop_reason Anthropic has (null is
  end_turn; another means the worker did not finish: an error), `stop_sequence` only with
  `stop_sequence`.
- A stream: every event is forwarded in order, its grammar checked (message_start once and first,
  blocks one after another at consecutive indexes, deltas of the open block's kind, message_delta
  then message_stop); blocks are held to the same rules as a message's, a text block is sent once
  it has text (so none is empty; later indexes close up), `input_json_delta` fragments must stay
  the start of one JSON object (a cut one is completed at its content_block_stop, as translated
  streams do). Pings pass in their place; events of unknown types are dropped; a worker's error
  event ends the stream with the same error type (api_error if it names none Anthropic has). A
  stream cut before `message_stop`, or that breaks the grammar, ends with an `error` event.

Usage is the exception to "as it came": a figure of the worker's that is no count
(`worker_token_count`) is replaced, in what the client sees and what is metered alike, by
Parley's figure: the worker's last count, else the estimate; the figures a client requires
(input and output tokens in a message and message_start, output tokens in message_delta) are
added when the worker left them out.
"""

from __future__ import annotations

from typing import Any

import orjson

from .errors import (
    ApiError,
    AuthenticationError,
    BillingError,
    GatewayTimeoutError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    ParleyError,
    PermissionDeniedError,
    RateLimitError,
    RequestTooLargeError,
    error_body,
)
from .request import WorkerProfile, fit_max_tokens
from .response import NAMELESS_TOOL_CALL, AnswerContext, message_shell, odd_field, tool_use_id, utf8_size
from .sse import SSEDecoder
from .stream import PING, Event
from .tokens import estimate_tokens_of_size, worker_token_count_or
from .tool_input import ObjectPrefix, arguments_error, arguments_to_input

__all__ = ["AnthropicStreamRelay", "anthropic_request_for_worker", "message_from_worker", "usage_of_message"]

_USAGE_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
_CACHE_CREATION_FIELDS = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
STOP_REASONS = frozenset(
    ("end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal", "model_context_window_exceeded")
)
_ERRORS_BY_TYPE: dict[str, type[ParleyError]] = {
    error.type: error
    for error in (
        InvalidRequestError,
        AuthenticationError,
        BillingError,
        PermissionDeniedError,
        NotFoundError,
        RequestTooLargeError,
        RateLimitError,
        ApiError,
        GatewayTimeoutError,
        OverloadedError,
    )
}
# What each block type's deltas may be, and the field of the delta that carries what it adds.
_DELTAS = {
    "text": {"text_delta": "text", "citations_delta": "citation"},
    "thinking": {"thinking_delta": "thinking", "signature_delta": "signature"},
    "redacted_thinking": {},
    "tool_use": {"input_json_delta": "partial_json"},
}
_MESSAGE = "answer"
_EVENT = "stream event"


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


def _usage_for_client(fields: Any, figures: dict[str, int], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The worker's usage object, each of its figures replaced by Parley's (`figures`, taken from it
    by `_usage`: the same number where the worker's is a count), the `required` ones added if it
    left them out. Not an object: Parley's figures."""
    if not isinstance(fields, dict):
        return dict(figures)
    usage = {**fields, **{name: figures[name] for name in _USAGE_FIELDS if name in fields or name in required}}
    if "cache_creation" in fields:
        usage["cache_creation"] = _cache_creation_for_client(fields["cache_creation"])
    if "service_tier" in fields and not isinstance(fields["service_tier"], str | None):
        usage["service_tier"] = None
    return usage


def _cache_creation_for_client(fields: Any) -> dict[str, Any] | None:
    """The breakdown of cache writes by lifetime; a figure in it that is no count becomes 0."""
    if not isinstance(fields, dict):
        return None
    return {name: worker_token_count_or(value, 0) for name, value in fields.items()}


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
    return estimate_tokens_of_size(sum(map(utf8_size, parts)))


def usage_of_message(message: dict[str, Any], input_estimate: int) -> dict[str, int]:
    """What is metered for a worker's message: its figures that are counts, else estimates."""
    usage = {name: 0 for name in _USAGE_FIELDS}
    usage["input_tokens"] = input_estimate
    usage["output_tokens"] = _output_estimate(message.get("content"))
    _usage(message.get("usage"), usage)
    return usage


# -- blocks, as a message holds them and a stream starts them ----------------------------------------


def _string(value: Any, where: str, path: str) -> str:
    if not isinstance(value, str):
        raise odd_field(where, path, "a string")
    return value


def _block(block: Any, where: str, path: str) -> dict[str, Any]:
    """A content block the client can take (the same rules, buffered and streamed); raises ApiError."""
    if not isinstance(block, dict):
        raise odd_field(where, path, "an object")
    kind = block.get("type")
    if not isinstance(kind, str) or kind not in _DELTAS:
        raise odd_field(where, f"{path}.type", "a content block type Parley relays")
    if kind == "text":
        _string(block.get("text"), where, f"{path}.text")
        citations = block.get("citations")
        if citations is not None and not isinstance(citations, list):
            raise odd_field(where, f"{path}.citations", "a list")
        return block
    if kind == "thinking":
        _string(block.get("thinking"), where, f"{path}.thinking")
        signature = block.get("signature", "")
        return {**block, "signature": _string(signature, where, f"{path}.signature")}
    if kind == "redacted_thinking":
        _string(block.get("data"), where, f"{path}.data")
        return block
    name = block.get("name")
    if name is not None and not isinstance(name, str):
        raise odd_field(where, f"{path}.name", "a string")
    if not name:
        raise ApiError(NAMELESS_TOOL_CALL)
    tool_input = block.get("input", {})
    if not isinstance(tool_input, dict):
        raise arguments_error(name)
    return {**block, "id": tool_use_id(block.get("id")), "input": arguments_to_input(tool_input, name)}


def _stop(stop_reason: Any, stop_sequence: Any, where: str, path: str) -> tuple[str, str | None]:
    """A stop_reason Anthropic has (null: end_turn), and a stop_sequence that goes with it."""
    if stop_reason is None:
        stop_reason = "end_turn"
    elif not isinstance(stop_reason, str) or stop_reason not in STOP_REASONS:
        shown = repr(stop_reason[:64]) if isinstance(stop_reason, str) else "that is not a string"
        raise ApiError(f"The worker stopped its answer with stop_reason {shown}: the answer is incomplete.")
    if stop_reason != "stop_sequence":
        return stop_reason, None
    return stop_reason, _string(stop_sequence, where, f"{path}stop_sequence")


def _sendable(value: dict[str, Any], where: str) -> dict[str, Any]:
    """What the app can encode (orjson writes 254 levels at most, integers of 64 bits)."""
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        raise ApiError(f"The worker's {where} holds JSON Parley cannot send on (nested too deeply).") from None
    return value


def message_from_worker(message: Any, context: AnswerContext) -> dict[str, Any]:
    if (
        not isinstance(message, dict)
        or message.get("type") != "message"
        or not isinstance(message.get("content"), list)
    ):
        raise ApiError("The worker's answer is not an Anthropic message.")
    if message.get("role", "assistant") != "assistant":
        raise odd_field(_MESSAGE, "role", "assistant")
    content = [_block(block, _MESSAGE, f"content[{n}]") for n, block in enumerate(message["content"])]
    content = [block for block in content if block["type"] != "text" or block["text"]]
    stop_reason, stop_sequence = _stop(message.get("stop_reason"), message.get("stop_sequence"), _MESSAGE, "")
    worker_id = message.get("id")
    answer = {
        **message,
        "id": worker_id if isinstance(worker_id, str) and worker_id.startswith("msg_") else context.message_id,
        "role": "assistant",
        "model": context.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
    }
    figures = usage_of_message(answer, context.input_tokens_estimate)
    answer["usage"] = _usage_for_client(message.get("usage"), figures, ("input_tokens", "output_tokens"))
    return _sendable(answer, "answer")


def _worker_error(error: Any) -> ParleyError:
    """A native worker's `error` event: the same Anthropic error type (api_error if it names none)."""
    kind = error.get("type") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message:
        message = "The worker's stream failed."
    error_class = _ERRORS_BY_TYPE.get(kind, ApiError) if isinstance(kind, str) else ApiError
    return error_class(message[:2000])


class AnthropicStreamRelay:
    """A worker's Anthropic SSE bytes → the same events for the client, checked (module docstring).

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
        self._worker_started = False  # the worker's message_start came
        self._stopping = False  # the worker's message_delta came
        self._final: Event | None = None  # it, held until message_stop
        self._worker_index = 0  # the index the worker's next block must have
        self._next_index = 0  # the index of Parley's next block (empty text blocks are left out)
        self._open: str | None = None  # the type of the worker's open block
        self._pending: list[Event] = []  # a text block's start (and citations) until its first text
        self._arguments: ObjectPrefix | None = None  # the open tool_use block's input so far
        self._held: list[str] = []  # its fragments not sent yet (whitespace only, so far)
        self._tool_name: str | None = None

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
        try:
            events = self._checked(kind, event)
            if events and payload.count("{") + payload.count("[") > 200:
                for _, data in events:
                    _sendable(data, "stream event")
        except ParleyError as error:
            return self.fail(error)
        return events

    def _checked(self, kind: str, event: dict[str, Any]) -> list[Event]:
        """The events to send for one of the worker's; raises ParleyError where it breaks the grammar."""
        if kind == "error":
            raise _worker_error(event.get("error"))
        if kind == "ping":
            return [PING] if self._started and not self._stopping else []
        if kind == "message_start":
            return self._message_start(event)
        if kind not in ("content_block_start", "content_block_delta", "content_block_stop"):
            if kind == "message_delta":
                return self._message_delta(event)
            if kind == "message_stop":
                if self._final is None:
                    raise ApiError("The worker sent message_stop before message_delta.")
                self.finished = True
                return [self._final, (kind, {"type": kind})]
            return []  # an event type Parley does not know: clients ignore them, Parley does not pass them
        if not self._worker_started or self._stopping:
            raise ApiError(f"The worker sent {kind} outside a message.")
        index = event.get("index")
        expected = self._worker_index if kind == "content_block_start" else self._worker_index - 1
        if type(index) is not int or index != expected or (self._open is None) != (kind == "content_block_start"):
            raise ApiError(f"The worker sent {kind} out of order (index {str(index)[:32]}).")
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "content_block_delta":
            return self._block_delta(event)
        return self._block_stop()

    def _message_start(self, event: dict[str, Any]) -> list[Event]:
        if self._worker_started:
            raise ApiError("The worker sent a second message_start.")
        self._worker_started = True
        message = event.get("message")
        if not isinstance(message, dict):
            raise odd_field(_EVENT, "message_start.message", "an object")
        _usage(message.get("usage"), self.usage)
        if self._started:
            return []
        self._started = True
        worker_id = message.get("id")
        shell = message_shell(self._context, [], None, None, self.usage)
        start = {
            **message,
            "id": worker_id if isinstance(worker_id, str) and worker_id.startswith("msg_") else shell["id"],
            "type": "message",
            "role": "assistant",
            "model": self._context.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage_for_client(message.get("usage"), self.usage, ("input_tokens", "output_tokens")),
        }
        return [("message_start", {**event, "message": start})]

    def _block_start(self, event: dict[str, Any]) -> list[Event]:
        block = _block(event.get("content_block"), _EVENT, "content_block_start.content_block")
        kind = block["type"]
        self._worker_index += 1
        self._open = kind
        if kind == "text":  # sent with its first text
            self._pending = [self._start_event({**block, "text": ""})]
            self._output_bytes += utf8_size(block["text"])
            return self._text(block["text"])
        start = self._start_event({**block, "thinking": ""} if kind == "thinking" else block)
        self._next_index += 1
        if kind == "thinking" and block["thinking"]:  # Anthropic starts it empty; a worker may not
            self._output_bytes += utf8_size(block["thinking"])
            return [start, self._delta_event({"type": "thinking_delta", "thinking": block["thinking"]})]
        if kind == "tool_use":
            self._arguments, self._held, self._tool_name = ObjectPrefix(), [], block["name"]
            start[1]["content_block"] = {**block, "input": {}}
            if block["input"]:  # Anthropic starts it with {}; a worker that sends the input here
                return [start, *self._input_json(orjson.dumps(block["input"]).decode())]
        return [start]

    def _start_event(self, block: dict[str, Any]) -> Event:
        return (
            "content_block_start",
            {"type": "content_block_start", "index": self._next_index, "content_block": block},
        )

    def _delta_event(self, delta: dict[str, Any]) -> Event:
        return ("content_block_delta", {"type": "content_block_delta", "index": self._next_index - 1, "delta": delta})

    def _block_delta(self, event: dict[str, Any]) -> list[Event]:
        delta = event.get("delta")
        if not isinstance(delta, dict):
            raise odd_field(_EVENT, "content_block_delta.delta", "an object")
        kind = delta.get("type")
        fields = _DELTAS[self._open or ""]
        if not isinstance(kind, str) or kind not in fields:
            raise odd_field(_EVENT, "content_block_delta.delta.type", f"a delta of a {self._open} block")
        value = delta.get(fields[kind])
        if kind == "citations_delta":
            if not isinstance(value, dict):
                raise odd_field(_EVENT, "content_block_delta.delta.citation", "an object")
            if self._pending:
                self._pending.append(self._delta_event(delta))  # (its index is fixed when the block opens)
                return []
            return [self._delta_event(delta)]
        value = _string(value, _EVENT, f"content_block_delta.delta.{fields[kind]}")
        if kind != "signature_delta":
            self._output_bytes += utf8_size(value)
        if kind == "text_delta":
            return self._text(value)
        if kind == "input_json_delta":
            return self._input_json(value)
        return [self._delta_event(delta)]

    def _text(self, text: str) -> list[Event]:
        if not text:
            return []
        events: list[Event] = []
        if self._pending:
            start, *citations = self._pending
            self._pending = []
            events.append(start)
            self._next_index += 1
            events += (("content_block_delta", {**data, "index": self._next_index - 1}) for _, data in citations)
        events.append(self._delta_event({"type": "text_delta", "text": text}))
        return events

    def _input_json(self, fragment: str) -> list[Event]:
        """A fragment of the open tool_use block's input, sent while the input is still the start
        of one JSON object (whitespace before it is held: the SDK cannot parse whitespace alone)."""
        arguments = self._arguments
        if arguments is None or not fragment:
            return []
        if not arguments.feed(fragment):
            raise arguments_error(self._tool_name, arguments)
        self._held.append(fragment)
        if arguments.empty:
            return []
        text = "".join(self._held)
        self._held = []
        return [self._delta_event(_json_delta(text))]

    def _block_stop(self) -> list[Event]:
        kind, self._open = self._open, None
        if kind == "text" and self._pending:  # a text block without text: left out
            self._pending = []
            return []
        events: list[Event] = []
        if kind == "tool_use" and self._arguments is not None:
            arguments, self._arguments = self._arguments, None
            if not arguments.empty and not arguments.complete:
                suffix = arguments.completion()
                if suffix is None:
                    raise arguments_error(self._tool_name, arguments)
                events.append(self._delta_event(_json_delta(suffix)))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": self._next_index - 1}))
        return events

    def _message_delta(self, event: dict[str, Any]) -> list[Event]:
        if not self._worker_started or self._stopping or self._open is not None:
            raise ApiError("The worker sent message_delta out of order.")
        delta = event.get("delta")
        if not isinstance(delta, dict):
            raise odd_field(_EVENT, "message_delta.delta", "an object")
        stop_reason, stop_sequence = _stop(
            delta.get("stop_reason"), delta.get("stop_sequence"), _EVENT, "message_delta.delta."
        )
        self._stopping = True
        # The worker's output_tokens, if it is a count, replaces the estimate of what streamed.
        self.usage["output_tokens"] = max(self.usage["output_tokens"], estimate_tokens_of_size(self._output_bytes))
        _usage(event.get("usage"), self.usage)
        usage = _usage_for_client(event.get("usage"), self.usage, ("output_tokens",))
        delta = {**delta, "stop_reason": stop_reason, "stop_sequence": stop_sequence}
        self._final = ("message_delta", {**event, "delta": delta, "usage": usage})
        return []  # sent with message_stop: a stream cut between them ends with an error event alone


def _json_delta(text: str) -> dict[str, Any]:
    return {"type": "input_json_delta", "partial_json": text}
