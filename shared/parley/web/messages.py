"""POST /v1/messages (and its aliases), through the request pipeline (web/pipeline), and
POST /v1/messages/count_tokens."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from ..core.anthropic_types import count_tokens_request_from, load_json_object
from ..core.documents import pdf_sources
from ..core.request import prompt_to_chat_messages, tools_to_chat
from ..core.request_guard import guard_messages_request
from ..core.retrieval import with_search_results
from ..core.tokens import estimate_prompt_tokens
from ..io.keys import KeyRecord
from .accounting import admit_count_tokens
from .dependencies import authenticate, resolve_route, services_of
from .documents import read_pdfs
from .pipeline import Endpoint, judged_exchange, run_pipeline
from .pipeline.judge_input import mask_documents
from .pipeline.retrieve import retrieve
from .pipeline.route_and_call import call_messages
from .responses import json_response
from .tokenizer import prompt_token_count, tokenizing_worker
from .upstream import unless_client_leaves

__all__ = ["MESSAGES", "router"]

router = APIRouter()
MESSAGES = Endpoint("messages", load_json_object, guard_messages_request, call_messages, with_search_results)


@router.post("/v1/messages")
@router.post("/v1/anthropic/messages")
async def create_message(request: Request, key: KeyRecord = Depends(authenticate)) -> Response:
    return await run_pipeline(request, key, MESSAGES)


@router.post("/v1/messages/count_tokens")
async def count_tokens(request: Request, key: KeyRecord = Depends(authenticate)) -> Response:
    services = services_of(request)
    exchange = await judged_exchange(request, key, MESSAGES)  # counted as the worker would get it
    count_request = count_tokens_request_from(exchange.data)
    route = await resolve_route(request, count_request.model, key.account)
    await admit_count_tokens(request, services, key, route)
    if await retrieve(exchange):  # counted with what retrieval puts in, as the worker gets it
        count_request = count_tokens_request_from(exchange.data)
    documents = mask_documents(exchange, await read_pdfs(request, services, pdf_sources(count_request)))
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
