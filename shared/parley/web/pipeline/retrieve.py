"""Stage `retrieve` (docs/rag.md): when the policy names a knowledge base, the request's question
embedded, the nearest chunks found (reranked by a route's /v1/rerank if the policy says so),
held to the request's policy (masked; one it would refuse left out), and put at the end of its
last user message (core/retrieval.py).

It runs after admission (nobody over a limit costs an embedding) and before the cache lookup
(what was found is part of the key). A failure is reported in `parley-rag` and the request
answers without the documents, unless the policy's `on_error` is "fail".
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from starlette.concurrency import run_in_threadpool

from ...core.errors import ApiError, InvalidRequestError
from ...core.policy import RagPolicy
from ...core.request_guard import guard_messages_request
from ...core.retrieval import last_user_question, search_result_blocks
from ...core.tokens import estimate_text_tokens
from ...telemetry import log_text
from ..dependencies import resolve_route
from ..middleware import add_response_headers
from ..upstream import worker_client
from .exchange import Exchange

__all__ = ["retrieve"]

logger = logging.getLogger("parley.rag")

_RERANK_CANDIDATES = 3  # per chunk kept, when a reranker picks them


class RetrievalError(Exception):
    """Retrieval could not be done; the message says why, for the log and the client's header."""


async def _reranked(exchange: Exchange, model: str, question: str, found: Sequence[Any], top_k: int) -> list[Any]:
    from ...io.embeddings import rerank

    route = await resolve_route(exchange.request, model, exchange.key.account)
    texts = [chunk.text for chunk in found]
    order = await rerank(worker_client(exchange.services, route), route.worker, route.timeouts, question, texts, top_k)
    return [found[index] for index in order]


async def _found(exchange: Exchange, rag: RagPolicy, question: str) -> list[Any]:
    from ...io.embeddings import embedder_named

    store, account = exchange.services.knowledge_bases, exchange.key.account
    knowledge_base = await run_in_threadpool(store.get, account, rag.knowledge_base)
    if knowledge_base is None:
        raise RetrievalError(f"no knowledge base {rag.knowledge_base}")
    try:
        embedder = await embedder_named(
            knowledge_base.embedder,
            knowledge_base.dimensions,
            lambda model: resolve_route(exchange.request, model, account),
            lambda route: worker_client(exchange.services, route),
        )
    except ValueError as unknown:
        raise RetrievalError(str(unknown)) from None
    [vector] = await embedder.embed([question])
    wanted = rag.top_k * _RERANK_CANDIDATES if rag.rerank_model else rag.top_k
    found = await run_in_threadpool(store.search, account, rag.knowledge_base, vector, wanted, knowledge_base)
    if rag.rerank_model and found:
        found = await _reranked(exchange, rag.rerank_model, question, found, rag.top_k)
    return found[: rag.top_k]


def _judged(exchange: Exchange, blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The search results held to the request's policy as its own newest turn is: masked (their
    placeholders restored in the answer like any other), and one the policy would refuse
    (personal data under `block`, an input deny rule) left out."""
    policy = exchange.policy
    if not policy.active:
        return blocks
    services, kept = exchange.services, []
    for block in blocks:
        alone = {"messages": [{"role": "user", "content": [block]}]}
        try:
            judged = guard_messages_request(alone, policy, exchange.placeholder_key, services.judged)
        except InvalidRequestError as refusal:  # its message names the rule, never the match
            logger.warning("a retrieved passage is left out: %s", log_text(refusal.message))
            continue
        exchange.guarded.restore_map.update(judged.restore_map)
        kept.append(alone["messages"][0]["content"][0])
    return kept


async def retrieve(exchange: Exchange) -> bool:
    """Whether anything was put into the request (`exchange.data`)."""
    rag = exchange.policy.rag
    if not rag.active:
        return False
    question = last_user_question(exchange.data)
    if question is None:
        add_response_headers(exchange.request, {"parley-rag": "none"})
        return False
    try:
        found = await _found(exchange, rag, question)
    except Exception as error:
        reason = str(error) if isinstance(error, RetrievalError) else type(error).__name__
        logger.warning("retrieval from %s failed: %s", log_text(rag.knowledge_base), log_text(reason))
        add_response_headers(exchange.request, {"parley-rag": "error"})
        if rag.on_error == "fail":
            raise ApiError(f"Retrieval from the knowledge base {rag.knowledge_base} failed ({reason}).") from None
        return False
    blocks = _judged(exchange, search_result_blocks(found))
    add_response_headers(exchange.request, {"parley-rag": f"chunks={len(blocks)}"})
    if not blocks:
        return False
    exchange.data = exchange.endpoint.with_found(exchange.data, blocks)
    outcome = exchange.outcome
    if outcome is not None:
        outcome.retrieved_tokens = sum(estimate_text_tokens(block["content"][0]["text"]) for block in blocks)
    return True
