"""POST /v1/chat/completions: OpenAI-style clients, through the same keys, routes, limits,
guardrails and metering (the request pipeline, web/pipeline)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from ..core.chat_passthrough import parse_chat_request
from ..core.request_guard import guard_chat_request
from ..core.retrieval import with_chat_context
from ..io.keys import KeyRecord
from .dependencies import authenticate
from .pipeline import Endpoint, run_pipeline
from .pipeline.route_and_call import call_chat

__all__ = ["CHAT_COMPLETIONS_PATH", "CHAT_COMPLETIONS", "router"]

CHAT_COMPLETIONS_PATH = "/v1/chat/completions"
CHAT_COMPLETIONS = Endpoint("chat_completions", parse_chat_request, guard_chat_request, call_chat, with_chat_context)
router = APIRouter()


@router.post(CHAT_COMPLETIONS_PATH)
async def create_chat_completion(request: Request, key: KeyRecord = Depends(authenticate)) -> Response:
    return await run_pipeline(request, key, CHAT_COMPLETIONS)
