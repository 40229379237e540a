"""The SSE body of a streamed answer: worker bytes in, Anthropic events out, pings while silent."""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

from ..core.errors import ApiError, ParleyError
from ..core.response import AnswerContext
from ..core.sse import SSEDecoder, encode_events
from ..core.stream import ChatToMessagesStream, Event
from ..io.worker import WorkerStream

__all__ = ["stream_answer"]

logger = logging.getLogger("parley.stream")


def _translate(translator: ChatToMessagesStream, decoder: SSEDecoder, data: bytes) -> list[Event]:
    try:
        payloads = decoder.feed(data)
    except ParleyError as error:
        return translator.fail(error)
    events: list[Event] = []
    for payload in payloads:
        events += translator.feed_data(payload)
    return events


def _finish(translator: ChatToMessagesStream, decoder: SSEDecoder) -> list[Event]:
    events: list[Event] = []
    for payload in decoder.close():
        events += translator.feed_data(payload)
    return events + translator.close()


async def stream_answer(
    upstream: WorkerStream, context: AnswerContext, ping_seconds: float
) -> AsyncIterator[bytes]:
    translator = ChatToMessagesStream(context)
    decoder = SSEDecoder()
    chunks = upstream.chunks().__aiter__()
    pending: asyncio.Future[bytes] | None = None
    try:
        while not translator.finished:
            if pending is None:
                pending = asyncio.ensure_future(chunks.__anext__())
            done, _ = await asyncio.wait((pending,), timeout=ping_seconds)
            if not done:
                yield encode_events(translator.ping())
                continue
            finished_read, pending = pending, None
            try:
                data = finished_read.result()
            except StopAsyncIteration:
                events = _finish(translator, decoder)
            except ParleyError as error:
                events = translator.fail(error)
            else:
                events = _translate(translator, decoder, data)
            if events:
                yield encode_events(events)
    except Exception:
        logger.exception("stream translation failed")
        events = translator.fail(ApiError("Internal server error"))
        if events:
            yield encode_events(events)
    finally:
        if pending is not None:
            pending.cancel()
        await upstream.aclose()
