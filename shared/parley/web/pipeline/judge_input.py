"""Stage `judge input`: the request judged against its policy and its personal data masked
before any worker sees it (core/request_guard.py). A blocked request ends here with a 400."""

from __future__ import annotations

import logging

from ...core.documents import DocumentTexts
from ...core.request_guard import mask_texts
from ..middleware import add_response_headers
from .exchange import Exchange

__all__ = ["judge_input", "mask_documents"]

logger = logging.getLogger("parley.guardrails")


async def judge_input(exchange: Exchange) -> None:
    policy = exchange.policy
    if not policy.active:
        return
    services = exchange.services
    if policy.pii.mode == "mask":
        exchange.placeholder_key = await services.placeholder_keys.key_for(exchange.key.account)
    exchange.guarded = exchange.endpoint.guard(exchange.data, policy, exchange.placeholder_key, services.judged)
    if exchange.guarded.flags:
        # Which rule, never what matched.
        logger.warning("request flagged by the content policy: %s", ", ".join(exchange.guarded.flags))
        add_response_headers(exchange.request, {"parley-guardrail-flags": ",".join(exchange.guarded.flags)})


def mask_documents(exchange: Exchange, documents: DocumentTexts) -> DocumentTexts:
    """The text read out of the request's PDFs, masked like the rest of the request."""
    if exchange.policy.pii.mode != "mask" or not documents:
        return documents
    return mask_texts(documents, exchange.policy, exchange.placeholder_key, exchange.services.judged, exchange.guarded)
