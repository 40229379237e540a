"""The prompt's exact token count, from a worker that tokenizes (vLLM's POST /tokenize)."""

from __future__ import annotations

from typing import Any

from ..io.routes import Route, Worker
from .services import Services
from .upstream import worker_client

__all__ = ["prompt_token_count", "tokenizing_worker"]


def tokenizing_worker(route: Route) -> Worker | None:
    return next((worker for worker in route.workers if worker.tokenize and worker.api == "openai"), None)


async def prompt_token_count(services: Services, route: Route, chat: dict[str, Any]) -> int | None:
    worker = tokenizing_worker(route)
    if worker is None:
        return None
    body: dict[str, Any] = {"model": worker.model, "messages": chat["messages"], "add_generation_prompt": True}
    if chat.get("tools"):
        body["tools"] = chat["tools"]
    return await worker_client(services, route).tokenize(worker, body, route.timeouts)
