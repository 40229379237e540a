"""The request path every endpoint shares: named stages, in this order (docs/guardrails.md).

    normalise      the body read (size-limited) and parsed; the key's policy looked up
    judge input    content policy on the newest turn; personal data masked (core/request_guard)
    route and call validated, routed, admitted (limits), then:
      retrieve     the policy's knowledge base asked the request's question; what it found put
                   at the end of the last user message, masked like the rest (docs/rag.md)
      look up      the answer kept by the response cache, served as a hit; or duplicates
      cache        waiting for one worker call (docs/cache.md)
                   sent to the route's workers (failover)
    judge output   placeholders restored, output masked and judged, buffered or streamed
                   (core/answer_guard), fed to the call's answer as it is made
    keep answer    a complete, successful answer kept for the cache policy's ttl
    meter          the answer's usage on the request's outcome (metered once, docs/metering.md)

`REQUEST_STAGES` runs before the call; an endpoint (`Endpoint`) says how its body is parsed,
guarded and asked about, and how it is routed and called. POST /v1/messages and POST
/v1/chat/completions run the same stages; count_tokens runs the request stages and retrieval.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from ...io.keys import KeyRecord
from .exchange import Endpoint, Exchange
from .judge_input import judge_input
from .normalise import normalise

__all__ = ["REQUEST_STAGES", "Endpoint", "Exchange", "judged_exchange", "run_pipeline"]

Stage = Callable[[Exchange], Awaitable[None]]

REQUEST_STAGES: tuple[Stage, ...] = (normalise, judge_input)


async def judged_exchange(request: Request, key: KeyRecord, endpoint: Endpoint) -> Exchange:
    """The request through the stages before the call (`REQUEST_STAGES`)."""
    exchange = Exchange(request, key, endpoint)
    for stage in REQUEST_STAGES:
        await stage(exchange)
    return exchange


async def run_pipeline(request: Request, key: KeyRecord, endpoint: Endpoint) -> Response:
    """Every stage, in order: the endpoint's answer."""
    return await endpoint.route_and_call(await judged_exchange(request, key, endpoint))
