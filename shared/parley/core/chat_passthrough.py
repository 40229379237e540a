"""OpenAI Chat Completions clients (`POST /v1/chat/completions`): requests and answers pass through.

What changes on the way: the request's `model` becomes the worker's, the output limit is
clamped, and usage is always asked for (it is metered); the answer's `model` becomes the name
the client asked for, and the usage-only chunk is dropped if the client did not ask for it. A
stream cut before its end gets an error chunk and `[DONE]`, as vLLM ends a failed stream.
"""

from __future__ import annotations

from typing import Any

import orjson

from .errors import ApiError, InvalidRequestError, ParleyError
from .request import WorkerProfile, fit_max_tokens
from .response import usage_to_anthropic
from .sse import SSEDecoder

__all__ = ["ChatStreamRelay", "chat_error_body", "chat_request_for_worker", "parse_chat_request"]

_DONE = b"data: [DONE]\n\n"
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


def answer_for_client(answer: dict[str, Any], model: str) -> dict[str, Any]:
    return {**answer, "model": model}


class ChatStreamRelay:
    def __init__(self, model: str, prompt_estimate: int, client_wants_usage: bool) -> None:
        self._model = model
        self._prompt_estimate = prompt_estimate
        self._client_wants_usage = client_wants_usage
        self._decoder = SSEDecoder()
        self._worker_usage: dict[str, Any] | None = None
        self._output_chars = 0
        self._finish_seen = False
        self.finished = False

    @property
    def usage(self) -> dict[str, int]:
        return usage_to_anthropic(self._worker_usage, self._prompt_estimate, -(-self._output_chars // 4))

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
        if not isinstance(chunk, dict):
            return self.fail(ApiError("The worker sent a stream chunk that is not a JSON object."))
        if isinstance(chunk.get("usage"), dict):
            self._worker_usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                delta = choice.get("delta")
                if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                    self._output_chars += len(delta["content"])
                if choice.get("finish_reason"):
                    self._finish_seen = True
        if not self._client_wants_usage:
            if not chunk.get("choices") and "usage" in chunk:
                return b""
            chunk.pop("usage", None)
        if "model" in chunk:
            chunk["model"] = self._model
        return b"data: " + orjson.dumps(chunk) + b"\n\n"
