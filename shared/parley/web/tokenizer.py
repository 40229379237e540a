"""The prompt's exact token count, from a worker that tokenizes (vLLM's POST /tokenize).

Whether a worker does is the route's `tokenize` option, or, where that is not set, learned once
per worker per instance (parley.io.tokenizers.WorkerTokenizers, held by Services).
"""

from __future__ import annotations

from typing import Any

from ..io.routes import Route, Worker
from .services import Services
from .upstream import worker_client

__all__ = ["prompt_token_count", "tokenizing_worker"]


def tokenizing_worker(route: Route) -> Worker | None:
    """The first worker of the route that may tokenize (OpenAI-style, `tokenize` not false): the
    one prompt_token_count asks, unless this instance has learned it does not."""
    return next((worker for worker in route.workers if worker.api == "openai" and worker.tokenize is not False), None)


async def prompt_token_count(services: Services, route: Route, chat: dict[str, Any]) -> int | None:
    """The worker's count of `chat`'s prompt, or None (the caller estimates it)."""
    tokenizers = services.tokenizers
    worker = next((worker for worker in route.workers if tokenizers.may_ask(worker)), None)
    if worker is None:
        return None
    body: dict[str, Any] = {"model": worker.model, "messages": chat["messages"], "add_generation_prompt": True}
    if chat.get("tools"):
        body["tools"] = chat["tools"]
    return await tokenizers.count(worker_client(services, route), worker, body, route.timeouts)
