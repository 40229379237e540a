"""OpenAI Chat Completions response → Anthropic message, and the rules the stream shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .errors import ApiError
from .ids import is_valid_tool_id, new_tool_use_id
from .tokens import estimate_text_tokens, worker_token_count_or

NAMELESS_TOOL_CALL = "The worker sent a tool call without a function name."

__all__ = [
    "NAMELESS_TOOL_CALL",
    "AnswerContext",
    "StopReason",
    "chat_to_message",
    "finish_to_stop_reason",
    "message_shell",
    "reasoning_of",
    "tool_arguments_to_input",
    "tool_use_id",
    "usage_to_anthropic",
]


@dataclass(frozen=True, slots=True)
class AnswerContext:
    """What the translation of an answer needs to know about the request it answers."""

    model: str
    message_id: str
    input_tokens_estimate: int
    thinking: bool = False
    stop_sequences: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StopReason:
    stop_reason: str
    stop_sequence: str | None = None


def finish_to_stop_reason(
    finish_reason: str | None, matched_stop: Any, stop_sequences: tuple[str, ...], has_tool_calls: bool
) -> StopReason:
    """Map a worker's finish_reason (and matched stop string, if it reports one) to Anthropic's.

    vLLM reports the matched string in `choices[].stop_reason`, SGLang in `matched_stop`; either
    may instead hold a token id, which is the end of turn. Ollama ends tool calls with "stop".
    """
    if finish_reason == "length":
        return StopReason("max_tokens")
    if has_tool_calls or finish_reason in ("tool_calls", "function_call"):
        return StopReason("tool_use")
    if finish_reason == "content_filter":
        return StopReason("refusal")
    if isinstance(matched_stop, str) and matched_stop in stop_sequences:
        return StopReason("stop_sequence", matched_stop)
    return StopReason("end_turn")


def usage_to_anthropic(usage: Any, input_estimate: int, output_estimate: int) -> dict[str, int]:
    """Anthropic counts cached prompt tokens apart from input_tokens; OpenAI counts them inside.

    A figure the worker gave that is no count (`worker_token_count`) is absent: the estimate stands.
    """
    prompt_tokens = input_estimate
    output_tokens = output_estimate
    cached = 0
    if isinstance(usage, dict):
        prompt_tokens = worker_token_count_or(usage.get("prompt_tokens"), input_estimate)
        output_tokens = worker_token_count_or(usage.get("completion_tokens"), output_estimate)
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict):
            cached = min(worker_token_count_or(details.get("cached_tokens"), 0), prompt_tokens)
    return {
        "input_tokens": prompt_tokens - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": output_tokens,
    }


def tool_arguments_to_input(arguments: Any) -> Any:
    """The tool input object: "" → {}, a JSON object → itself, anything else kept as the raw string.

    Some servers (Ollama) send arguments as an object already. Malformed JSON is kept as it
    came rather than dropped, so the client's tool reports the error to the model.
    """
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    try:
        parsed = orjson.loads(arguments)
    except (orjson.JSONDecodeError, TypeError):
        return arguments
    return parsed if isinstance(parsed, dict) else arguments


def tool_use_id(worker_id: Any) -> str:
    """The worker's id when it is a valid Anthropic tool id (it comes back in tool_result)."""
    return worker_id if is_valid_tool_id(worker_id) else new_tool_use_id()


def reasoning_of(fields: dict[str, Any]) -> str | None:
    """vLLM and llama.cpp say reasoning_content; newer vLLM, Ollama and OpenRouter say reasoning."""
    value = fields.get("reasoning_content")
    if not value:
        value = fields.get("reasoning")
    return value if isinstance(value, str) and value else None


def _first_choice(completion: dict[str, Any]) -> dict[str, Any]:
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ApiError("The worker's answer has no choices.")
    return choices[0]


def chat_to_message(completion: dict[str, Any], context: AnswerContext) -> dict[str, Any]:
    choice = _first_choice(completion)
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    output_chars = ""
    reasoning = reasoning_of(message)
    if reasoning and context.thinking:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(part.get("text", "") for part in text if isinstance(part, dict))
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
        output_chars += text
    tool_calls = message.get("tool_calls") or []
    for call in tool_calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not function.get("name"):
            raise ApiError(NAMELESS_TOOL_CALL)
        arguments = function.get("arguments")
        content.append(
            {
                "type": "tool_use",
                "id": tool_use_id(call.get("id")),
                "name": function["name"],
                "input": tool_arguments_to_input(arguments),
            }
        )
        output_chars += arguments if isinstance(arguments, str) else ""
    stop = finish_to_stop_reason(
        choice.get("finish_reason"),
        choice.get("stop_reason", choice.get("matched_stop")),
        context.stop_sequences,
        bool(tool_calls),
    )
    usage = usage_to_anthropic(
        completion.get("usage"),
        context.input_tokens_estimate,
        estimate_text_tokens(output_chars + (reasoning or "")),
    )
    return message_shell(context, content, stop.stop_reason, stop.stop_sequence, usage)


def message_shell(
    context: AnswerContext,
    content: list[dict[str, Any]],
    stop_reason: str | None,
    stop_sequence: str | None,
    usage: dict[str, int],
) -> dict[str, Any]:
    """A message in the field order and usage shape the real API sends."""
    return {
        "model": context.model,
        "id": context.message_id,
        "type": "message",
        "role": "assistant",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": usage["input_tokens"],
            "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
            "cache_read_input_tokens": usage["cache_read_input_tokens"],
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": usage["output_tokens"],
            "service_tier": "standard",
        },
    }
