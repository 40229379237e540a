"""Stage `route and call`: the guarded request validated, routed, admitted (limits, spend) and sent
to the route's workers with failover; the answer through the guard (`judge output`) and its usage
on the outcome (`meter`). One function per endpoint: what a worker gets differs, the stages not."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from starlette.responses import Response, StreamingResponse

from ...core.anthropic_types import MessagesRequest, messages_request_from
from ...core.chat_passthrough import ChatStreamRelay, answer_for_client, chat_request_for_worker
from ...core.errors import InvalidRequestError
from ...core.ids import new_message_id
from ...core.response import AnswerContext, usage_to_anthropic
from ...core.response_cache import AnswerRecorder
from ...core.tokens import estimate_prompt_tokens
from ...io.response_cache import CachedAnswer
from ...io.routes import Route, Worker
from ...io.worker import WorkerClient
from ..accounting import admit
from ..dependencies import resolve_route
from ..responses import json_response
from ..streaming import SSE_HEADERS, SSE_MEDIA_TYPE, relay_chat_stream, stream_answer
from ..tokenizer import prompt_token_count, tokenizing_worker
from ..upstream import call_route, first_answer_or_error, unless_client_leaves
from ..worker_requests import WorkerRequests, text_worker
from .cache import CacheTicket, kept_stream, look_up_answer, served_from_cache
from .exchange import Exchange
from .judge_input import mask_documents
from .judge_output import answer_guard, chat_answer_guard
from .meter import note_route, note_usage
from .retrieve import retrieve

__all__ = ["call_chat", "call_messages"]

_CHAT_PATH = "/chat/completions"


async def call_messages(exchange: Exchange) -> Response:
    request, services, outcome = exchange.request, exchange.services, exchange.outcome
    message_request = messages_request_from(exchange.data)
    route = await resolve_route(request, message_request.model, exchange.key.account)
    if outcome is not None:
        outcome.stream = bool(message_request.stream)
        note_route(outcome, route, message_request.model)
    requests = _worker_requests(exchange, message_request, route)
    await admit(request, services, exchange.key, route, requests.prompt_tokens)
    if await retrieve(exchange):
        message_request = messages_request_from(exchange.data)
        requests = _worker_requests(exchange, message_request, route)
    looked_up = await look_up_answer(exchange, route, exchange.data)
    if isinstance(looked_up, CachedAnswer):
        return served_from_cache(exchange, looked_up, message_request.model, bool(message_request.stream))
    try:
        return await _called(exchange, route, message_request, requests, looked_up)
    except BaseException:
        if looked_up is not None:
            await looked_up.release()
        raise


def _worker_requests(exchange: Exchange, message_request: MessagesRequest, route: Route) -> WorkerRequests:
    """What the route's workers get, with the prompt's size estimated for admission."""
    services = exchange.services
    requests = WorkerRequests(exchange.request, exchange.data, message_request, services.templates)
    requests.prompt_tokens = requests.admission_estimate(route.worker, services.settings.pdf_max_text_chars)
    return requests


async def _called(
    exchange: Exchange,
    route: Route,
    message_request: MessagesRequest,
    requests: WorkerRequests,
    ticket: CacheTicket | None,
) -> Response:
    request, services, outcome = exchange.request, exchange.services, exchange.outcome
    first_text_worker = text_worker(route)
    if await requests.read_documents(request, services, route):
        requests.documents = mask_documents(exchange, requests.documents)
        if first_text_worker is not None:
            text_chat = requests.chat(first_text_worker)  # the estimate again, with the PDFs' text
            requests.prompt_tokens = estimate_prompt_tokens(text_chat["messages"], text_chat.get("tools"))
    context = AnswerContext(
        model=message_request.model,
        message_id=new_message_id(),
        input_tokens_estimate=requests.prompt_tokens,
        thinking=message_request.thinking_enabled,
        stop_sequences=tuple(message_request.stop_sequences or ()),
    )
    timeouts = route.timeouts
    if message_request.stream:
        prompt_tokens = None
        if first_text_worker is not None and tokenizing_worker(route) is not None:
            prompt_tokens = asyncio.ensure_future(prompt_token_count(services, route, requests.chat(first_text_worker)))
        opening = asyncio.ensure_future(
            call_route(request, services, route, lambda client, worker: requests.open_stream(client, worker, timeouts))
        )
        try:
            await first_answer_or_error(request, opening, services.settings.ping_seconds)
        except BaseException:
            if prompt_tokens is not None:
                prompt_tokens.cancel()
            raise
        recorder = AnswerRecorder() if ticket is not None else None
        stream = stream_answer(
            opening,
            context,
            services.settings.ping_seconds,
            outcome,
            prompt_tokens,
            guard=lambda usage: answer_guard(exchange, usage),
            recorder=recorder,
        )
        if ticket is not None and recorder is not None:
            stream = kept_stream(stream, recorder, ticket)
        return StreamingResponse(stream, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)
    _, (message, usage) = await unless_client_leaves(
        request,
        call_route(
            request, services, route, lambda client, worker: requests.message(client, worker, timeouts, context)
        ),
    )
    note_usage(outcome, usage)
    guard = answer_guard(exchange)
    answer = guard.message(message) if guard is not None else message
    if ticket is not None:
        await ticket.keep_answer(answer)
        await ticket.release()
    return json_response(answer)


async def call_chat(exchange: Exchange) -> Response:
    request, services, outcome, chat = exchange.request, exchange.services, exchange.outcome, exchange.data
    model, streaming = chat["model"], bool(chat.get("stream"))
    route = await resolve_route(request, model, exchange.key.account)
    openai_workers = tuple(worker for worker in route.workers if worker.api == "openai")
    if not openai_workers:
        raise InvalidRequestError(f"model: {model} is served through the Anthropic API only; use POST /v1/messages")
    route = dataclasses.replace(route, workers=openai_workers)
    if outcome is not None:
        outcome.stream = streaming
        note_route(outcome, route, model)
    prompt_tokens = estimate_prompt_tokens(chat["messages"], chat.get("tools"))
    await admit(request, services, exchange.key, route, prompt_tokens)
    if await retrieve(exchange):
        chat = exchange.data
        prompt_tokens = estimate_prompt_tokens(chat["messages"], chat.get("tools"))
    timeouts = route.timeouts

    def forwarded(worker: Worker) -> dict[str, Any]:
        return chat_request_for_worker(chat, worker.profile, prompt_tokens)

    if streaming:
        wants_usage = bool((chat.get("stream_options") or {}).get("include_usage"))
        opening = asyncio.ensure_future(
            call_route(
                request,
                services,
                route,
                lambda client, worker: client.open_stream(worker, _CHAT_PATH, forwarded(worker), timeouts),
            )
        )
        await first_answer_or_error(request, opening, services.settings.ping_seconds)
        relay = ChatStreamRelay(model, prompt_tokens, wants_usage, chat_answer_guard(exchange))
        return StreamingResponse(
            relay_chat_stream(opening, relay, services.settings.ping_seconds, outcome),
            media_type=SSE_MEDIA_TYPE,
            headers=SSE_HEADERS,
        )

    async def answer(client: WorkerClient, worker: Worker) -> dict[str, Any]:
        # Checked inside the worker call: an answer Parley cannot use fails that worker (failover).
        return answer_for_client(
            await client.complete(worker, _CHAT_PATH, forwarded(worker), timeouts), model, prompt_tokens
        )

    _, client_answer = await unless_client_leaves(request, call_route(request, services, route, answer))
    usage = client_answer.get("usage")  # metered as the client sees it: the worker's figures checked
    note_usage(outcome, usage_to_anthropic(usage if isinstance(usage, dict) else None, prompt_tokens, 0))
    guard = chat_answer_guard(exchange)
    return json_response(guard.completion(client_answer) if guard is not None else client_answer)
