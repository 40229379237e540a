"""Checks that any Anthropic event stream must pass, shared by unit and integration tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from anthropic.lib.streaming._messages import accumulate_event

__all__ = ["StreamResult", "accumulate", "assert_well_formed"]

_DELTA_KINDS = {
    "text": {"text_delta", "citations_delta"},
    "thinking": {"thinking_delta", "signature_delta"},
    "redacted_thinking": set(),
    "tool_use": {"input_json_delta"},
}


@dataclass
class StreamResult:
    """What a well-formed stream said, assembled."""

    message: dict[str, Any]
    content: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    pings: int = 0

    @property
    def text(self) -> str:
        return "".join(block["text"] for block in self.content if block["type"] == "text")


def assert_well_formed(
    events: list[tuple[str, dict[str, Any]]],
    expect_error: bool = False,
    tool_input_must_parse: bool = True,
    signed_thinking: bool = False,
) -> StreamResult:
    """Check Anthropic's stream grammar and return what the stream said.

    message_start first and once; content blocks strictly one after another, each started once at
    the next index, with deltas of its own kind at its own index, stopped exactly once; no empty
    text block; tool input a JSON object; then message_delta and message_stop last. A failed
    stream (expect_error) instead ends with one `error` event and has no message_delta/stop.
    `signed_thinking`: every thinking block's last delta is a `signature_delta`, as Anthropic sends
    it (Parley's translated streams do; a native worker's may not).
    """
    assert events, "empty stream"
    for name, data in events:
        assert data.get("type") == name, f"event {name!r} carries data of type {data.get('type')!r}"
    assert events[0][0] == "message_start", f"first event is {events[0][0]!r}, not message_start"
    result = StreamResult(message=events[0][1]["message"])
    assert result.message["content"] == [], "message_start must carry empty content"
    usage = dict(result.message["usage"])
    open_index: int | None = None
    last_delta: str | None = None
    buffers: list[str] = []
    ended = None  # "message_delta", "message_stop" or "error" once seen

    for position, (name, data) in enumerate(events[1:], start=1):
        where = f"event {position} ({name})"
        assert ended not in ("message_stop", "error"), f"{where} after {ended}"
        if ended == "message_delta":
            assert name == "message_stop", f"{where} between message_delta and message_stop"
        if name == "ping":
            assert data == {"type": "ping"}, f"{where}: ping data {data!r}"
            result.pings += 1
        elif name == "message_start":
            raise AssertionError(f"{where}: a second message_start")
        elif name == "content_block_start":
            assert open_index is None, f"{where}: block {open_index} is still open"
            assert data["index"] == len(result.content), (
                f"{where}: index {data['index']}, expected {len(result.content)}"
            )
            block = dict(data["content_block"])
            assert block["type"] in _DELTA_KINDS, f"{where}: unknown block type {block['type']!r}"
            if block["type"] == "text":
                assert block["text"] == "", f"{where}: a text block must start empty"
            if block["type"] == "tool_use":
                assert block["input"] == {} and block["id"] and block["name"], f"{where}: bad tool_use start {block}"
            result.content.append(block)
            buffers.append("")
            open_index = data["index"]
            last_delta = None
        elif name == "content_block_delta":
            assert open_index is not None and data["index"] == open_index, (
                f"{where}: delta at index {data['index']}, open block is {open_index}"
            )
            block, delta = result.content[open_index], data["delta"]
            assert delta["type"] in _DELTA_KINDS[block["type"]], (
                f"{where}: {delta['type']} inside a {block['type']} block"
            )
            if signed_thinking and block["type"] == "thinking" and last_delta == "signature_delta":
                raise AssertionError(f"{where}: a delta after the thinking block's signature_delta")
            last_delta = delta["type"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            elif delta["type"] == "citations_delta":
                block.setdefault("citations", []).append(delta["citation"])
            else:
                buffers[open_index] += delta["partial_json"]
        elif name == "content_block_stop":
            assert open_index is not None and data["index"] == open_index, (
                f"{where}: stop at index {data['index']}, open block is {open_index}"
            )
            block = result.content[open_index]
            if block["type"] == "text":
                assert block["text"] != "", f"{where}: empty text block {open_index}"
            if block["type"] == "thinking" and signed_thinking:
                assert last_delta == "signature_delta", f"{where}: thinking block {open_index} has no signature_delta"
            if block["type"] == "tool_use" and tool_input_must_parse:
                raw = buffers[open_index]
                try:
                    block["input"] = json.loads(raw) if raw else {}
                except ValueError:
                    raise AssertionError(f"{where}: tool input is not JSON: {raw!r}") from None
                assert isinstance(block["input"], dict), f"{where}: tool input is not an object: {raw!r}"
            open_index = None
        elif name == "message_delta":
            assert open_index is None, f"{where}: block {open_index} was never stopped"
            assert ended is None, f"{where}: a second message_delta"
            result.stop_reason = data["delta"]["stop_reason"]
            result.stop_sequence = data["delta"].get("stop_sequence")
            assert result.stop_reason is not None, f"{where}: no stop_reason"
            usage.update({key: value for key, value in data["usage"].items() if value is not None})
            ended = "message_delta"
        elif name == "message_stop":
            assert ended == "message_delta", f"{where}: message_stop without message_delta before it"
            ended = "message_stop"
        elif name == "error":
            assert ended is None, f"{where}: error after {ended}"
            error = data.get("error")
            assert isinstance(error, dict) and error.get("type") and error.get("message"), f"{where}: bad error {data}"
            result.error = error
            ended = "error"
        else:
            raise AssertionError(f"{where}: unknown event")

    result.usage = usage
    if expect_error:
        assert ended == "error", f"the stream should end with an error event, but ended with {events[-1][0]!r}"
    else:
        assert result.error is None, f"the stream failed: {result.error}"
        assert ended == "message_stop", f"the stream ended with {events[-1][0]!r}, not message_delta + message_stop"
    return result


def accumulate(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The final message, folded exactly as the official Python SDK's MessageStream does it."""
    snapshot = None
    json_buffers: dict[int, bytes] = {}
    for name, data in events:
        if name in ("ping", "error"):
            continue
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=json_buffers)
    assert snapshot is not None
    message = snapshot.to_dict(exclude_none=True)
    for block, built in zip(message["content"], snapshot.content, strict=True):
        if block["type"] == "tool_use":
            block["input"] = built.input  # its nulls are the input's, not absent fields
    return message
