"""OpenAI chat.completion.chunk stream → Anthropic Messages stream events.

`ChatToMessagesStream` is a state machine fed one parsed chunk at a time. Every call returns
the events to send, as `(event_name, data)` pairs; it does no I/O and keeps no clock.

The Anthropic grammar it guarantees: `message_start`, then content blocks strictly one after
another (`content_block_start`, deltas of the block's own kind at its own index,
`content_block_stop`), never an empty text block, a thinking block's last delta a
`signature_delta`, then one `message_delta` with the stop reason and cumulative usage, then
`message_stop`. A stream that fails ends with one `error` event instead: the worker's error, a
chunk Parley cannot read (a field of the wrong type, named), a finish_reason that says the worker
did not finish (`abort`, `error`, any other unknown), or tool arguments that stop being the start
of a JSON object. The worker is never trusted to be well formed: every event sent is.

Text: whitespace-only text with no text block open is held; it opens the text block, first, when
text that is not whitespace follows; it is dropped when a tool call starts; at the end it is a
text block only if the answer had no tool calls (vLLM's hermes parser sends "\n\n" around calls).
Text after a tool call is a text block after the tool block, in arrival order.

Tool arguments are checked as they arrive (`tool_input.ObjectPrefix`) and forwarded as
`input_json_delta` only while their concatenation is still the start of one JSON object; a call
cut short (finish_reason `length`) gets one last delta with the suffix that completes it, so the
client's tool input is always an object, the same the buffered answer gives. Parallel tool calls:
the block of one call is open at a time. A call that starts while another is open takes over once
the open call's arguments form a complete object (every known server sends calls one after
another); until then its fragments are held and sent as soon as its block opens.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from .errors import ApiError, ParleyError, error_body, worker_chunk_error
from .response import (
    NAMELESS_TOOL_CALL,
    THINKING_SIGNATURE,
    AnswerContext,
    finish_error,
    finish_to_stop_reason,
    message_shell,
    odd_field,
    reasoning_in,
    text_in,
    tool_use_id,
    usage_to_anthropic,
    utf8_size,
)
from .sse import SSEDecoder
from .tokens import estimate_tokens_of_size, worker_token_count
from .tool_input import ObjectPrefix, arguments_error

__all__ = ["ChatToMessagesStream", "Event", "WorkerSSETranslator"]

Event = tuple[str, dict[str, Any]]

PING: Event = ("ping", {"type": "ping"})

_CHUNK = "stream chunk"


@dataclass(slots=True)
class _ToolCall:
    worker_id: str | None
    name: str | None
    arguments: ObjectPrefix = field(default_factory=ObjectPrefix)
    held: list[str] = field(default_factory=list)  # fragments not sent yet
    closed: bool = False  # its block has ended


class ChatToMessagesStream:
    def __init__(self, context: AnswerContext) -> None:
        self._context = context
        self._started = False
        self.finished = False
        self._next_index = 0
        self._open_kind: str | None = None
        self._open_tool: _ToolCall | None = None
        self._calls_by_worker_index: dict[int, _ToolCall] = {}
        self._waiting_tools: list[_ToolCall] = []
        self._held_text: list[str] = []  # whitespace-only text, no text block open
        self._has_tool_calls = False
        self._finish_reason: str | None = None
        self._unfinished: ApiError | None = None  # the finish_reason said the answer is incomplete
        self._matched_stop: Any = None
        self._cut_call = False  # a tool call whose arguments were completed here
        self._worker_usage: dict[str, Any] | None = None
        self._seen_done = False
        self._output_bytes = 0
        self._events: list[Event] = []

    # -- what the shell calls --------------------------------------------------------------

    def start(self) -> list[Event]:
        """`message_start`, if not sent yet (the shell calls it before a ping)."""
        self._start(None)
        return self._take()

    @property
    def started(self) -> bool:
        """Whether message_start has been sent."""
        return self._started

    def use_input_tokens(self, count: int) -> None:
        """The prompt's exact size (from the worker's tokenizer), if message_start is not sent yet
        and the worker's figure is a count."""
        if not self._started and worker_token_count(count) is not None:
            self._context = replace(self._context, input_tokens_estimate=count)

    def ping(self) -> list[Event]:
        if self.finished:
            return []
        self._start(None)
        self._events.append(PING)
        return self._take()

    def feed(self, chunk: Any) -> list[Event]:
        """One parsed chunk (any JSON value: what is not a chunk Parley can read fails the stream)."""
        if self.finished:
            return []
        try:
            self._chunk(chunk)
        except ParleyError as error:
            return self.fail(error)
        return self._take()

    def feed_data(self, data: str) -> list[Event]:
        """One SSE `data:` payload: a JSON chunk, or `[DONE]`."""
        if data == "[DONE]":
            return self.done()
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return self.fail(ApiError("The worker sent a stream chunk that is not valid JSON."))
        return self.feed(chunk)

    def done(self) -> list[Event]:
        """The worker sent `[DONE]`."""
        self._seen_done = True
        return self.close()

    def close(self) -> list[Event]:
        """The worker's stream ended. Without a finish_reason or [DONE] the answer is broken."""
        if self.finished:
            return []
        if self._finish_reason is None and not self._seen_done:
            return self.fail(ApiError("The worker's stream ended before the answer was complete."))
        try:
            self._start(None)
            self._end()
        except ParleyError as error:
            return self.fail(error)
        return self._take()

    def fail(self, error: ParleyError) -> list[Event]:
        """End the stream with an `error` event (no further events follow)."""
        if self.finished:
            return []
        self._start(None)
        self.finished = True
        self._events.append(("error", error_body(error)))
        return self._take()

    @property
    def usage(self) -> dict[str, int]:
        """Usage so far: the worker's figures where it gave them, estimates otherwise (also after
        the stream failed, for metering)."""
        return usage_to_anthropic(
            self._worker_usage,
            self._context.input_tokens_estimate,
            estimate_tokens_of_size(self._output_bytes),
        )

    # -- state machine ---------------------------------------------------------------------

    def _take(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def _start(self, usage: dict[str, Any] | None) -> None:
        if self._started:
            return
        self._started = True
        start_usage = usage_to_anthropic(usage, self._context.input_tokens_estimate, 0)
        start_usage["output_tokens"] = 0 if usage is None else min(start_usage["output_tokens"], 1)
        message = message_shell(self._context, [], None, None, start_usage)
        self._events.append(("message_start", {"type": "message_start", "message": message}))

    def _chunk(self, chunk: Any) -> None:
        if not isinstance(chunk, dict):
            raise ApiError("The worker sent a stream chunk that is not a JSON object.")
        choices = chunk.get("choices")
        if "error" in chunk and not choices:
            raise worker_chunk_error(chunk["error"])
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._worker_usage = usage
        self._start(usage if isinstance(usage, dict) else None)
        if choices is not None and not isinstance(choices, list):
            raise odd_field(_CHUNK, "choices", "a list")
        if choices and self._unfinished is None:
            if not isinstance(choices[0], dict):
                raise odd_field(_CHUNK, "choices[0]", "an object")
            self._choice(choices[0])
        if self._finish_reason is not None and self._worker_usage is not None:
            self._end()

    def _choice(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta")
        if delta is not None:
            if not isinstance(delta, dict):
                raise odd_field(_CHUNK, "choices[0].delta", "an object")
            self._delta_of_choice(delta)
        finish_reason = choice.get("finish_reason")
        if finish_reason is None or finish_reason == "":
            return
        self._finish_reason = finish_reason
        self._unfinished = finish_error(finish_reason)
        if self._unfinished is None:  # else the stream fails at its end, with the usage so far
            self._matched_stop = choice.get("stop_reason", choice.get("matched_stop"))
            self._close_all_blocks()

    def _delta_of_choice(self, delta: dict[str, Any]) -> None:
        reasoning = reasoning_in(delta, _CHUNK, "choices[0].delta")
        if reasoning:
            self._output_bytes += utf8_size(reasoning)
            if self._context.thinking:
                self._thinking(reasoning)
        content = text_in(delta.get("content"), _CHUNK, "choices[0].delta.content")
        if content:
            self._output_bytes += utf8_size(content)
            self._text(content)
        tool_calls = delta.get("tool_calls")
        if tool_calls is None:
            return
        if not isinstance(tool_calls, list):
            raise odd_field(_CHUNK, "choices[0].delta.tool_calls", "a list")
        for position, call in enumerate(tool_calls):
            self._tool_delta(call, position, f"choices[0].delta.tool_calls[{position}]")

    def _open_block(self, kind: str, block: dict[str, Any]) -> None:
        index = self._next_index
        self._next_index += 1
        self._open_kind = kind
        self._events.append(
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        )

    def _close_open_block(self) -> None:
        if self._open_kind is None:
            return
        if self._open_tool is not None:
            call, self._open_tool = self._open_tool, None
            self._complete_arguments(call)
        elif self._open_kind == "thinking":
            self._delta({"type": "signature_delta", "signature": THINKING_SIGNATURE})
        self._events.append(("content_block_stop", {"type": "content_block_stop", "index": self._next_index - 1}))
        self._open_kind = None

    def _delta(self, delta: dict[str, Any]) -> None:
        self._events.append(
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": self._next_index - 1, "delta": delta},
            )
        )

    def _text(self, text: str) -> None:
        if self._open_kind == "text":
            self._delta({"type": "text_delta", "text": text})
            return
        if text.isspace():
            self._held_text.append(text)
            return
        if self._held_text:
            text = "".join(self._held_text) + text
            self._held_text.clear()
        self._close_all_blocks()
        self._open_block("text", {"type": "text", "text": ""})
        self._delta({"type": "text_delta", "text": text})

    def _thinking(self, text: str) -> None:
        if self._open_kind != "thinking":
            self._close_all_blocks()
            self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": THINKING_SIGNATURE})
        self._delta({"type": "thinking_delta", "thinking": text})

    def _tool_delta(self, delta: Any, position: int, path: str) -> None:
        if not isinstance(delta, dict):
            raise odd_field(_CHUNK, path, "an object")
        worker_index = delta.get("index")
        if worker_index is None:
            worker_index = position
        elif type(worker_index) is not int:
            raise odd_field(_CHUNK, f"{path}.index", "an integer")
        worker_id = delta.get("id")
        if worker_id is not None and not isinstance(worker_id, str):
            raise odd_field(_CHUNK, f"{path}.id", "a string")
        function = delta.get("function")
        if function is None:
            function = {}
        elif not isinstance(function, dict):
            raise odd_field(_CHUNK, f"{path}.function", "an object")
        name = function.get("name")
        if name is not None and not isinstance(name, str):
            raise odd_field(_CHUNK, f"{path}.function.name", "a string")
        call = self._calls_by_worker_index.get(worker_index)
        if call is None or (worker_id and call.worker_id and worker_id != call.worker_id):
            # A new call; Ollama may number every call 0, so a new id also means a new call.
            call = _ToolCall(worker_id=worker_id or None, name=name or None)
            self._calls_by_worker_index[worker_index] = call
            self._has_tool_calls = True
            self._held_text.clear()
            self._waiting_tools.append(call)
        else:
            if worker_id and not call.worker_id:
                call.worker_id = worker_id
            if name and not call.name:
                call.name = name
        self._arguments(call, function.get("arguments"))
        if self._waiting_tools:
            self._advance_tools()

    def _arguments(self, call: _ToolCall, arguments: Any) -> None:
        """A fragment of a call's arguments: checked, then sent (or held until its block opens)."""
        if arguments is None:
            return
        if isinstance(arguments, dict):  # a server that sends the whole object
            try:
                arguments = orjson.dumps(arguments).decode()
            except orjson.JSONEncodeError:
                raise arguments_error(call.name) from None
        if not isinstance(arguments, str):
            raise arguments_error(call.name)
        if not arguments:
            return
        self._output_bytes += utf8_size(arguments)
        if not call.arguments.feed(arguments):
            raise arguments_error(call.name, call.arguments)
        if call.closed:  # whitespace after the object of a call whose block has ended
            return
        if call is self._open_tool and not call.held and not call.arguments.empty:
            self._delta({"type": "input_json_delta", "partial_json": arguments})
            return
        call.held.append(arguments)
        if call is self._open_tool:
            self._send_held(call)

    def _send_held(self, call: _ToolCall) -> None:
        """The held fragments of the open call, once there is more than whitespace: the SDK's
        accumulator parses every fragment's concatenation and refuses one of whitespace only."""
        if call.held and not call.arguments.empty:
            text = call.held[0] if len(call.held) == 1 else "".join(call.held)
            call.held.clear()
            self._delta({"type": "input_json_delta", "partial_json": text})

    def _complete_arguments(self, call: _ToolCall) -> None:
        """Close a call's arguments: a prefix cut short gets the suffix that completes it."""
        call.closed = True
        self._send_held(call)
        arguments = call.arguments
        if arguments.empty or arguments.complete:
            call.held.clear()
            return
        suffix = arguments.completion()
        if suffix is None:
            raise arguments_error(call.name, arguments)
        arguments.feed(suffix)
        self._delta({"type": "input_json_delta", "partial_json": suffix})
        self._cut_call = True

    def _advance_tools(self) -> None:
        """Open the next waiting call once the open one is complete; its held fragments go first."""
        while self._waiting_tools and self._waiting_tools[0].name:
            if self._open_tool is not None and not self._open_tool.arguments.complete:
                return
            self._open_tool_block(self._waiting_tools.pop(0))

    def _open_tool_block(self, call: _ToolCall) -> None:
        if self._open_kind is not None:
            self._close_open_block()
        self._open_block(
            "tool_use",
            {"type": "tool_use", "id": tool_use_id(call.worker_id), "name": call.name or "", "input": {}},
        )
        self._open_tool = call
        self._send_held(call)

    def _close_all_blocks(self) -> None:
        """Close the open block, then send every held tool call whole, in order. A held call that
        never got a name cannot be a tool_use block (clients require one): the stream fails."""
        if any(not call.name for call in self._waiting_tools):
            raise ApiError(NAMELESS_TOOL_CALL)
        self._close_open_block()
        while self._waiting_tools:
            call = self._waiting_tools.pop(0)
            self._open_tool_block(call)
            self._close_open_block()

    def _end(self) -> None:
        if self.finished:
            return
        if self._unfinished is not None:
            raise self._unfinished
        self._close_all_blocks()
        if self._held_text and not self._has_tool_calls:
            self._open_block("text", {"type": "text", "text": ""})
            self._delta({"type": "text_delta", "text": "".join(self._held_text)})
            self._close_open_block()
        self._held_text.clear()
        # A call completed here was cut by max_tokens, whatever the worker says (llama.cpp ends a
        # forced call "tool_calls" when max_tokens cut it).
        finish_reason = "length" if self._cut_call else self._finish_reason
        stop = finish_to_stop_reason(
            finish_reason, self._matched_stop, self._context.stop_sequences, self._has_tool_calls
        )
        self._events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop.stop_reason, "stop_sequence": stop.stop_sequence},
                    "usage": self.usage,
                },
            )
        )
        self._events.append(("message_stop", {"type": "message_stop"}))
        self.finished = True


class WorkerSSETranslator:
    """A worker's SSE bytes → Anthropic events: the SSE decoder feeding ChatToMessagesStream."""

    def __init__(self, context: AnswerContext, messages: ChatToMessagesStream | None = None) -> None:
        self.messages = messages or ChatToMessagesStream(context)
        self._decoder = SSEDecoder()

    @property
    def finished(self) -> bool:
        return self.messages.finished

    @property
    def usage(self) -> dict[str, int]:
        return self.messages.usage

    def ping(self) -> list[Event]:
        return self.messages.ping()

    def fail(self, error: ParleyError) -> list[Event]:
        return self.messages.fail(error)

    def feed(self, data: bytes) -> list[Event]:
        try:
            payloads = self._decoder.feed(data)
        except ParleyError as error:
            return self.messages.fail(error)
        events: list[Event] = []
        for payload in payloads:
            events += self.messages.feed_data(payload)
        return events

    def end(self) -> list[Event]:
        """The worker's body ended (cleanly or not)."""
        events: list[Event] = []
        for payload in self._decoder.close():
            events += self.messages.feed_data(payload)
        return events + self.messages.close()
