"""OpenAI Chat Completions response → Anthropic message, and the rules the stream shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ApiError
from .ids import is_tool_use_id, new_tool_use_id
from .tokens import estimate_tokens_of_size, worker_token_count_or
from .tool_input import arguments_to_input, read_arguments

NAMELESS_TOOL_CALL = "The worker sent a tool call without a function name."
THINKING_SIGNATURE = ""
"""The signature of a thinking block: workers sign nothing, so it is empty, buffered and streamed."""
FINISH_REASONS = frozenset(
    ("stop", "length", "tool_calls", "function_call", "content_filter", "eos_token", "stop_sequence")
)
"""The finish reasons of an answer the worker completed; any other means it did not. TGI before
2.2 said eos_token and stop_sequence where the others say stop."""

__all__ = [
    "FINISH_REASONS",
    "NAMELESS_TOOL_CALL",
    "THINKING_SIGNATURE",
    "AnswerContext",
    "StopReason",
    "chat_to_message",
    "finish_error",
    "finish_to_stop_reason",
    "message_shell",
    "odd_field",
    "reasoning_in",
    "reasoning_of",
    "text_in",
    "tool_use_id",
    "usage_to_anthropic",
    "utf8_size",
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


def finish_error(finish_reason: Any) -> ApiError | None:
    """The error for a finish_reason that says the worker did not finish its answer (vLLM's
    `abort` and `error`, any string Parley does not know, anything not a string); None for the
    known ones and for none at all (null, or "", which some servers send instead)."""
    if finish_reason is None:
        return None
    if isinstance(finish_reason, str):
        if finish_reason == "" or finish_reason in FINISH_REASONS:
            return None
        shown = repr(finish_reason[:64] + ("…" if len(finish_reason) > 64 else ""))
        return ApiError(f"The worker stopped its answer with finish_reason {shown}: the answer is incomplete.")
    return ApiError(
        "The worker stopped its answer with a finish_reason that is not a string: the answer is incomplete."
    )


def finish_to_stop_reason(
    finish_reason: str | None, matched_stop: Any, stop_sequences: tuple[str, ...], has_tool_calls: bool
) -> StopReason:
    """Map a worker's finish_reason (one `finish_error` lets pass) and matched stop string, if it
    reports one, to Anthropic's.

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


def utf8_size(text: str) -> int:
    """The bytes of `text` in UTF-8 (for estimates; a lone surrogate counts, never raises)."""
    return len(text.encode("utf-8", "surrogatepass"))


def odd_field(where: str, path: str, expected: str) -> ApiError:
    """A field Parley reads, of the wrong type: `where` is "answer" or "stream chunk"."""
    return ApiError(f"The worker's {where} has {path} that is not {expected}.")


def tool_use_id(worker_id: Any) -> str:
    """The worker's id when it is already an Anthropic tool_use id (`toolu_…`), else a new one."""
    return worker_id if is_tool_use_id(worker_id) else new_tool_use_id()


def reasoning_of(fields: dict[str, Any]) -> str | None:
    """vLLM and llama.cpp say reasoning_content; newer vLLM, Ollama and OpenRouter say reasoning.
    Lenient (for estimates of what passes through): a value that is not a string is none."""
    value = fields.get("reasoning_content")
    if not value:
        value = fields.get("reasoning")
    return value if isinstance(value, str) and value else None


def reasoning_in(fields: dict[str, Any], where: str, path: str) -> str | None:
    """`reasoning_of` for the translations: a reasoning field that is not a string is an error."""
    for name in ("reasoning_content", "reasoning"):
        value = fields.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise odd_field(where, f"{path}.{name}", "a string")
        if value:
            return value
    return None


def text_in(content: Any, where: str, path: str) -> str:
    """The text of a message's (or delta's) `content`: a string, null, or a list of parts whose
    `text` is joined (parts without text, such as images, add nothing)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise odd_field(where, path, "a string or a list")
    texts: list[str] = []
    for position, part in enumerate(content):
        if not isinstance(part, dict):
            raise odd_field(where, f"{path}[{position}]", "an object")
        text = part.get("text")
        if text is None:
            continue
        if not isinstance(text, str):
            raise odd_field(where, f"{path}[{position}].text", "a string")
        texts.append(text)
    return "".join(texts)


def _first_choice(completion: Any) -> dict[str, Any]:
    if not isinstance(completion, dict):
        raise ApiError("The worker's answer is not a JSON object.")
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ApiError("The worker's answer has no choices.")
    if not isinstance(choices[0], dict):
        raise odd_field("answer", "choices[0]", "an object")
    return choices[0]


def _tool_use(call: Any, path: str) -> tuple[dict[str, Any], bool]:
    """The call as a tool_use block, and whether its arguments were cut short."""
    if not isinstance(call, dict):
        raise odd_field("answer", path, "an object")
    function = call.get("function")
    if function is None:
        raise ApiError(NAMELESS_TOOL_CALL)
    if not isinstance(function, dict):
        raise odd_field("answer", f"{path}.function", "an object")
    name = function.get("name")
    if name is not None and not isinstance(name, str):
        raise odd_field("answer", f"{path}.function.name", "a string")
    if not name:
        raise ApiError(NAMELESS_TOOL_CALL)
    worker_id = call.get("id")
    if worker_id is not None and not isinstance(worker_id, str):
        raise odd_field("answer", f"{path}.id", "a string")
    tool_input, cut = read_arguments(function.get("arguments"), name)
    return {"type": "tool_use", "id": tool_use_id(worker_id), "name": name, "input": tool_input}, cut


HERMES_CALL_TAG = "<tool_call>"


def cut_markup_call(text: str | None, finish_reason: Any) -> dict[str, Any] | None:
    """vLLM's hermes tool parser (Qwen's and Hermes' models) gives a buffered call cut by
    max_tokens no tool_calls, only its markup as the text: `<tool_call>{"name": …, "arguments":
    {…`. Streamed, the same call arrives as tool_calls deltas. That call as a tool_use, its input
    completed as a streamed one's is; None for any other text."""
    if finish_reason != "length" or text is None or not text.lstrip().startswith(HERMES_CALL_TAG):
        return None
    try:
        call = arguments_to_input(text.lstrip()[len(HERMES_CALL_TAG) :], None)
    except ApiError:
        return None
    name, arguments = call.get("name"), call.get("arguments")  # a name before "arguments" is whole
    if not isinstance(name, str) or not name or not isinstance(arguments, dict):
        return None
    return {"type": "tool_use", "id": new_tool_use_id(), "name": name, "input": arguments}


def chat_to_message(completion: Any, context: AnswerContext) -> dict[str, Any]:
    """A chat.completion → the Anthropic message. Any field Parley reads that has the wrong type,
    and a finish_reason that says the worker did not finish, is an ApiError naming it.

    Content order: thinking, text, tool_use (an OpenAI message does not say where its text stood
    among its tool calls). Whitespace-only text is no text block when there are tool calls.
    """
    choice = _first_choice(completion)
    unfinished = finish_error(choice.get("finish_reason"))
    if unfinished is not None:
        raise unfinished
    message = choice.get("message")
    if message is None:
        message = {}
    elif not isinstance(message, dict):
        raise odd_field("answer", "choices[0].message", "an object")
    reasoning = reasoning_in(message, "answer", "choices[0].message")
    text = text_in(message.get("content"), "answer", "choices[0].message.content")
    calls = message.get("tool_calls")
    if calls is None:
        calls = []
    elif not isinstance(calls, list):
        raise odd_field("answer", "choices[0].message.tool_calls", "a list")
    read_calls = [_tool_use(call, f"choices[0].message.tool_calls[{n}]") for n, call in enumerate(calls)]
    tool_uses = [tool_use for tool_use, _ in read_calls]
    # A call completed by Parley was cut by max_tokens, whatever the worker says (llama.cpp ends a
    # forced call "tool_calls" when max_tokens cut it).
    finish_reason = "length" if any(cut for _, cut in read_calls) else choice.get("finish_reason")
    written = text  # for the output's estimate
    cut_call = None if tool_uses else cut_markup_call(text, finish_reason)
    if cut_call is not None:
        tool_uses, text = [cut_call], ""
    content: list[dict[str, Any]] = []
    if reasoning and context.thinking:
        content.append({"type": "thinking", "thinking": reasoning, "signature": THINKING_SIGNATURE})
    if text and not (tool_uses and text.isspace()):
        content.append({"type": "text", "text": text})
    content += tool_uses
    output = [written, reasoning or ""]
    output += (arguments for call in calls if isinstance(arguments := call["function"].get("arguments"), str))
    output_size = sum(map(utf8_size, output))
    stop = finish_to_stop_reason(
        finish_reason,
        choice.get("stop_reason", choice.get("matched_stop")),
        context.stop_sequences,
        bool(tool_uses),
    )
    usage = usage_to_anthropic(
        completion.get("usage"), context.input_tokens_estimate, estimate_tokens_of_size(output_size)
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
