"""Checks that any Anthropic event stream must pass, shared by unit and integration tests."""

from __future__ import annotations

from typing import Any

from anthropic.lib.streaming._messages import accumulate_event

__all__ = ["accumulate", "assert_well_formed"]

_DELTA_FOR_BLOCK = {
    "text": {"text_delta", "citations_delta"},
    "thinking": {"thinking_delta", "signature_delta"},
    "tool_use": {"input_json_delta"},
}


def assert_well_formed(events: list[tuple[str, dict[str, Any]]]) -> None:
    """Anthropic's grammar: message_start; blocks one after another, each started once, with
    deltas of its own kind at its own index, stopped once; no empty text block; then
    message_delta and message_stop last. A stream may instead end with one `error` event."""
    names = [name for name, _ in events if name != "ping"]
    assert names, "no events"
    assert names[0] == "message_start", names
    for name, data in events:
        assert data["type"] == name, (name, data)
    if names[-1] == "error":
        assert names.count("error") == 1 and "message_stop" not in names, names
    else:
        assert names[-2:] == ["message_delta", "message_stop"], names
        assert names.count("message_delta") == 1 and names.count("message_stop") == 1, names
    open_index: int | None = None
    open_kind: str | None = None
    next_index = 0
    text_seen: dict[int, str] = {}
    for name, data in events:
        if name == "content_block_start":
            assert open_index is None, f"block {data['index']} started while {open_index} is open"
            assert data["index"] == next_index, (data["index"], next_index)
            open_index, open_kind = data["index"], data["content_block"]["type"]
            next_index += 1
            if open_kind == "text":
                text_seen[open_index] = data["content_block"]["text"]
        elif name == "content_block_delta":
            assert data["index"] == open_index, (data, open_index)
            assert data["delta"]["type"] in _DELTA_FOR_BLOCK[open_kind], (open_kind, data["delta"])
            if open_kind == "text":
                text_seen[open_index] += data["delta"]["text"]
        elif name == "content_block_stop":
            assert data["index"] == open_index, (data, open_index)
            if open_kind == "text":
                assert text_seen[open_index], f"empty text block {open_index}"
            open_index = open_kind = None
        elif name in ("message_delta", "message_stop"):
            assert open_index is None, f"{name} while block {open_index} is open"
    if names[-1] != "error":
        assert open_index is None


def accumulate(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The final message, folded exactly as the official Python SDK's MessageStream does it."""
    snapshot = None
    json_buffers: dict[int, bytes] = {}
    for name, data in events:
        if name in ("ping", "error"):
            continue
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=json_buffers)
    assert snapshot is not None
    return snapshot.to_dict(exclude_none=True)
