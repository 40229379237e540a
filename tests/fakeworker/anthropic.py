"""An Answer rendered as the Anthropic Messages API, as vLLM's and llama.cpp's /v1/messages send it."""

from __future__ import annotations

import json
import uuid
from typing import Any

from .scripts import Answer, split_arguments, split_text


def _arguments(arguments: dict | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _output_tokens(answer: Answer) -> int:
    if answer.completion_tokens is not None:
        return answer.completion_tokens
    return max(1, len(split_text(answer.text)) + len(split_text(answer.reasoning or "")))


def _usage(answer: Answer, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": answer.prompt_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": answer.cached_tokens or 0,
        "output_tokens": output_tokens,
    }


def _stop_reason(answer: Answer) -> str:
    if answer.finish_reason == "length":
        return "max_tokens"
    return "tool_use" if answer.tool_calls else "end_turn"


def _blocks(answer: Answer) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if answer.reasoning:
        blocks.append({"type": "thinking", "thinking": answer.reasoning, "signature": ""})
    if answer.text:
        blocks.append({"type": "text", "text": answer.text})
    for call in answer.tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id or f"toolu_{uuid.uuid4().hex[:24]}",
                "name": call.name,
                "input": json.loads(_arguments(call.arguments) or "{}"),
            }
        )
    return blocks


def render_anthropic_buffered(answer: Answer, request_body: Any) -> bytes:
    message = {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": answer.model or request_body.get("model"),
        "content": _blocks(answer),
        "stop_reason": _stop_reason(answer),
        "stop_sequence": None,
        "usage": _usage(answer, _output_tokens(answer)),
    }
    return json.dumps(message).encode()


def _event(data: dict[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


def render_anthropic_stream(answer: Answer, request_body: Any) -> list[bytes]:
    message = json.loads(render_anthropic_buffered(answer, request_body))
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events = [_event({"type": "message_start", "message": start})]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            pieces, empty, kind, field = split_text(block["text"]), {"type": "text", "text": ""}, "text_delta", "text"
        elif block["type"] == "thinking":
            pieces, empty = split_text(block["thinking"]), {"type": "thinking", "thinking": "", "signature": ""}
            kind, field = "thinking_delta", "thinking"
        else:
            pieces, empty = split_arguments(json.dumps(block["input"])), {**block, "input": {}}
            kind, field = "input_json_delta", "partial_json"
        events.append(_event({"type": "content_block_start", "index": index, "content_block": empty}))
        for piece in pieces:
            delta = {"type": kind, field: piece}
            events.append(_event({"type": "content_block_delta", "index": index, "delta": delta}))
        events.append(_event({"type": "content_block_stop", "index": index}))
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    events.append(_event({"type": "message_delta", "delta": delta, "usage": {"output_tokens": usage["output_tokens"]}}))
    events.append(_event({"type": "message_stop"}))
    return events
