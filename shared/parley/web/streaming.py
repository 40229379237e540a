"""The SSE body of a streamed answer: worker bytes in, Anthropic events out, pings while silent."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from typing import AsyncIterator, Callable, Protocol

import anyio

from ..core.answer_guard import AnswerGuard
from ..core.chat_passthrough import PING, ChatStreamRelay
from ..core.errors import ApiError, ParleyError
from ..core.passthrough import AnthropicStreamRelay
from ..core.response import AnswerContext
from ..core.response_cache import AnswerRecorder
from ..core.sse import encode_events
from ..core.stream import ChatToMessagesStream, Event, WorkerSSETranslator
from ..io.routes import Worker
from ..io.worker import WorkerStream
from ..telemetry import RequestOutcome
from .pipeline.meter import note_usage

__all__ = [
    "SSE_HEADERS",
    "SSE_MEDIA_TYPE",
    "chunks_or_silences",
    "close_upstream",
    "relay_chat_stream",
    "stream_answer",
]

logger = logging.getLogger("parley.stream")

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
SSE_MEDIA_TYPE = "text/event-stream; charset=utf-8"
_BATCH_BYTES = 64 * 1024
_DRAIN_SECONDS = 0.05


class _Relay(Protocol):
    finished: bool

    @property
    def usage(self) -> dict[str, int]: ...
    def ping(self) -> list[Event]: ...
    def fail(self, error: ParleyError) -> list[Event]: ...
    def feed(self, data: bytes) -> list[Event]: ...
    def end(self) -> list[Event]: ...


def _note_events(outcome: RequestOutcome | None, events: list[Event], recorder: AnswerRecorder | None = None) -> None:
    if recorder is not None:
        recorder.record(events)
    if outcome is None:
        return
    if outcome.first_token_at is None and any(name == "content_block_delta" for name, _ in events):
        outcome.first_token_at = time.perf_counter()
    if events and events[-1][0] == "error":
        outcome.error_type = events[-1][1]["error"]["type"]


def _relay_for(worker: Worker, prelude: ChatToMessagesStream, context: AnswerContext) -> _Relay:
    if worker.api == "anthropic":
        return AnthropicStreamRelay(context, started=prelude.started)
    return WorkerSSETranslator(context, prelude)


async def chunks_or_silences(
    upstream: WorkerStream, ping_seconds: float, answered: Callable[[], bool]
) -> AsyncIterator[list[bytes] | None | ParleyError]:
    """The worker's chunks as they arrive, in batches: chunks that have already arrived while the
    last one was handled go out together, so a worker running ahead costs the client one write
    per batch rather than one per chunk, and a chunk that arrives alone goes out at once.
    `None` for every `ping_seconds` of silence (send a ping); a ParleyError, last, if the stream
    fails or stays silent past its idle timeout.

    Once the answer is complete (`answered()`), the rest of the body (`[DONE]`, the chunked
    terminator) is still read for a moment, so the worker connection goes back to the pool
    instead of being closed; a worker that keeps it open longer is not waited for."""
    first = upstream.take_first()
    if first:  # already here: out at once, without a read task's round trip through the loop
        yield [first]
    chunks = upstream.chunks().__aiter__()
    clock = asyncio.get_running_loop().time
    last_data = clock()
    pending: asyncio.Future[bytes] | None = None
    batch: list[bytes] = []
    size = 0
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(chunks.__anext__())
            if batch:
                if size < _BATCH_BYTES:
                    await asyncio.sleep(0)  # the next read finishes now if its bytes are already here
                if size >= _BATCH_BYTES or not pending.done():
                    yield batch
                    batch, size = [], 0
                    continue
            else:
                quiet_left = upstream.idle_seconds - (clock() - last_data)
                wait = _DRAIN_SECONDS if answered() else max(0.0, min(ping_seconds, quiet_left))
                done, _ = await asyncio.wait((pending,), timeout=wait)
                if not done:
                    if answered():
                        return
                    if clock() - last_data < upstream.idle_seconds:
                        yield None
                        continue
                    yield upstream.idle_timeout()
                    return
            last_data = clock()
            finished_read, pending = pending, None
            try:
                data = finished_read.result()
            except (StopAsyncIteration, ParleyError) as ended:
                if batch:
                    yield batch
                if isinstance(ended, ParleyError):
                    yield ended
                return
            batch.append(data)
            size += len(data)
    finally:
        if pending is not None:
            pending.cancel()


async def stream_answer(
    opening: asyncio.Future[tuple[Worker, WorkerStream]],
    context: AnswerContext,
    ping_seconds: float,
    outcome: RequestOutcome | None = None,
    prompt_tokens: asyncio.Future[int | None] | None = None,
    guard: Callable[[Callable[[], dict[str, int]]], AnswerGuard | None] | None = None,
    recorder: AnswerRecorder | None = None,
) -> AsyncIterator[bytes]:
    """Stream the answer whose worker request `opening` is under way (failing over between
    workers until one sends its first bytes).

    While no worker has answered (a long prefill, a model loading), the client already gets
    `message_start` and pings; if none answers, an `error` event. `prompt_tokens`, the worker
    tokenizer's count, is used for message_start: once the worker has answered, message_start
    waits for the count (up to `ping_seconds`; it is usually long there), so that it agrees with
    the final usage; a count that comes later than that leaves the estimate.

    `guard` makes the answer's guard (stage `judge output`) from the stream's usage so far: every
    batch of events goes through it; once it refuses the answer, the worker is no longer read.
    `recorder` is fed every event the client is sent (the answer kept by the response cache).
    """
    prelude = ChatToMessagesStream(context)
    relay: _Relay | None = None
    upstream: WorkerStream | None = None

    def use_prompt_tokens() -> None:
        if prompt_tokens is not None and prompt_tokens.done() and not prompt_tokens.cancelled():
            count = prompt_tokens.result()
            if count is not None:
                prelude.use_input_tokens(count)

    try:
        while not opening.done() and not (await asyncio.wait((opening,), timeout=ping_seconds))[0]:
            use_prompt_tokens()
            events = prelude.ping()
            _note_events(outcome, events, recorder)
            yield encode_events(events)
        try:
            worker, upstream = opening.result()
        except ParleyError as error:
            events = prelude.fail(error)
            _note_events(outcome, events, recorder)
            yield encode_events(events)
            return
        if prompt_tokens is not None and not prelude.started and not prompt_tokens.done():
            await asyncio.wait((prompt_tokens,), timeout=ping_seconds)
        use_prompt_tokens()
        relay = _relay_for(worker, prelude, context)
        active = relay
        answer_guard = guard(lambda: active.usage) if guard is not None else None
        async with aclosing(chunks_or_silences(upstream, ping_seconds, lambda: active.finished)) as chunks:
            async for data in chunks:
                if data is None:
                    events = relay.ping()
                elif isinstance(data, ParleyError):
                    events = relay.fail(data)
                else:
                    events = [event for chunk in data for event in relay.feed(chunk)]
                if answer_guard is not None:
                    events = answer_guard.events(events)
                if events:
                    _note_events(outcome, events, recorder)
                    yield encode_events(events)
                if answer_guard is not None and answer_guard.refused is not None:
                    return
            else:
                events = relay.end()
                if answer_guard is not None:
                    events = answer_guard.events(events)
                _note_events(outcome, events, recorder)
                if events:
                    yield encode_events(events)
    except Exception:
        logger.exception("stream translation failed")
        events = (relay or prelude).fail(ApiError("Internal server error"))
        _note_events(outcome, events, recorder)
        if events:
            yield encode_events(events)
    finally:
        if outcome is not None and relay is not None:
            note_usage(outcome, relay.usage)
        if prompt_tokens is not None:
            prompt_tokens.cancel()
        await close_upstream(opening, upstream)


async def close_upstream(opening: asyncio.Future[tuple[Worker, WorkerStream]], upstream: WorkerStream | None) -> None:
    """Cancel the worker call still under way, or close the stream it opened (the client may
    have left: the worker must still be told)."""
    if not opening.done():
        opening.cancel()  # its own cleanup closes the connection it was opening
    elif upstream is None and not opening.cancelled() and opening.exception() is None:
        upstream = opening.result()[1]
    if upstream is not None:
        with anyio.CancelScope(shield=True):  # the client left: the worker must still be told
            await upstream.aclose()


async def relay_chat_stream(
    opening: asyncio.Future[tuple[Worker, WorkerStream]],
    relay: ChatStreamRelay,
    ping_seconds: float,
    outcome: RequestOutcome | None,
) -> AsyncIterator[bytes]:
    """The SSE body of a streamed Chat Completions answer: the worker's chunks checked and
    relayed (through the relay's guard, if any), pings while it is silent."""
    upstream: WorkerStream | None = None
    try:
        while not opening.done() and not (await asyncio.wait((opening,), timeout=ping_seconds))[0]:
            yield PING
        try:
            _, upstream = opening.result()
        except ParleyError as error:
            yield relay.fail(error)
            return
        async with aclosing(chunks_or_silences(upstream, ping_seconds, lambda: relay.finished)) as chunks:
            async for data in chunks:
                if data is None:
                    yield PING
                    continue
                out = relay.fail(data) if isinstance(data, ParleyError) else b"".join(map(relay.feed, data))
                if out:
                    if outcome is not None and outcome.first_token_at is None:
                        outcome.first_token_at = time.perf_counter()
                    yield out
                if relay.refused:
                    return
            else:
                yield relay.end()
    finally:
        if outcome is not None:
            note_usage(outcome, relay.usage)
        await close_upstream(opening, upstream)
