"""POST /v1/chat/completions: OpenAI-style clients, through the same keys, routes, limits and metering."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from contextlib import aclosing
from typing import AsyncIterator

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from ..core.chat_passthrough import (
    PING,
    ChatStreamRelay,
    answer_for_client,
    chat_request_for_worker,
    parse_chat_request,
)
from ..core.errors import InvalidRequestError, ParleyError
from ..core.response import usage_to_anthropic
from ..core.tokens import estimate_prompt_tokens
from ..io.keys import KeyRecord
from ..io.routes import Worker
from ..io.worker import WorkerClient, WorkerStream
from ..telemetry import RequestOutcome
from .accounting import admit, note_route
from .dependencies import authenticate, read_body, resolve_route, services_of
from .middleware import outcome_of
from .responses import json_response
from .streaming import SSE_HEADERS, chunks_or_silences, close_upstream, note_usage
from .upstream import call_route, first_answer_or_error, unless_client_leaves

__all__ = ["CHAT_COMPLETIONS_PATH", "router"]

CHAT_COMPLETIONS_PATH = "/v1/chat/completions"
_WORKER_PATH = "/chat/completions"
router = APIRouter()


@router.post(CHAT_COMPLETIONS_PATH)
async def create_chat_completion(request: Request, key: KeyRecord = Depends(authenticate)) -> Response:
    services = services_of(request)
    chat = parse_chat_request(await read_body(request, services.settings.max_body_bytes))
    model, streaming = chat["model"], bool(chat.get("stream"))
    route = await resolve_route(request, model, key.account)
    openai_workers = tuple(worker for worker in route.workers if worker.api == "openai")
    if not openai_workers:
        raise InvalidRequestError(f"model: {model} is served through the Anthropic API only; use POST /v1/messages")
    route = dataclasses.replace(route, workers=openai_workers)
    outcome = outcome_of(request)
    if outcome is not None:
        outcome.stream = streaming
        note_route(outcome, route, model)
    prompt_tokens = estimate_prompt_tokens(chat["messages"], chat.get("tools"))
    await admit(request, services, key, route, prompt_tokens)
    timeouts = route.timeouts

    def forwarded(worker: Worker) -> dict:
        return chat_request_for_worker(chat, worker.profile, prompt_tokens)

    if streaming:
        wants_usage = bool((chat.get("stream_options") or {}).get("include_usage"))
        opening = asyncio.ensure_future(
            call_route(
                request,
                services,
                route,
                lambda client, worker: client.open_stream(worker, _WORKER_PATH, forwarded(worker), timeouts),
            )
        )
        await first_answer_or_error(request, opening, services.settings.ping_seconds)
        relay = ChatStreamRelay(model, prompt_tokens, wants_usage)
        return StreamingResponse(
            _relay(opening, relay, services.settings.ping_seconds, outcome),
            media_type="text/event-stream; charset=utf-8",
            headers=SSE_HEADERS,
        )

    async def answer(client: WorkerClient, worker: Worker) -> dict:
        # Checked inside the worker call: an answer Parley cannot use fails that worker (failover).
        return answer_for_client(
            await client.complete(worker, _WORKER_PATH, forwarded(worker), timeouts), model, prompt_tokens
        )

    _, client_answer = await unless_client_leaves(request, call_route(request, services, route, answer))
    if outcome is not None:  # metered as the client sees it: the worker's figures checked
        usage = client_answer.get("usage")
        note_usage(outcome, usage_to_anthropic(usage if isinstance(usage, dict) else None, prompt_tokens, 0))
    return json_response(client_answer)


async def _relay(
    opening: asyncio.Future[tuple[Worker, WorkerStream]],
    relay: ChatStreamRelay,
    ping_seconds: float,
    outcome: RequestOutcome | None,
) -> AsyncIterator[bytes]:
    upstream: WorkerStream | None = None
    try:
        while not opening.done() and not (await asyncio.wait((opening,), timeout=ping_seconds))[0]:
            yield PING
        try:
            _, upstream = opening.result()
        except ParleyError as error:
            yield relay.fail(error)
            return
        async with aclosing(chunks_or_silences(upstream, ping_seconds, lambda: relay.finished)) as chunks:
            async for data in chunks:
                if data is None:
                    yield PING
                    continue
                out = relay.fail(data) if isinstance(data, ParleyError) else b"".join(map(relay.feed, data))
                if out:
                    if outcome is not None and outcome.first_token_at is None:
                        outcome.first_token_at = time.perf_counter()
                    yield out
            else:
                yield relay.end()
    finally:
        if outcome is not None:
            note_usage(outcome, relay.usage)
        await close_upstream(opening, upstream)
