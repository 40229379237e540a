"""OpenAI Chat Completions clients (`POST /v1/chat/completions`): requests and answers pass through.

What changes on the way: the request's `model` becomes the worker's, the output limit is
clamped, and usage is always asked for (it is metered); the answer's `model` becomes the name
the client asked for, and the usage-only chunk is dropped if the client did not ask for it. A
stream cut before its end gets an error chunk and `[DONE]`, as vLLM ends a failed stream.

The worker's `usage` reaches the client only with counts in it (`chat_usage_for_client`), the same
figures that are metered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from .anthropic_types import MAX_MODEL_NAME_LENGTH
from .errors import ApiError, InvalidRequestError, ParleyError, worker_chunk_error
from .request import WorkerProfile, fit_max_tokens
from .response import (
    NAMELESS_TOOL_CALL,
    finish_error,
    odd_field,
    reasoning_in,
    reasoning_of,
    text_in,
    usage_to_anthropic,
)
from .sse import SSEDecoder
from .tokens import estimate_text_tokens, estimate_tokens_of_size, worker_token_count, worker_token_count_or

if TYPE_CHECKING:
    from .answer_guard import ChatAnswerGuard

__all__ = [
    "ChatStreamRelay",
    "answer_for_client",
    "chat_error_body",
    "chat_request_for_worker",
    "chat_usage_for_client",
    "parse_chat_request",
]

_DONE = b"data: [DONE]\n\n"
_UNSENDABLE = "The worker's answer holds JSON Parley cannot send on (nested too deeply)."
PING = b": ping\n\n"


def parse_chat_request(body: bytes) -> dict[str, Any]:
    try:
        chat = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(chat, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    if not isinstance(chat.get("model"), str) or not chat["model"]:
        raise InvalidRequestError("model: Field required (a string)")
    if len(chat["model"]) > MAX_MODEL_NAME_LENGTH:
        raise InvalidRequestError(f"model: String should have at most {MAX_MODEL_NAME_LENGTH} characters")
    messages = chat.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise InvalidRequestError("messages: a non-empty list of message objects is required")
    if "stream" in chat and not isinstance(chat["stream"], bool):
        raise InvalidRequestError("stream: Input should be a valid boolean")
    for field in ("max_tokens", "max_completion_tokens"):
        value = chat.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InvalidRequestError(f"{field}: Input should be a positive integer")
    return chat


def chat_request_for_worker(chat: dict[str, Any], worker: WorkerProfile, prompt_tokens: int) -> dict[str, Any]:
    forwarded = {**chat, "model": worker.model}
    field = "max_completion_tokens" if "max_completion_tokens" in chat else "max_tokens"
    requested = chat.get(field)
    limit = fit_max_tokens(requested or 1 << 30, worker, prompt_tokens)
    if requested is not None or limit < 1 << 30:
        forwarded[field] = limit
    if chat.get("stream"):
        forwarded["stream_options"] = {**(chat.get("stream_options") or {}), "include_usage": True}
    return forwarded


def chat_error_body(error: ParleyError) -> dict[str, Any]:
    return {"error": {"message": error.message, "type": error.type, "param": None, "code": error.status}}


def chat_usage_for_client(usage: Any, prompt_estimate: int, completion_estimate: int) -> dict[str, Any] | None:
    """The worker's OpenAI usage object with only counts in it, agreeing with `usage_to_anthropic`.

    A prompt or completion figure that is no count becomes the estimate, `total_tokens` is their
    sum, and in the details a figure that is no count is dropped; cached tokens are at most the
    prompt, reasoning tokens at most the completion. A usage that is not an object becomes null.
    """
    if not isinstance(usage, dict):
        return None
    prompt = worker_token_count_or(usage.get("prompt_tokens"), prompt_estimate)
    completion = worker_token_count_or(usage.get("completion_tokens"), completion_estimate)
    sanitized = {**usage, "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    for field, capped, most in (
        ("prompt_tokens_details", "cached_tokens", prompt),
        ("completion_tokens_details", "reasoning_tokens", completion),
    ):
        if field in usage:
            sanitized[field] = _details_for_client(usage[field], capped, most)
    return sanitized


def _details_for_client(details: Any, capped: str, most: int) -> dict[str, Any] | None:
    if not isinstance(details, dict):
        return None
    counts = {name: worker_token_count(value) for name, value in details.items()}
    kept = {name: count for name, count in counts.items() if count is not None}
    if capped in kept:
        kept[capped] = min(kept[capped], most)
    return kept


def _completion_estimate(answer: dict[str, Any]) -> int:
    """Output tokens estimated from the first choice's text, reasoning and tool arguments."""
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    parts = [message["content"]] if isinstance(message.get("content"), str) else []
    parts.append(reasoning_of(message) or "")
    for call in message.get("tool_calls") if isinstance(message.get("tool_calls"), list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            parts.append(function["arguments"])
    return estimate_text_tokens("".join(parts))


def _arguments_as_text(function: dict[str, Any], where: str, path: str) -> None:
    """A function's name and arguments as OpenAI clients read them: strings (Ollama's object of
    arguments becomes its JSON text, in place)."""
    name = function.get("name")
    if name is not None and not isinstance(name, str):
        raise odd_field(where, f"{path}.name", "a string")
    arguments = function.get("arguments")
    if isinstance(arguments, dict):
        function["arguments"] = orjson.dumps(arguments).decode()
    elif arguments is not None and not isinstance(arguments, str):
        raise odd_field(where, f"{path}.arguments", "a string")


def check_completion(answer: Any) -> None:
    """An answer an OpenAI client can read, or an ApiError naming the first field that is not:
    choices a non-empty list of objects, each with a message object whose content is text (or
    parts) and whose tool calls name their function, and a finish_reason that says it finished."""
    if not isinstance(answer, dict):
        raise ApiError("The worker's answer is not a JSON object.")
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ApiError("The worker's answer has no choices.")
    for position, choice in enumerate(choices):
        path = f"choices[{position}]"
        if not isinstance(choice, dict):
            raise odd_field("answer", path, "an object")
        message = choice.get("message")
        if not isinstance(message, dict):
            raise odd_field("answer", f"{path}.message", "an object")
        text_in(message.get("content"), "answer", f"{path}.message.content")
        reasoning_in(message, "answer", f"{path}.message")
        calls = message.get("tool_calls")
        if calls is not None and not isinstance(calls, list):
            raise odd_field("answer", f"{path}.message.tool_calls", "a list")
        for index, call in enumerate(calls or ()):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
                raise ApiError(NAMELESS_TOOL_CALL)
            _arguments_as_text(function, "answer", f"{path}.message.tool_calls[{index}].function")
        error = finish_error(choice.get("finish_reason"))
        if error is not None:
            raise error


def answer_for_client(answer: dict[str, Any], model: str, prompt_estimate: int = 0) -> dict[str, Any]:
    """The worker's answer under the client's model name, its shape (`check_completion`) and usage
    (`chat_usage_for_client`) checked. An answer the app could not encode (nested deeper than
    orjson writes) is an ApiError."""
    check_completion(answer)
    client_answer = {**answer, "model": model}
    if "usage" in answer:
        client_answer["usage"] = chat_usage_for_client(answer["usage"], prompt_estimate, _completion_estimate(answer))
    try:
        orjson.dumps(client_answer)
    except orjson.JSONEncodeError:
        raise ApiError(_UNSENDABLE) from None
    return client_answer


def check_chunk(chunk: Any) -> int:
    """A chunk an OpenAI client can read, or the ParleyError to end the stream with: the worker's
    own error (`data: {"error": …}`), a field of the wrong type, a nameless tool call's first
    delta, or a finish_reason that says the answer is incomplete. The characters of output it
    carries (text, reasoning, tool arguments), for the estimate. Ollama's object of arguments
    becomes its JSON text."""
    if not isinstance(chunk, dict):
        raise ApiError("The worker sent a stream chunk that is not a JSON object.")
    choices = chunk.get("choices")
    if "error" in chunk and not choices:
        raise worker_chunk_error(chunk["error"])
    if choices is None and "choices" in chunk:
        chunk["choices"] = []  # a usage chunk's, as OpenAI's own
    elif choices is not None and not isinstance(choices, list):
        raise odd_field("stream chunk", "choices", "a list")
    characters = 0
    for position, choice in enumerate(choices or ()):
        path = f"choices[{position}]"
        if not isinstance(choice, dict):
            raise odd_field("stream chunk", path, "an object")
        delta = choice.get("delta")
        if delta is not None and not isinstance(delta, dict):
            raise odd_field("stream chunk", f"{path}.delta", "an object")
        delta = delta or {}
        characters += len(text_in(delta.get("content"), "stream chunk", f"{path}.delta.content"))
        characters += len(reasoning_in(delta, "stream chunk", f"{path}.delta") or "")
        calls = delta.get("tool_calls")
        if calls is not None and not isinstance(calls, list):
            raise odd_field("stream chunk", f"{path}.delta.tool_calls", "a list")
        for index, call in enumerate(calls or ()):
            call_path = f"{path}.delta.tool_calls[{index}]"
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(call, dict) or (function is not None and not isinstance(function, dict)):
                raise odd_field("stream chunk", call_path, "an object with a function object")
            if function is not None:
                _arguments_as_text(function, "stream chunk", f"{call_path}.function")
                characters += len(function.get("arguments") or "")
        error = finish_error(choice.get("finish_reason"))
        if error is not None:
            raise error
    return characters


class ChatStreamRelay:
    """A worker's Chat Completions stream checked and relayed to an OpenAI client; through
    `guard` (core/answer_guard.py) when the request's policy has one: a refused answer ends with
    its choice's `finish_reason: "content_filter"`, the usage chunk if the client asked for
    usage, and `[DONE]`."""

    def __init__(
        self, model: str, prompt_estimate: int, client_wants_usage: bool, guard: ChatAnswerGuard | None = None
    ) -> None:
        self._model = model
        self._guard = guard
        self._prompt_estimate = prompt_estimate
        self._client_wants_usage = client_wants_usage
        self._decoder = SSEDecoder()
        self._worker_usage: dict[str, Any] | None = None
        self._output_chars = 0
        self._finish_seen = False
        self.finished = False

    @property
    def refused(self) -> bool:
        return self._guard is not None and self._guard.refused is not None

    @property
    def _output_estimate(self) -> int:
        return estimate_tokens_of_size(self._output_chars)

    @property
    def usage(self) -> dict[str, int]:
        return usage_to_anthropic(self._worker_usage, self._prompt_estimate, self._output_estimate)

    def feed(self, data: bytes) -> bytes:
        try:
            payloads = self._decoder.feed(data)
        except ParleyError as error:
            return self.fail(error)
        return b"".join(self._payload(payload) for payload in payloads)

    def end(self) -> bytes:
        out = b"".join(self._payload(payload) for payload in self._decoder.close())
        if not self.finished:
            if self._finish_seen:
                self.finished = True
                return out + _DONE
            return out + self.fail(ApiError("The worker's stream ended before the answer was complete."))
        return out

    def fail(self, error: ParleyError) -> bytes:
        if self.finished:
            return b""
        self.finished = True
        return b"data: " + orjson.dumps(chat_error_body(error)) + b"\n\n" + _DONE

    def _payload(self, payload: str) -> bytes:
        if self.finished:
            return b""
        if payload == "[DONE]":
            self.finished = True
            return _DONE
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return self.fail(ApiError("The worker sent a stream chunk that is not valid JSON."))
        try:
            self._output_chars += check_chunk(chunk)
        except ParleyError as error:
            return self.fail(error)
        if isinstance(chunk.get("usage"), dict):
            self._worker_usage = chunk["usage"]
        if any(choice.get("finish_reason") for choice in chunk.get("choices") or ()):
            self._finish_seen = True
        if not self._client_wants_usage:
            if not chunk.get("choices") and "usage" in chunk:
                return b""
            chunk.pop("usage", None)
        elif "usage" in chunk:
            chunk["usage"] = chat_usage_for_client(chunk["usage"], self._prompt_estimate, self._output_estimate)
        if "model" in chunk:
            chunk["model"] = self._model
        if self._guard is not None:
            chunk = self._guard.chunk(chunk)
        try:
            out = b"data: " + orjson.dumps(chunk) + b"\n\n"
        except orjson.JSONEncodeError:  # nested deeper than orjson writes (it reads deeper)
            return self.fail(ApiError(_UNSENDABLE))
        if self.refused:
            self.finished = True
            if self._client_wants_usage:
                usage = chat_usage_for_client(self._worker_usage or {}, self._prompt_estimate, self._output_estimate)
                closing = {key: chunk[key] for key in ("id", "object", "created", "model") if key in chunk}
                out += b"data: " + orjson.dumps({**closing, "choices": [], "usage": usage}) + b"\n\n"
            out += _DONE
        return out
