"""Stages `look up cache` and `keep answer` (docs/cache.md): a request the policy caches is
answered from the response cache when its answer is kept, else called and its answer kept.

Duplicates wait for one call: within an instance on the caller's future (`Flights`), across
instances on a lease in the cache table, polled until the answer is kept or the lease lapses
(then the duplicate calls the worker itself). The table failing never fails a request: a lookup
that fails is a miss, a write that fails is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, AsyncIterator

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from ...core.ids import new_message_id
from ...core.response_cache import (
    AnswerRecorder,
    cache_key,
    cacheable,
    replay_events,
    route_fingerprint,
    storable,
)
from ...core.sse import encode_events
from ...io.background import in_background
from ...io.response_cache import GIVEN_UP, CachedAnswer
from ...io.routes import Route
from ..middleware import add_response_headers
from ..responses import json_response
from ..streaming import SSE_HEADERS, SSE_MEDIA_TYPE
from ..upstream import unless_client_leaves
from .exchange import Exchange
from .meter import note_usage

__all__ = ["CacheTicket", "kept_stream", "look_up_answer", "served_from_cache"]

logger = logging.getLogger("parley.cache")

CACHE_WORKER = "response-cache"
"""The worker a cache hit's usage is recorded under."""

_FIRST_POLL_SECONDS = 0.02
_LONGEST_POLL_SECONDS = 0.5


@dataclass(slots=True)
class CacheTicket:
    """A miss the policy caches: where its answer is kept, and the lease its duplicates wait on."""

    exchange: Exchange
    key: str
    keep: bool  # false under `cache-control: no-store`
    holder: str | None = None  # the table lease's token, when this request leads
    leading: bool = False
    kept: bool = False
    done: bool = False

    async def keep_answer(self, message: dict[str, Any] | None) -> None:
        """`message` kept, when it is a complete, successful answer (`storable`) with no personal
        data restored into it (the restore map is complete once the answer is made: a PDF's
        values are masked after the lookup)."""
        if not (self.keep and storable(message)) or self.exchange.guarded.restore_map:
            return
        services = self.exchange.services
        ttl = self.exchange.policy.cache.ttl_seconds
        try:
            self.kept = await run_in_threadpool(
                services.response_cache.put, self.key, message, self.exchange.key.account, ttl, time.time()
            )
        except Exception as error:
            logger.warning("response cache write failed (%s); the answer is not kept", type(error).__name__)
            return
        if not self.kept:
            logger.info("answer not kept: over the response cache's size limit")

    async def release(self) -> None:
        """Duplicates let go: here at once (told whether the answer was kept, so that they call
        the worker at once when it was not), on other instances at their next poll."""
        if self.done:
            return
        self.done = True
        if self.leading:
            self.exchange.services.flights.land(self.key, self.kept)
        if self.holder is not None:
            await _to_the_end(run_in_threadpool(_released, self.exchange, self.key, self.holder, self.kept))


async def _to_the_end(work: Any) -> None:
    """`work` awaited; if this request is cancelled (its client left), it still goes on."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        in_background(task)
        raise


def _released(exchange: Exchange, key: str, holder: str, kept: bool) -> None:
    try:
        exchange.services.response_cache.release(key, holder, kept, time.time())
    except Exception as error:  # the lease lapses by itself
        logger.warning("response cache lease release failed (%s)", type(error).__name__)


def _verdict(exchange: Exchange, verdict: str) -> None:
    add_response_headers(exchange.request, {"parley-cache": verdict})
    outcome = exchange.outcome
    if outcome is not None:
        outcome.cache = verdict


def _directives(exchange: Exchange) -> set[str]:
    header = exchange.request.headers.get("cache-control", "")
    return {directive.strip().lower() for directive in header.split(",") if directive.strip()}


async def _get(exchange: Exchange, key: str) -> CachedAnswer | None:
    try:
        return await run_in_threadpool(exchange.services.response_cache.get, key, time.time())
    except Exception as error:
        logger.warning("response cache read failed (%s); treated as a miss", type(error).__name__)
        return None


async def look_up_answer(exchange: Exchange, route: Route, data: dict[str, Any]) -> CachedAnswer | CacheTicket | None:
    """The kept answer to this request; else the ticket its answer is kept with; None when the
    policy does not cache it (no cache policy, not deterministic, personal data to restore)."""
    policy = exchange.policy.cache
    if policy.mode == "off":
        return None
    directives = _directives(exchange)
    if not cacheable(policy, data) or exchange.guarded.restore_map or {"no-cache", "no-store"} <= directives:
        _verdict(exchange, "bypass")
        return None
    services = exchange.services
    betas = exchange.request.headers.get("anthropic-beta")
    try:
        key = cache_key(exchange.key.account, route_fingerprint(route), exchange.policy.version, betas, data)
    except TypeError:  # a body nested deeper than the key's JSON goes (orjson: 255 levels)
        _verdict(exchange, "bypass")
        return None
    ticket = CacheTicket(exchange, key, keep="no-store" not in directives)
    _verdict(exchange, "miss")
    if "no-cache" in directives:
        return ticket
    lease_seconds = services.settings.cache_lease_seconds
    deadline = time.monotonic() + lease_seconds
    poll = _FIRST_POLL_SECONDS
    while True:
        cached = await _get(exchange, key)
        if cached is not None:
            _verdict(exchange, "hit")
            return cached
        left = deadline - time.monotonic()
        if not ticket.keep or left <= 0:
            return ticket
        here = services.flights.leader(key)
        if here is not None:
            if await unless_client_leaves(exchange.request, services.flights.wait(here, left)) is False:
                return ticket  # the first answer was not kept: no use waiting in turn
            continue
        try:
            holder = await run_in_threadpool(services.response_cache.claim, key, time.time(), lease_seconds)
        except Exception as error:
            logger.warning("response cache lease failed (%s); calling the worker", type(error).__name__)
            return ticket
        if holder == GIVEN_UP:
            return ticket  # the last answer was not kept: no use waiting in turn
        if holder is not None:
            ticket.holder, ticket.leading = holder, True
            services.flights.lead(key)
            return ticket
        await unless_client_leaves(exchange.request, services.flights.wait(None, min(poll, left)))
        poll = min(poll * 2, _LONGEST_POLL_SECONDS)


def served_from_cache(exchange: Exchange, cached: CachedAnswer, model: str, stream: bool) -> Response:
    """A kept answer, as a new message (its own id, the model as the client named it) with the
    original usage; metered once as a cache hit."""
    message = {**cached.message, "id": new_message_id(), "model": model}
    add_response_headers(exchange.request, {"age": str(max(0, int(time.time() - cached.stored_at)))})
    outcome = exchange.outcome
    if outcome is not None:
        outcome.worker = CACHE_WORKER
        usage = message["usage"]
        note_usage(
            outcome,
            {name: usage.get(name, 0) for name in ("input_tokens", "output_tokens", "cache_read_input_tokens")},
        )
    if not stream:
        return json_response(message)
    body = encode_events(replay_events(message))

    async def replay() -> AsyncIterator[bytes]:
        if outcome is not None:
            outcome.first_token_at = time.perf_counter()
        yield body

    return StreamingResponse(replay(), media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)


async def kept_stream(
    chunks: AsyncIterator[bytes], recorder: AnswerRecorder, ticket: CacheTicket
) -> AsyncIterator[bytes]:
    """The streamed answer as it goes out; once it has ended whole, kept."""
    try:
        async with aclosing(chunks):
            async for chunk in chunks:
                yield chunk
    finally:
        # Kept even when the client leaves after message_stop (while the worker's connection is
        # drained): what it was sent was whole.
        message = recorder.message
        outcome = ticket.exchange.outcome
        if message is not None and outcome is not None:  # the worker's own figures, as metered
            message["usage"] = {
                **message["usage"],
                "input_tokens": outcome.input_tokens,
                "output_tokens": outcome.output_tokens,
                "cache_read_input_tokens": outcome.cache_read_input_tokens,
            }
        try:
            await _to_the_end(ticket.keep_answer(message))
        finally:
            await ticket.release()
