"""OpenAI chat.completion.chunk stream → Anthropic Messages stream events.

`ChatToMessagesStream` is a state machine fed one parsed chunk at a time. Every call returns
the events to send, as `(event_name, data)` pairs; it does no I/O and keeps no clock.

The Anthropic grammar it guarantees: `message_start`, then content blocks strictly one after
another (`content_block_start`, deltas of the block's own kind at its own index,
`content_block_stop`), never an empty text block, then one `message_delta` with the stop
reason and cumulative usage, then `message_stop`. A stream that fails ends with one `error`
event instead.

Parallel tool calls: the block of one call is open at a time and its argument fragments are
streamed as they arrive. A call that starts while another is open takes over once the open
call's arguments form a complete JSON value (every known server sends calls one after
another); until then its fragments are held and sent as soon as its block opens.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from .errors import ApiError, ParleyError, error_body, worker_error
from .response import (
    NAMELESS_TOOL_CALL,
    AnswerContext,
    finish_to_stop_reason,
    message_shell,
    reasoning_of,
    tool_use_id,
    usage_to_anthropic,
)
from .sse import SSEDecoder
from .tokens import estimate_tokens_of_size, worker_token_count

__all__ = ["ChatToMessagesStream", "Event", "WorkerSSETranslator"]

Event = tuple[str, dict[str, Any]]

PING: Event = ("ping", {"type": "ping"})


@dataclass(slots=True)
class _ToolCall:
    worker_id: Any
    name: str | None
    arguments: list[str] = field(default_factory=list)
    block_index: int | None = None
    closed: bool = False

    @property
    def complete(self) -> bool:
        text = "".join(self.arguments).strip()
        if not text.endswith("}"):
            return False
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError:
            return False
        return True


class ChatToMessagesStream:
    def __init__(self, context: AnswerContext) -> None:
        self._context = context
        self._started = False
        self.finished = False
        self._next_index = 0
        self._open_kind: str | None = None
        self._open_tool: _ToolCall | None = None
        self._calls_by_worker_index: dict[Any, _ToolCall] = {}
        self._waiting_tools: list[_ToolCall] = []
        self._has_tool_calls = False
        self._finish_reason: str | None = None
        self._matched_stop: Any = None
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
        if self.finished:
            return []
        if not isinstance(chunk, dict):
            return self.fail(ApiError("The worker sent a stream chunk that is not a JSON object."))
        if "error" in chunk and not chunk.get("choices"):
            return self.fail(_chunk_error(chunk["error"]))
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._worker_usage = usage
        self._start(usage if isinstance(usage, dict) else None)
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            self._choice(choices[0])
        if self._finish_reason is not None and self._worker_usage is not None:
            self._end()
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
        self._start(None)
        self._end()
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
        """Usage so far: the worker's figures where it gave them, estimates otherwise."""
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

    def _choice(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = reasoning_of(delta)
            if reasoning:
                self._output_bytes += len(reasoning.encode())
                if self._context.thinking:
                    self._thinking(reasoning)
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._output_bytes += len(content.encode())
                self._text(content)
            tool_calls = delta.get("tool_calls")
            if isinstance(tool_calls, list):
                for position, call in enumerate(tool_calls):
                    if isinstance(call, dict):
                        self._tool_delta(call, position)
        finish_reason = choice.get("finish_reason")
        if finish_reason:
            self._finish_reason = finish_reason
            self._matched_stop = choice.get("stop_reason", choice.get("matched_stop"))
            self._close_all_blocks()

    def _open_block(self, kind: str, block: dict[str, Any]) -> int:
        index = self._next_index
        self._next_index += 1
        self._open_kind = kind
        self._events.append(
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        )
        return index

    def _close_open_block(self) -> None:
        if self._open_kind is None:
            return
        if self._open_tool is not None:
            self._open_tool.closed = True
            self._open_tool = None
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
        if self._open_kind != "text":
            self._close_all_blocks()
            self._open_block("text", {"type": "text", "text": ""})
        self._delta({"type": "text_delta", "text": text})

    def _thinking(self, text: str) -> None:
        if self._open_kind != "thinking":
            self._close_all_blocks()
            self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        self._delta({"type": "thinking_delta", "thinking": text})

    def _tool_delta(self, delta: dict[str, Any], position: int) -> None:
        function = delta.get("function") if isinstance(delta.get("function"), dict) else {}
        worker_index = delta.get("index", position)
        worker_id = delta.get("id")
        name = function.get("name")
        arguments = function.get("arguments")
        if isinstance(arguments, dict):
            arguments = orjson.dumps(arguments).decode()
        call = self._calls_by_worker_index.get(worker_index)
        if call is None or (worker_id and call.worker_id and worker_id != call.worker_id):
            # A new call; Ollama may number every call 0, so a new id also means a new call.
            call = _ToolCall(worker_id=worker_id, name=name or None)
            self._calls_by_worker_index[worker_index] = call
            self._has_tool_calls = True
            self._waiting_tools.append(call)
        else:
            if worker_id and not call.worker_id:
                call.worker_id = worker_id
            if name and not call.name:
                call.name = name
        if isinstance(arguments, str) and arguments:
            self._output_bytes += len(arguments.encode())
            call.arguments.append(arguments)
            if call is self._open_tool:
                self._delta({"type": "input_json_delta", "partial_json": arguments})
        if self._waiting_tools:
            self._advance_tools()

    def _advance_tools(self) -> None:
        """Open the next waiting call once the open one is complete; its held fragments go first."""
        while self._waiting_tools and self._waiting_tools[0].name:
            if self._open_tool is not None and not self._open_tool.complete:
                return
            self._open_tool_block(self._waiting_tools.pop(0))

    def _open_tool_block(self, call: _ToolCall) -> None:
        if self._open_kind is not None:
            self._close_open_block()
        call.block_index = self._open_block(
            "tool_use",
            {"type": "tool_use", "id": tool_use_id(call.worker_id), "name": call.name or "", "input": {}},
        )
        self._open_tool = call
        if call.arguments:
            self._delta({"type": "input_json_delta", "partial_json": "".join(call.arguments)})

    def _close_all_blocks(self) -> None:
        """Close the open block, then send every held tool call whole, in order. A held call that
        never got a name cannot be a tool_use block (clients require one): the stream fails."""
        if any(not call.name for call in self._waiting_tools):
            self._waiting_tools.clear()
            self._events.append(("error", error_body(ApiError(NAMELESS_TOOL_CALL))))
            self.finished = True
            return
        self._close_open_block()
        while self._waiting_tools:
            call = self._waiting_tools.pop(0)
            self._open_tool_block(call)
            self._close_open_block()

    def _end(self) -> None:
        if self.finished:
            return
        self._close_all_blocks()
        if self.finished:
            return
        stop = finish_to_stop_reason(
            self._finish_reason, self._matched_stop, self._context.stop_sequences, self._has_tool_calls
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


def _chunk_error(error: Any) -> ParleyError:
    """vLLM reports a failure after the stream started as `data: {"error": {...}}`."""
    status = 500
    if isinstance(error, dict):
        code = error.get("code")
        if isinstance(code, int) and 400 <= code < 600:
            status = code
        elif isinstance(code, str) and code.isdigit():
            status = int(code)
    return worker_error(status, {"error": error})


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
