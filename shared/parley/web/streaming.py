"""The SSE body of a streamed answer: worker bytes in, Anthropic events out, pings while silent."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator

from ..core.errors import ApiError, ParleyError
from ..core.response import AnswerContext
from ..core.sse import encode_events
from ..core.stream import Event, WorkerSSETranslator
from ..io.worker import WorkerStream
from ..telemetry import RequestOutcome

__all__ = ["note_usage", "stream_answer"]

logger = logging.getLogger("parley.stream")


def note_usage(outcome: RequestOutcome, usage: dict[str, int]) -> None:
    outcome.input_tokens = usage["input_tokens"]
    outcome.output_tokens = usage["output_tokens"]
    outcome.cache_read_input_tokens = usage["cache_read_input_tokens"]


def _note_events(outcome: RequestOutcome | None, events: list[Event]) -> None:
    if outcome is None:
        return
    if outcome.first_token_at is None and any(name == "content_block_delta" for name, _ in events):
        outcome.first_token_at = time.perf_counter()
    if events and events[-1][0] == "error":
        outcome.error_type = events[-1][1]["error"]["type"]


async def stream_answer(
    opening: asyncio.Future[WorkerStream],
    context: AnswerContext,
    ping_seconds: float,
    outcome: RequestOutcome | None = None,
) -> AsyncIterator[bytes]:
    """Stream the answer whose worker request `opening` is under way (or already answered).

    While the worker has not even sent its headers (a long prefill, a model loading), the
    client already gets `message_start` and pings; a worker error after that is an `error` event.
    """
    translator = WorkerSSETranslator(context)
    upstream: WorkerStream | None = None
    pending: asyncio.Future[bytes] | None = None
    try:
        while not (await asyncio.wait((opening,), timeout=ping_seconds))[0]:
            yield encode_events(translator.messages.ping())
        try:
            upstream = opening.result()
        except ParleyError as error:
            events = translator.messages.fail(error)
            _note_events(outcome, events)
            yield encode_events(events)
            return
        chunks = upstream.chunks().__aiter__()
        while not translator.finished:
            if pending is None:
                pending = asyncio.ensure_future(chunks.__anext__())
            done, _ = await asyncio.wait((pending,), timeout=ping_seconds)
            if not done:
                yield encode_events(translator.messages.ping())
                continue
            finished_read, pending = pending, None
            try:
                data = finished_read.result()
            except StopAsyncIteration:
                events = translator.end()
            except ParleyError as error:
                events = translator.messages.fail(error)
            else:
                events = translator.feed(data)
            if events:
                _note_events(outcome, events)
                yield encode_events(events)
    except Exception:
        logger.exception("stream translation failed")
        events = translator.messages.fail(ApiError("Internal server error"))
        _note_events(outcome, events)
        if events:
            yield encode_events(events)
    finally:
        if outcome is not None:
            note_usage(outcome, translator.messages.usage)
        if pending is not None:
            pending.cancel()
        await _close(opening, upstream)


async def _close(opening: asyncio.Future[WorkerStream], upstream: WorkerStream | None) -> None:
    if not opening.done():
        opening.cancel()
    elif upstream is None and not opening.cancelled() and opening.exception() is None:
        upstream = opening.result()
    if upstream is not None:
        await upstream.aclose()
