"""The SSE body of a streamed answer: worker bytes in, Anthropic events out, pings while silent."""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

from ..core.errors import ApiError, ParleyError
from ..core.response import AnswerContext
from ..core.sse import encode_events
from ..core.stream import WorkerSSETranslator
from ..io.worker import WorkerStream

__all__ = ["stream_answer"]

logger = logging.getLogger("parley.stream")


async def stream_answer(
    opening: asyncio.Future[WorkerStream], context: AnswerContext, ping_seconds: float
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
            yield encode_events(translator.messages.fail(error))
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
                yield encode_events(events)
    except Exception:
        logger.exception("stream translation failed")
        events = translator.messages.fail(ApiError("Internal server error"))
        if events:
            yield encode_events(events)
    finally:
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
