"""Scripts a test enqueues on a FakeWorker, and how an Answer is rendered per server flavour.

The shapes follow what the real servers put on the wire:
vLLM (vllm/entrypoints/openai/serving_chat.py, pydantic ``model_dump_json(exclude_unset=True)``),
SGLang (python/sglang/srt/entrypoints/openai/serving_chat.py, ``model_dump_json()`` with every null),
llama.cpp (tools/server/server-task.cpp ``to_json_oaicompat_chat*``, common/chat.cpp diffs),
Ollama (openai/openai.go ``ToChunk``/``ToChatCompletion`` and the middleware ChatWriter).
"""

from __future__ import annotations

import json
import random
import re
import secrets
import string
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Union

Flavour = Literal["vllm", "ollama", "llamacpp", "sglang"]
UsagePlacement = Literal["last", "none", "with_finish", "continuous"]
ReasoningField = Literal["reasoning_content", "reasoning"]

FLAVOURS = ("vllm", "ollama", "llamacpp", "sglang")
USAGE_PLACEMENTS = ("last", "none", "with_finish", "continuous")
REASONING_FIELDS = ("reasoning_content", "reasoning")
LLAMACPP_FINGERPRINT = "b6432-5fa4ba43"
DONE_EVENT = b"data: [DONE]\n\n"


@dataclass
class ToolCall:
    name: str
    arguments: dict | str = field(default_factory=dict)
    id: str | None = None


@dataclass
class Answer:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    reasoning: str | None = None
    reasoning_field: ReasoningField | None = None
    finish_reason: str | None = None
    matched_stop: str | int | None = None
    prompt_tokens: int = 11
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    usage: UsagePlacement | None = None
    flavour: Flavour = "vllm"
    chunk_delay: float = 0.0
    interleave: bool = False
    done: bool = True
    model: str | None = None
    split_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.flavour not in FLAVOURS:
            raise ValueError(f"unknown flavour {self.flavour!r}; expected one of {FLAVOURS}")
        if self.usage is not None and self.usage not in USAGE_PLACEMENTS:
            raise ValueError(f"unknown usage placement {self.usage!r}; expected one of {USAGE_PLACEMENTS}")
        if self.reasoning_field is not None and self.reasoning_field not in REASONING_FIELDS:
            raise ValueError(f"unknown reasoning_field {self.reasoning_field!r}")
        if self.split_bytes is not None and self.split_bytes < 1:
            raise ValueError("split_bytes must be a positive number of bytes")


@dataclass
class WorkerError:
    status: int
    body: dict | str
    headers: dict[str, str] | None = None


@dataclass
class Drop:
    answer: Answer
    after_events: int


@dataclass
class Hang:
    seconds: float
    then: Script | None = None


@dataclass
class Garbage:
    answer: Answer
    at_event: int
    line: str = "data: {not json"


@dataclass
class StreamError:
    answer: Answer
    after_events: int
    error: dict


@dataclass
class Stall:
    """Stream the answer's first `after_events` events, go silent for `seconds`, then the rest."""

    answer: Answer
    after_events: int
    seconds: float


@dataclass
class RawAnswer:
    """An answer written byte for byte as given, whatever the request: any status, any header lines
    (raw bytes: non-ASCII, duplicate or malformed ones included), the body as chunks written one at a
    time. `chunked` frames each chunk as an HTTP/1.1 chunk, then the terminating empty chunk unless
    `terminate` is false; otherwise the chunks go out as they are (framed by whatever content-length
    the headers declare, or by the close). `close_after`: the connection closes after that many
    chunks (an early close). The connection always closes after the answer (`connection: close`)."""

    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    chunked: bool = False
    terminate: bool = True
    close_after: int | None = None
    reason: bytes = b"OK"

    def wire(self) -> list[bytes]:
        """What goes on the wire, one write per item: the head, then each chunk as framed."""
        head = b"HTTP/1.1 %d %s\r\n" % (self.status, self.reason)
        head += b"".join(name + b": " + value + b"\r\n" for name, value in self.headers)
        head += b"connection: close\r\n\r\n"
        chunks = self.chunks if self.close_after is None else self.chunks[: self.close_after]
        if self.chunked:
            framed = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks if chunk]
            if self.terminate and self.close_after is None:
                framed.append(b"0\r\n\r\n")
            return [head, *framed]
        return [head, *chunks]


@dataclass
class Gate:
    """Hold the request until the test sets `release` (an event, never a sleep), then play `then`."""

    then: Script
    release: threading.Event
    safety_net_seconds: float = 30.0


Script = Union[Answer, WorkerError, Drop, Hang, Garbage, StreamError, Stall, RawAnswer, Gate]
SCRIPT_TYPES = (Answer, WorkerError, Drop, Hang, Garbage, StreamError, Stall, RawAnswer, Gate)


def is_streaming(request_body: Any) -> bool:
    return isinstance(request_body, dict) and bool(request_body.get("stream"))


def render_buffered(answer: Answer, request_body: Any) -> bytes:
    renderer = _RENDERERS[answer.flavour](answer, request_body)
    return renderer.dumps(renderer.completion()).encode()


def render_stream(answer: Answer, request_body: Any) -> list[bytes]:
    """The SSE events of a streamed answer, each a complete ``data: ...\\n\\n`` block."""
    renderer = _RENDERERS[answer.flavour](answer, request_body)
    events = [f"data: {renderer.dumps(chunk)}\n\n".encode() for chunk in renderer.chunks()]
    if answer.done:
        events.append(DONE_EVENT)
    return events


def render_stream_error(flavour: Flavour, error: dict) -> bytes:
    payload = error if set(error) == {"error"} else {"error": error}
    return f"data: {_DUMPS[flavour](payload)}\n\n".encode()


def response_headers(flavour: Flavour, streaming: bool) -> list[tuple[str, str]]:
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())
    if flavour in ("vllm", "sglang"):
        kind = "text/event-stream; charset=utf-8" if streaming else "application/json"
        return [("date", date), ("server", "uvicorn"), ("content-type", kind)]
    if flavour == "ollama":
        kind = "text/event-stream" if streaming else "application/json; charset=utf-8"
        return [("Content-Type", kind), ("Date", date)]
    kind = "text/event-stream" if streaming else "application/json; charset=utf-8"
    return [("Server", "llama.cpp"), ("Content-Type", kind)]


def split_text(text: str) -> list[str]:
    """Token-like pieces: words with their leading whitespace, long words cut further."""
    pieces = []
    for word in re.findall(r"\s*\S+|\s+", text):
        while len(word) > 8:
            pieces.append(word[:5])
            word = word[5:]
        pieces.append(word)
    return pieces


_FRAGMENT_SIZES = (1, 4, 2, 7, 3, 5)


def split_arguments(arguments: str) -> list[str]:
    """Uneven fragments that cut JSON mid-token and mid-string."""
    fragments, pos, i = [], 0, 0
    while pos < len(arguments):
        size = _FRAGMENT_SIZES[i % len(_FRAGMENT_SIZES)]
        fragments.append(arguments[pos : pos + size])
        pos += size
        i += 1
    return fragments


def _dumps_compact(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _dumps_go(obj: Any) -> str:
    return _dumps_compact(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_DUMPS: dict[str, Callable[[Any], str]] = {
    "vllm": json.dumps,
    "sglang": json.dumps,
    "llamacpp": _dumps_compact,
    "ollama": _dumps_go,
}


def _alnum(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


class _Renderer:
    name: str
    default_reasoning_field: ReasoningField = "reasoning_content"
    header_carries_arguments = False
    usage_keys = ("prompt_tokens", "total_tokens", "completion_tokens")

    def __init__(self, answer: Answer, request_body: Any) -> None:
        request = request_body if isinstance(request_body, dict) else {}
        self.answer = answer
        self.request = request
        self.model = answer.model or request.get("model") or "fake-model"
        self.created = int(time.time())
        self.id = self.new_id()
        self.reasoning_field = answer.reasoning_field or self.default_reasoning_field
        self.finish_reason = answer.finish_reason or ("tool_calls" if answer.tool_calls else "stop")
        self.tool_ids = [call.id or self.new_tool_id() for call in answer.tool_calls]
        self.arguments = [self.arguments_json(call.arguments) for call in answer.tool_calls]
        self.completion_tokens = self.count_completion_tokens()
        self.placement = self.usage_placement()

    def dumps(self, obj: Any) -> str:
        return _dumps_compact(obj)

    def new_id(self) -> str:
        return f"chatcmpl-{uuid.uuid4().hex}"

    def new_tool_id(self) -> str:
        return f"call_{uuid.uuid4().hex[:24]}"

    def arguments_json(self, arguments: dict | str) -> str:
        if isinstance(arguments, str):
            return arguments
        return json.dumps(arguments, ensure_ascii=False)

    def count_completion_tokens(self) -> int:
        if self.answer.completion_tokens is not None:
            return self.answer.completion_tokens
        pieces = len(split_text(self.answer.text)) + len(split_text(self.answer.reasoning or ""))
        pieces += sum(len(split_arguments(arguments)) for arguments in self.arguments)
        return max(1, pieces)

    def usage_placement(self) -> UsagePlacement:
        if self.answer.usage is not None:
            return self.answer.usage
        options = self.request.get("stream_options") or {}
        if not isinstance(options, dict) or not options.get("include_usage"):
            return "none"
        if options.get("continuous_usage_stats") and self.name in ("vllm", "sglang"):
            return "continuous"
        return "last"

    def usage(self, completion_tokens: int | None = None) -> dict:
        completion = self.completion_tokens if completion_tokens is None else completion_tokens
        counts = {
            "prompt_tokens": self.answer.prompt_tokens,
            "total_tokens": self.answer.prompt_tokens + completion,
            "completion_tokens": completion,
        }
        usage: dict[str, Any] = {key: counts[key] for key in self.usage_keys}
        if self.answer.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": self.answer.cached_tokens}
        return usage

    def tool_call_sequence(self, index: int) -> list[dict]:
        fragments = split_arguments(self.arguments[index])
        head = ""
        if self.header_carries_arguments and fragments:
            head, fragments = fragments[0], fragments[1:]
        return [self.tool_header(index, head)] + [self.tool_fragment(index, fragment) for fragment in fragments]

    def tool_call_events(self) -> list[dict]:
        sequences = [self.tool_call_sequence(i) for i in range(len(self.answer.tool_calls))]
        if not self.answer.interleave:
            return [event for sequence in sequences for event in sequence]
        events = []
        for step in range(max(map(len, sequences), default=0)):
            events.extend(sequence[step] for sequence in sequences if step < len(sequence))
        return events

    def content_deltas(self) -> list[dict]:
        deltas = [{self.reasoning_field: piece} for piece in split_text(self.answer.reasoning or "")]
        deltas += [{"content": piece} for piece in split_text(self.answer.text)]
        deltas += [{"tool_calls": [call]} for call in self.tool_call_events()]
        return deltas

    def chunks(self) -> list[dict]:
        deltas = [self.role_delta(), *self.content_deltas()]
        chunks = [self.chunk(self.delta(delta)) for delta in deltas]
        chunks.append(self.chunk(self.finish_delta(), finish=True))
        return self.place_usage(chunks)

    def place_usage(self, chunks: list[dict]) -> list[dict]:
        if self.placement == "continuous":
            last = max(len(chunks) - 1, 1)
            for k, chunk in enumerate(chunks):
                chunk["usage"] = self.usage(self.completion_tokens * k // last)
            chunks.append(self.usage_chunk())
        elif self.placement == "with_finish":
            chunks[-1]["usage"] = self.usage()
        elif self.placement == "last":
            chunks.append(self.usage_chunk())
        return chunks

    def usage_chunk(self) -> dict:
        chunk = self.chunk(self.delta({}))
        chunk["choices"] = []
        chunk["usage"] = self.usage()
        return chunk

    def delta(self, delta: dict) -> dict:
        return delta

    def role_delta(self) -> dict:
        return {"role": "assistant", "content": ""}

    def finish_delta(self) -> dict:
        return {}

    def chunk(self, delta: dict, finish: bool = False) -> dict:
        raise NotImplementedError

    def tool_header(self, index: int, arguments: str) -> dict:
        raise NotImplementedError

    def tool_fragment(self, index: int, arguments: str) -> dict:
        return {"index": index, "function": {"arguments": arguments}}

    def completion(self) -> dict:
        raise NotImplementedError


class _Vllm(_Renderer):
    name = "vllm"

    def new_tool_id(self) -> str:
        return f"chatcmpl-tool-{uuid.uuid4().hex}"

    def finish_delta(self) -> dict:
        return {} if self.answer.tool_calls else {"content": ""}

    def tool_header(self, index: int, arguments: str) -> dict:
        return {
            "id": self.tool_ids[index],
            "type": "function",
            "index": index,
            "function": {"name": self.answer.tool_calls[index].name, "arguments": arguments},
        }

    def chunk(self, delta: dict, finish: bool = False) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        if finish:
            choice["finish_reason"] = self.finish_reason
            choice["stop_reason"] = self.answer.matched_stop
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }

    def completion(self) -> dict:
        usage = self.usage()
        usage.setdefault("prompt_tokens_details", None)
        message = {
            "role": "assistant",
            "content": self.answer.text or None,
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
            "tool_calls": [
                {
                    "id": self.tool_ids[i],
                    "type": "function",
                    "function": {"name": call.name, "arguments": self.arguments[i]},
                }
                for i, call in enumerate(self.answer.tool_calls)
            ],
            self.reasoning_field: self.answer.reasoning,
        }
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                    "stop_reason": self.answer.matched_stop,
                    "token_ids": None,
                }
            ],
            "service_tier": None,
            "system_fingerprint": None,
            "usage": usage,
            "prompt_logprobs": None,
            "prompt_token_ids": None,
            "kv_transfer_params": None,
        }


class _Sglang(_Renderer):
    name = "sglang"

    def new_id(self) -> str:
        return uuid.uuid4().hex

    def delta(self, delta: dict) -> dict:
        return {"role": None, "content": None, self.reasoning_field: None, "tool_calls": None, **delta}

    def finish_delta(self) -> dict:
        return self.delta({})

    def tool_header(self, index: int, arguments: str) -> dict:
        return {
            "id": self.tool_ids[index],
            "index": index,
            "type": "function",
            "function": {"name": self.answer.tool_calls[index].name, "arguments": arguments},
        }

    def tool_fragment(self, index: int, arguments: str) -> dict:
        return {"id": None, "index": index, "type": "function", "function": {"name": None, "arguments": arguments}}

    def chunk(self, delta: dict, finish: bool = False) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None, "matched_stop": None}
        if finish:
            choice["finish_reason"] = self.finish_reason
            choice["matched_stop"] = self.answer.matched_stop
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": None,
        }

    def usage(self, completion_tokens: int | None = None) -> dict:
        usage = super().usage(completion_tokens)
        usage.setdefault("prompt_tokens_details", None)
        usage["reasoning_tokens"] = 0
        return usage

    def completion(self) -> dict:
        tool_calls = [
            {
                "id": self.tool_ids[i],
                "index": i,
                "type": "function",
                "function": {"name": call.name, "arguments": self.arguments[i]},
            }
            for i, call in enumerate(self.answer.tool_calls)
        ]
        message = {
            "role": "assistant",
            "content": self.answer.text or None,
            self.reasoning_field: self.answer.reasoning,
            "tool_calls": tool_calls or None,
        }
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                    "matched_stop": self.answer.matched_stop,
                }
            ],
            "usage": self.usage(),
        }


class _LlamaCpp(_Renderer):
    name = "llamacpp"
    header_carries_arguments = True
    usage_keys = ("completion_tokens", "prompt_tokens", "total_tokens")

    def new_tool_id(self) -> str:
        return _alnum(32)

    def arguments_json(self, arguments: dict | str) -> str:
        return arguments if isinstance(arguments, str) else _dumps_compact(arguments)

    def new_id(self) -> str:
        return f"chatcmpl-{_alnum(32)}"

    def usage_placement(self) -> UsagePlacement:
        return self.answer.usage or "with_finish"

    def role_delta(self) -> dict:
        return {"role": "assistant", "content": None}

    def tool_header(self, index: int, arguments: str) -> dict:
        return {
            "index": index,
            "id": self.tool_ids[index],
            "type": "function",
            "function": {"name": self.answer.tool_calls[index].name, "arguments": arguments},
        }

    def chunk(self, delta: dict, finish: bool = False) -> dict:
        choice = {"finish_reason": self.finish_reason if finish else None, "index": 0, "delta": delta}
        return {
            "choices": [choice],
            "created": self.created,
            "id": self.id,
            "model": self.model,
            "system_fingerprint": LLAMACPP_FINGERPRINT,
            "object": "chat.completion.chunk",
        }

    def timings(self) -> dict:
        prompt_n, predicted_n = self.answer.prompt_tokens, self.completion_tokens
        prompt_ms, predicted_ms = 0.9 * max(prompt_n, 1), 12.5 * max(predicted_n, 1)
        return {
            "cache_n": self.answer.cached_tokens or 0,
            "prompt_n": prompt_n,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / max(prompt_n, 1),
            "prompt_per_second": 1000.0 * prompt_n / prompt_ms,
            "predicted_n": predicted_n,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / max(predicted_n, 1),
            "predicted_per_second": 1000.0 * predicted_n / predicted_ms,
        }

    def chunks(self) -> list[dict]:
        chunks = super().chunks()
        chunks[-1]["timings"] = self.timings()
        return chunks

    def completion(self) -> dict:
        message: dict[str, Any] = {"role": "assistant"}
        if self.answer.reasoning:
            message[self.reasoning_field] = self.answer.reasoning
        message["content"] = self.answer.text or (None if self.answer.tool_calls else "")
        if self.answer.tool_calls:
            message["tool_calls"] = [
                {
                    "type": "function",
                    "function": {"name": call.name, "arguments": self.arguments[i]},
                    "id": self.tool_ids[i],
                }
                for i, call in enumerate(self.answer.tool_calls)
            ]
        return {
            "choices": [{"finish_reason": self.finish_reason, "index": 0, "message": message}],
            "created": self.created,
            "model": self.model,
            "system_fingerprint": LLAMACPP_FINGERPRINT,
            "object": "chat.completion",
            "usage": self.usage(),
            "id": self.id,
            "timings": self.timings(),
        }


class _Ollama(_Renderer):
    name = "ollama"
    default_reasoning_field = "reasoning"
    usage_keys = ("prompt_tokens", "completion_tokens", "total_tokens")

    def dumps(self, obj: Any) -> str:
        return _dumps_go(obj)

    def arguments_json(self, arguments: dict | str) -> str:
        return arguments if isinstance(arguments, str) else _dumps_go(arguments)

    def new_id(self) -> str:
        return f"chatcmpl-{random.randrange(999)}"

    def new_tool_id(self) -> str:
        return f"call_{_alnum(8, string.ascii_lowercase + string.digits)}"

    def delta(self, delta: dict) -> dict:
        return {"role": "assistant", "content": "", **delta}

    def tool_calls(self) -> list[dict]:
        return [
            {
                "id": self.tool_ids[i],
                "index": i,
                "type": "function",
                "function": {"name": call.name, "arguments": self.arguments[i]},
            }
            for i, call in enumerate(self.answer.tool_calls)
        ]

    def chunk(self, delta: dict, finish: bool = False) -> dict:
        choice = {"index": 0, "delta": delta, "finish_reason": self.finish_reason if finish else None}
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_ollama",
            "choices": [choice],
        }

    def chunks(self) -> list[dict]:
        deltas = [{self.reasoning_field: piece} for piece in split_text(self.answer.reasoning or "")]
        deltas += [{"content": piece} for piece in split_text(self.answer.text)]
        chunks = [self.chunk(self.delta(delta)) for delta in deltas]
        if self.answer.tool_calls:
            legacy = self.answer.finish_reason is not None
            chunks.append(self.chunk(self.delta({"tool_calls": self.tool_calls()}), finish=legacy))
            if not legacy:
                chunks.append(self.chunk(self.delta({}), finish=True))
        else:
            chunks.append(self.chunk(self.delta({}), finish=True))
        return self.place_usage(chunks)

    def completion(self) -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": self.answer.text}
        if self.answer.reasoning:
            message[self.reasoning_field] = self.answer.reasoning
        if self.answer.tool_calls:
            message["tool_calls"] = self.tool_calls()
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
            "usage": self.usage(),
        }


_RENDERERS: dict[str, type[_Renderer]] = {
    "vllm": _Vllm,
    "sglang": _Sglang,
    "llamacpp": _LlamaCpp,
    "ollama": _Ollama,
}
