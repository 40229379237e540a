"""POST /v1/messages (and its aliases) and POST /v1/messages/count_tokens."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from ..core.anthropic_types import parse_count_tokens_request, parse_messages_request
from ..core.ids import new_message_id
from ..core.request import messages_to_chat, prompt_to_chat_messages, tools_to_chat
from ..core.response import AnswerContext, chat_to_message
from ..core.tokens import estimate_prompt_tokens
from ..io.keys import KeyRecord
from ..telemetry import worker_label
from .accounting import admit
from .dependencies import authenticate, read_body, resolve_route, services_of
from .middleware import outcome_of
from .responses import json_response
from .streaming import note_usage, stream_answer

__all__ = ["router"]

router = APIRouter()

_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@router.post("/v1/messages")
@router.post("/v1/anthropic/messages")
async def create_message(request: Request, key: KeyRecord = Depends(authenticate)) -> Response:
    services = services_of(request)
    message_request = parse_messages_request(await read_body(request, services.settings.max_body_bytes))
    route = await resolve_route(request, message_request.model)
    worker = route.worker
    outcome = outcome_of(request)
    if outcome is not None:
        outcome.model, outcome.worker, outcome.stream = (
            message_request.model,
            worker_label(worker.base_url),
            bool(message_request.stream),
        )
    chat = messages_to_chat(message_request, worker.limits)
    context = AnswerContext(
        model=message_request.model,
        message_id=new_message_id(),
        input_tokens_estimate=estimate_prompt_tokens(chat["messages"], chat.get("tools")),
        thinking=message_request.thinking_enabled,
        stop_sequences=tuple(message_request.stop_sequences or ()),
    )
    await admit(request, services, key, route, context.input_tokens_estimate)
    if message_request.stream:
        # A worker that refuses at once gets a plain HTTP error; one that is slow to answer
        # gets the stream started (and pinged) so clients and proxies do not time out.
        opening = asyncio.ensure_future(services.worker.open_stream(worker, chat))
        await asyncio.wait((opening,), timeout=services.settings.ping_seconds)
        if opening.done() and opening.exception() is not None:
            raise opening.exception()  # type: ignore[misc]
        return StreamingResponse(
            stream_answer(opening, context, services.settings.ping_seconds, outcome),
            media_type="text/event-stream; charset=utf-8",
            headers=_SSE_HEADERS,
        )
    message = chat_to_message(await services.worker.complete(worker, chat), context)
    if outcome is not None:
        note_usage(outcome, message["usage"])
    return json_response(message)


@router.post("/v1/messages/count_tokens")
async def count_tokens(request: Request, key: KeyRecord = Depends(authenticate)) -> Response:
    services = services_of(request)
    count_request = parse_count_tokens_request(await read_body(request, services.settings.max_body_bytes))
    await resolve_route(request, count_request.model)
    tokens = estimate_prompt_tokens(prompt_to_chat_messages(count_request), tools_to_chat(count_request))
    return json_response({"input_tokens": tokens})
