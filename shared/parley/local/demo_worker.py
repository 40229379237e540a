"""Parley's built-in demo worker: an OpenAI-compatible endpoint that is NOT a language model.

It lets `make dev` answer with no GPU: it echoes the last user message, labelled as a demo,
buffered or streamed word by word, with usage. Point PARLEY_WORKER_URL at a real worker instead.

It also answers vLLM's POST /tokenize with the prompt_tokens its usage reports for the same
messages, so Parley's message_start and final usage agree on the demo route as on a vLLM.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

__all__ = ["DEMO_MODEL", "app", "demo_reply", "prompt_tokens"]

DEMO_MODEL = "parley-demo"
_LABEL = "[Parley demo worker: not a language model]"


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") in ("user", "tool"):
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
            if isinstance(content, str) and content.strip():
                return content.strip()
    return ""


def demo_reply(messages: list[dict[str, Any]]) -> str:
    # The last line is what the person typed; clients such as Claude Code put reminders first.
    lines = [line for line in _last_user_text(messages).splitlines() if line.strip()]
    said = " ".join(lines[-1].split()) if lines else ""
    if len(said) > 200:
        said = said[:200] + "…"
    return f"{_LABEL} You said: {said}" if said else f"{_LABEL} Hello!"


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The demo's "tokenizer": a quarter of the messages' JSON, the same for usage and /tokenize."""
    return max(1, len(orjson.dumps(messages)) // 4)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _stream(body: dict[str, Any], reply: str, prompt: int) -> AsyncIterator[bytes]:
    base = {
        "id": "chatcmpl-demo",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model"),
    }
    words = reply.split(" ")
    pieces = [{"role": "assistant", "content": ""}] + [
        {"content": word if i == 0 else " " + word} for i, word in enumerate(words)
    ]
    for delta in pieces:
        yield (
            b"data: "
            + orjson.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
            + b"\n\n"
        )
        await asyncio.sleep(0.02)
    yield b"data: " + orjson.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + b"\n\n"
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = _usage(prompt, len(words))
        yield b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
    yield b"data: [DONE]\n\n"


async def chat_completions(request: Request) -> Response:
    body = orjson.loads(await request.body())
    messages = body.get("messages") or []
    reply = demo_reply(messages)
    prompt = prompt_tokens(messages)
    if body.get("stream"):
        return StreamingResponse(_stream(body, reply, prompt), media_type="text/event-stream")
    answer = {
        "id": "chatcmpl-demo",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
        "usage": _usage(prompt, len(reply.split(" "))),
    }
    return Response(orjson.dumps(answer), media_type="application/json")


async def tokenize(request: Request) -> Response:
    body = orjson.loads(await request.body())
    count = prompt_tokens(body.get("messages") or [])
    return Response(orjson.dumps({"count": count, "max_model_len": 32768, "tokens": []}), media_type="application/json")


async def health(request: Request) -> Response:
    return Response(b"{}", media_type="application/json")


async def list_models(request: Request) -> Response:
    return Response(
        orjson.dumps({"object": "list", "data": [{"id": DEMO_MODEL, "object": "model"}]}), media_type="application/json"
    )


app = Starlette(
    routes=[
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/tokenize", tokenize, methods=["POST"]),
        Route("/v1/models", list_models),
        Route("/health", health),
    ]
)
