"""POST /v1/messages (and its aliases) and POST /v1/messages/count_tokens."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, Awaitable, Callable, TypeVar

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from ..core.anthropic_types import MessagesRequest, parse_count_tokens_request, parse_messages_request
from ..core.documents import DocumentTexts, estimate_pdf_tokens, pdf_sources
from ..core.ids import new_message_id
from ..core.passthrough import anthropic_request_for_worker, message_from_worker, usage_of_message
from ..core.quirks import later_system_message
from ..core.request import WorkerProfile, fit_max_tokens, messages_to_chat, prompt_to_chat_messages, tools_to_chat
from ..core.response import AnswerContext, chat_to_message
from ..core.tokens import estimate_prompt_tokens
from ..io.chat_templates import ChatTemplates
from ..io.keys import KeyRecord
from ..io.routes import Route, Worker
from ..io.worker import WorkerClient, WorkerFailure, WorkerStream
from .accounting import admit, admit_count_tokens, note_route
from .dependencies import authenticate, read_body, resolve_route, services_of
from .documents import read_pdfs
from .middleware import outcome_of
from .responses import json_response
from .services import Services
from .streaming import SSE_HEADERS, note_usage, stream_answer
from .tokenizer import prompt_token_count, tokenizing_worker
from .upstream import call_route, first_answer_or_error, unless_client_leaves

__all__ = ["router"]

router = APIRouter()
T = TypeVar("T")

_CHAT_PATH = "/chat/completions"
_MESSAGES_PATH = "/v1/messages"


class _WorkerRequests:
    """The request each worker of the route gets, built once per kind of worker."""

    def __init__(
        self, request: Request, body: bytes, message_request: MessagesRequest, templates: ChatTemplates
    ) -> None:
        self._http_request = request
        self._body = body
        self._message_request = message_request
        self._templates = templates
        self._chats: dict[WorkerProfile, dict[str, Any]] = {}
        self._raw: dict[str, Any] | None = None
        self.documents: DocumentTexts = {}  # the PDFs' texts, once read (`read_documents`)
        self.prompt_tokens = 0

    def _profile(self, worker: Worker, folded: bool = False) -> WorkerProfile:
        profile = worker.profile
        if not profile.fold_system_messages and (folded or self._templates.folds(worker)):
            profile = replace(profile, fold_system_messages=True)
        return profile

    def chat(self, worker: Worker, folded: bool = False) -> dict[str, Any]:
        """The worker's chat request; `folded`: with its system messages folded whatever the
        worker is known to take."""
        profile = self._profile(worker, folded)
        chat = self._chats.get(profile)
        if chat is None:
            chat = self._chats[profile] = messages_to_chat(self._message_request, profile, self.documents)
        return {**chat, "max_tokens": fit_max_tokens(chat["max_tokens"], profile, self.prompt_tokens)}

    def admission_estimate(self, worker: Worker, max_pdf_text_chars: int) -> int:
        """The prompt's estimate before any PDF is read: the PDFs the worker would read as text
        counted by their size (`estimate_pdf_tokens`). Translating validates the request as well."""
        pdfs = pdf_sources(self._message_request, worker.profile.files)
        if not pdfs:
            chat = self.chat(worker)
            return estimate_prompt_tokens(chat["messages"], chat.get("tools"))
        chat = messages_to_chat(self._message_request, self._profile(worker), dict.fromkeys(pdfs, ""))
        return estimate_prompt_tokens(chat["messages"], chat.get("tools")) + estimate_pdf_tokens(
            pdfs, max_pdf_text_chars
        )

    async def read_documents(self, request: Request, services: Services, route: Route) -> bool:
        """Read the PDFs that the route's OpenAI-style workers take as text (an Anthropic-native
        worker gets them as they came). Whether there were any."""
        sources: dict[str, str] = {}
        for worker in route.workers:
            if worker.api == "openai":
                sources.update(pdf_sources(self._message_request, worker.profile.files))
        self.documents = await read_pdfs(request, services, sources)
        return bool(sources)

    def anthropic(self, worker: Worker) -> dict[str, Any]:
        if self._raw is None:
            self._raw = orjson.loads(self._body)
        return anthropic_request_for_worker(self._raw, worker.profile)

    def anthropic_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": self._http_request.headers.get("anthropic-version", "2023-06-01")}
        beta = self._http_request.headers.get("anthropic-beta")
        if beta:
            headers["anthropic-beta"] = beta
        return headers

    async def _call_chat(self, worker: Worker, call: Callable[[dict[str, Any]], Awaitable[T]]) -> T:
        """`call` with the worker's chat request; once more with its system messages folded if
        the worker's template refused them (`io.chat_templates`)."""
        chat = self.chat(worker)
        try:
            return await call(chat)
        except WorkerFailure as failure:
            if not self._templates.may_fold_after(worker, failure, later_system_message(chat["messages"])):
                raise
        answer = await call(self.chat(worker, folded=True))
        self._templates.learned(worker)
        return answer

    async def complete(self, client: WorkerClient, worker: Worker, timeouts: Any) -> dict[str, Any]:
        if worker.api == "anthropic":
            return await client.complete(
                worker, _MESSAGES_PATH, self.anthropic(worker), timeouts, self.anthropic_headers()
            )
        return await self._call_chat(worker, lambda chat: client.complete(worker, _CHAT_PATH, chat, timeouts))

    async def message(
        self, client: WorkerClient, worker: Worker, timeouts: Any, context: AnswerContext
    ) -> tuple[dict[str, Any], dict[str, int]]:
        """The worker's answer as an Anthropic message, and its usage. Translated inside the worker
        call: an answer Parley cannot use fails that worker (it cools down, the next one is tried)."""
        answer = await self.complete(client, worker, timeouts)
        if worker.api == "anthropic":
            message = message_from_worker(answer, context)
            return message, usage_of_message(message, context.input_tokens_estimate)
        message = chat_to_message(answer, context)
        return message, message["usage"]

    async def open_stream(self, client: WorkerClient, worker: Worker, timeouts: Any) -> WorkerStream:
        if worker.api == "anthropic":
            return await client.open_stream(
                worker, _MESSAGES_PATH, self.anthropic(worker), timeouts, self.anthropic_headers()
            )
        return await self._call_chat(worker, lambda chat: client.open_stream(worker, _CHAT_PATH, chat, timeouts))


def _text_worker(route: Route) -> Worker | None:
    """The worker whose translation the prompt is estimated and tokenized on: the first
    OpenAI-style one (a tokenizing worker is one)."""
    return next((worker for worker in route.workers if worker.api == "openai"), None)


@router.post("/v1/messages")
@router.post("/v1/anthropic/messages")
async def create_message(request: Request, key: KeyRecord = Depends(authenticate)) -> Response:
    services = services_of(request)
    body = await read_body(request, services.settings.max_body_bytes)
    message_request = parse_messages_request(body)
    route = await resolve_route(request, message_request.model, key.account)
    outcome = outcome_of(request)
    if outcome is not None:
        outcome.stream = bool(message_request.stream)
        note_route(outcome, route, message_request.model)
    requests = _WorkerRequests(request, body, message_request, services.templates)
    requests.prompt_tokens = requests.admission_estimate(route.worker, services.settings.pdf_max_text_chars)
    await admit(request, services, key, route, requests.prompt_tokens)
    text_worker = _text_worker(route)
    if await requests.read_documents(request, services, route) and text_worker is not None:
        text_chat = requests.chat(text_worker)  # the estimate again, with the PDFs' text
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
        if text_worker is not None and tokenizing_worker(route) is not None:
            prompt_tokens = asyncio.ensure_future(prompt_token_count(services, route, requests.chat(text_worker)))
        opening = asyncio.ensure_future(
            call_route(request, services, route, lambda client, worker: requests.open_stream(client, worker, timeouts))
        )
        try:
            await first_answer_or_error(request, opening, services.settings.ping_seconds)
        except BaseException:
            if prompt_tokens is not None:
                prompt_tokens.cancel()
            raise
        return StreamingResponse(
            stream_answer(opening, context, services.settings.ping_seconds, outcome, prompt_tokens),
            media_type="text/event-stream; charset=utf-8",
            headers=SSE_HEADERS,
        )
    _, (message, usage) = await unless_client_leaves(
        request,
        call_route(
            request, services, route, lambda client, worker: requests.message(client, worker, timeouts, context)
        ),
    )
    if outcome is not None:
        note_usage(outcome, usage)
    return json_response(message)


@router.post("/v1/messages/count_tokens")
async def count_tokens(request: Request, key: KeyRecord = Depends(authenticate)) -> Response:
    services = services_of(request)
    count_request = parse_count_tokens_request(await read_body(request, services.settings.max_body_bytes))
    route = await resolve_route(request, count_request.model, key.account)
    await admit_count_tokens(request, services, key, route)
    documents = await read_pdfs(request, services, pdf_sources(count_request))
    worker = tokenizing_worker(route)
    folds = worker is not None and services.templates.folds(worker)
    chat = {
        "messages": prompt_to_chat_messages(count_request, documents=documents, fold_system_messages=folds),
        "tools": tools_to_chat(count_request),
    }
    tokens = None
    if worker is not None:
        tokens = await unless_client_leaves(request, prompt_token_count(services, route, chat))
    if tokens is None:
        tokens = estimate_prompt_tokens(chat["messages"], chat["tools"])
    return json_response({"input_tokens": tokens})
