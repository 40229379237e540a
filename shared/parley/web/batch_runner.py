"""A message batch's requests, run one chunk at a time (docs/batches.md).

Each request goes through the app itself, in-process, as `POST /v1/messages` (so it gets the
pipeline every request gets: validation, policy, retrieval, cache, failover, metering), with a
`BatchCall` in its ASGI scope, which no client can set: it names the key that made the batch
(by its hash), gives the call its request id, `<batch id>-<index>`, the same on every run of
the request, and makes the route's batch price apply.

For each request of a chunk not finished yet, in order:
- canceled: the batch is being canceled (read again before each call), or expired: its 24
  hours are over; neither calls a worker;
- otherwise it waits for one of its route's batch slots (io/batch_slots.py), then is called;
  a passing failure (429, 5xx, 529) is tried again with backoff, up to `batch_attempts`. At
  most as many of a process's requests as the route has slots ask DynamoDB for one; one that
  got none for `batch_slot_patience_seconds` (or by the deadline) is left for the chunk's next
  delivery, so a process does not sit waiting on a busy route;
- its usage is metered once the call is final (a retried attempt is not metered), then its
  result is kept exactly once (io/batches.py). A crash between the two runs the request again
  on the chunk's redelivery: under the same request id, so it is metered once.

`run_chunk` answers whether the chunk is done; a chunk left undone (its deadline came, or the
store failed) comes back from the queue, and only its unfinished requests run again; after
MAX_RECEIVES deliveries `give_up_chunk` errors what is left of it. The chunk that finishes a
batch's last request writes the results object and ends the batch.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool

from ..core.batches import (
    BatchRecord,
    BatchRequest,
    batch_params_error,
    canceled_result,
    errored_result,
    expired_result,
    succeeded_result,
)
from ..io.batch_queue import ChunkMessage, QueuePoller, chunk_message
from ..io.batches import BatchNotFoundError, ResultKind, ResultTooLargeError
from ..io.expiring import ExpiringCache
from ..io.routes import Route, match_route
from .accounting import record_outcome
from .dependencies import services_of_app
from .middleware import BATCH_CALL, BatchCall
from .services import Services

__all__ = ["MAX_RECEIVES", "BatchRunner", "poll_batch_queue"]

logger = logging.getLogger("parley.batches")

MESSAGES_PATH = "/v1/messages"
_RETRIED_STATUSES = {429, 500, 502, 503, 504, 529}
MAX_RECEIVES = 10
"""Deliveries of a chunk before it is given up: the batch queue's maxReceiveCount in
template.yaml (and the local poller's default, Settings.batch_max_receives)."""
_SLOT_WAIT_SECONDS = (0.05, 5.0)  # backoff while every slot of a route is taken


@dataclass(slots=True)
class _Answer:
    status: int
    body: bytes


class _BatchGone(Exception):
    """The batch was deleted while its chunk ran."""


class _ChunkState:
    """The batch as its chunk sees it: read again before each request is called, so that a
    cancel stops every request not yet sent to a worker."""

    def __init__(self, runner: "BatchRunner", batch_id: str, record: BatchRecord, key_hash: str) -> None:
        self._runner = runner
        self.batch_id = batch_id
        self.record = record
        self.key_hash = key_hash
        self._read_at = time.monotonic()

    async def current(self) -> BatchRecord:
        stored = await run_in_threadpool(self._runner.services.batches.get_any, self.batch_id)
        if stored is None:
            raise _BatchGone(self.batch_id)
        self.record, self._read_at = stored.record, time.monotonic()
        return self.record

    async def recent(self) -> BatchRecord:
        """The batch as read at most a second ago: enough to skip what is canceled already (the
        check before each call reads it afresh)."""
        if time.monotonic() - self._read_at < 1.0:
            return self.record
        return await self.current()

    async def stopped(self) -> bool:
        """Whether requests not yet sent should not be: canceled, or past its 24 hours."""
        record = await self.current()
        return record.cancel_initiated_at is not None or datetime.now(timezone.utc) >= record.expires_at


class _Stopped:
    """A request that waited for a slot while its batch was canceled or expired."""


class _Later:
    """A request left for the chunk's next delivery: no slot came in time, or the deadline did."""


STOPPED, LATER = _Stopped(), _Later()


class BatchRunner:
    def __init__(self, app: Any) -> None:
        self.app = app
        # This process's requests that may ask for a route's slots at once (as many as it has):
        # the others wait here, without writing to DynamoDB.
        self._contenders: dict[tuple[str, int], asyncio.Semaphore] = {}

    @property
    def services(self) -> Services:
        return services_of_app(self.app)

    async def run_chunk(self, message: ChunkMessage, deadline: float | None = None) -> bool:
        """Run the chunk's unfinished requests; whether the chunk is done (its message may go).
        No request is started after `deadline` (time.monotonic()): those are left for the
        chunk's next delivery."""
        opened = await self._open(message)
        if opened is None:
            return True  # deleted, or ended: nothing left to do
        state, pending = opened
        batch_id = message.batch_id
        lanes = asyncio.Semaphore(max(1, self.services.settings.batch_concurrency))

        async def one(index: int, request: BatchRequest) -> bool:
            async with lanes:
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                return await self._run_request(state, index, request, deadline)

        outcomes = await asyncio.gather(*(one(index, request) for index, request in pending), return_exceptions=True)
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if any(isinstance(failure, _BatchGone) for failure in failures):
            return True
        if failures:  # every other request of the chunk has run: only these run again
            raise failures[0]
        if not all(outcomes):
            return False
        await run_in_threadpool(self._conclude, batch_id)
        return True

    async def give_up_chunk(self, message: ChunkMessage, receives: int) -> None:
        """A chunk that failed every delivery (`receives` of them; in AWS, what the dead-letter
        queue got): its unfinished requests are errored, so the batch still ends. Its requests
        object must be readable (their custom_ids are in it); if not, the batch is left as it is."""
        opened = await self._open(message)
        if opened is None:
            return
        state, pending = opened
        batch_id = message.batch_id
        reason = f"Parley could not run this request: its part of the batch failed {receives} times."
        logger.error("batch %s: chunk %s gave up after %s deliveries", batch_id, message.chunk.number, receives)
        try:
            for index, request in pending:
                result = errored_result("api_error", reason, f"{batch_id}-{index}")
                await self._finish(state, index, request.custom_id, "errored", result)
        except _BatchGone:
            return
        await run_in_threadpool(self._conclude, batch_id)

    async def _open(self, message: ChunkMessage) -> tuple[_ChunkState, list[tuple[int, BatchRequest]]] | None:
        """The chunk's batch and its unfinished requests (index, request), in order; None when the
        batch is deleted or has ended."""
        services = self.services
        batch_id, chunk = message.batch_id, message.chunk
        stored = await run_in_threadpool(services.batches.get_any, batch_id)
        if stored is None or stored.record.ended_at is not None:
            return None
        requests = await run_in_threadpool(services.batch_objects.requests, batch_id, chunk)  # type: ignore[union-attr]
        indices = range(chunk.first, chunk.first + chunk.count)
        finished = await run_in_threadpool(services.batches.finished, batch_id, indices)
        state = _ChunkState(self, batch_id, stored.record, stored.key_hash)
        return state, [(index, requests[index - chunk.first]) for index in indices if index not in finished]

    def _conclude(self, batch_id: str) -> None:
        """End the batch once every request is counted: its results object first, so that an
        ended batch's results are in S3 (or, until they are, read from the table)."""
        services = self.services
        stored = services.batches.get_any(batch_id)
        if stored is None or stored.record.ended_at is not None or stored.record.request_counts.processing:
            return
        services.batch_objects.put_results(batch_id, services.batches.result_lines(batch_id))  # type: ignore[union-attr]
        services.batches.end(batch_id, datetime.now(timezone.utc))

    async def _run_request(self, state: _ChunkState, index: int, request: BatchRequest, deadline: float | None) -> bool:
        """Run the request and keep its result; False when it is left for later."""
        record = await state.recent()
        refused = batch_params_error(request.params)
        if record.cancel_initiated_at is not None:
            kind, result = "canceled", canceled_result()
        elif datetime.now(timezone.utc) >= record.expires_at:
            kind, result = "expired", expired_result()
        elif refused is not None:
            kind, result = "errored", errored_result("invalid_request_error", refused, None)
        else:
            outcome = await self._call_in_slot(state, index, request, deadline)
            if outcome is LATER:
                return False
            if outcome is STOPPED:
                return await self._run_request(state, index, request, deadline)  # canceled or expired meanwhile
            kind, result = outcome  # type: ignore[misc]
        await self._finish(state, index, request.custom_id, kind, result)
        return True

    async def _call_in_slot(
        self, state: _ChunkState, index: int, request: BatchRequest, deadline: float | None
    ) -> tuple[ResultKind, dict[str, Any]] | _Stopped | _Later:
        """The request's result once called in one of its route's slots; STOPPED when the batch
        was canceled or expired while it waited for one, LATER when none came in time."""
        services = self.services
        model = request.params.get("model")
        route = match_route(await _routes(services), model, state.record.account) if isinstance(model, str) else None
        if route is None:
            return await self._call(state, index, request)  # the app answers what is wrong with it
        if route.batch_slots == 0:
            message = f"The model {route.model} does not take message batches."
            return "errored", errored_result("invalid_request_error", message, None)
        lease_seconds = route.timeouts.buffered * services.settings.batch_attempts + 60
        contenders = self._contenders.setdefault((route.model, route.batch_slots), asyncio.Semaphore(route.batch_slots))
        async with contenders:  # waiting here is waiting for this process's own calls: no patience
            patience = time.monotonic() + services.settings.batch_slot_patience_seconds
            if deadline is not None:
                patience = min(patience, deadline)
            wait = _SLOT_WAIT_SECONDS[0]
            while True:
                lease = await run_in_threadpool(
                    services.batch_slots.try_take, route.model, route.batch_slots, lease_seconds
                )
                if lease is not None:
                    break
                if await state.stopped():
                    return STOPPED
                if time.monotonic() >= patience:
                    return LATER
                await asyncio.sleep(wait * random.uniform(0.5, 1.0))
                wait = min(wait * 2, _SLOT_WAIT_SECONDS[1])
            try:
                if await state.stopped():  # canceled while it waited: the slot goes back unused
                    return STOPPED
                return await self._call(state, index, request)
            finally:
                await run_in_threadpool(services.batch_slots.give_back, lease)

    async def _call(self, state: _ChunkState, index: int, request: BatchRequest) -> tuple[ResultKind, dict[str, Any]]:
        """Call the app, trying a passing failure again; meter the final attempt."""
        attempts = max(1, self.services.settings.batch_attempts)
        request_id = f"{state.batch_id}-{index}"
        for attempt in range(attempts):
            call = BatchCall(request_id=request_id, key_hash=state.key_hash)
            answer = await self._asgi_post(request.params, call)
            final = answer.status not in _RETRIED_STATUSES or attempt == attempts - 1
            if final:
                if call.outcome is not None:
                    record_outcome(self.app, call.outcome)
                return _result(answer, request_id)
            await asyncio.sleep(min(30.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")

    async def _finish(
        self, state: _ChunkState, index: int, custom_id: str, kind: ResultKind, result: dict[str, Any]
    ) -> None:
        batches = self.services.batches
        now = datetime.now(timezone.utc)
        try:
            await run_in_threadpool(batches.finish_request, state.batch_id, index, custom_id, kind, result, now)
        except ResultTooLargeError:
            message = "The answer is too large to keep as a batch result."
            kind, result = "errored", errored_result("api_error", message, f"{state.batch_id}-{index}")
            await run_in_threadpool(batches.finish_request, state.batch_id, index, custom_id, kind, result, now)
        except BatchNotFoundError:
            raise _BatchGone(state.batch_id) from None

    async def _asgi_post(self, params: dict[str, Any], call: BatchCall) -> _Answer:
        body = orjson.dumps(params)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": MESSAGES_PATH,
            "raw_path": MESSAGES_PATH.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"host", b"parley-batch"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"anthropic-version", b"2023-06-01"),
            ],
            "client": None,
            "server": None,
            BATCH_CALL: call,
        }
        answered = asyncio.Event()
        sent = False
        status = 0
        pieces: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await answered.wait()  # the "client" stays until the whole answer is in
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                pieces.append(message.get("body", b""))
                if not message.get("more_body", False):
                    answered.set()

        try:
            await self.app(scope, receive, send)
        finally:
            answered.set()
        return _Answer(status, b"".join(pieces))


async def _routes(services: Services) -> tuple[Route, ...]:
    routes = services.routes.cached()
    if routes is ExpiringCache.MISSING or services.routes.due():
        routes = await run_in_threadpool(services.routes.load)
    return routes  # type: ignore[return-value]


def _result(answer: _Answer, request_id: str) -> tuple[ResultKind, dict[str, Any]]:
    try:
        data = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        data = None
    if answer.status == 200 and isinstance(data, dict) and data.get("type") == "message":
        return "succeeded", succeeded_result(data)
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("type"), str) and isinstance(error.get("message"), str):
        return "errored", errored_result(error["type"], error["message"], request_id)
    return "errored", errored_result("api_error", f"The request failed with status {answer.status}.", request_id)


def poll_batch_queue(app: Any, loop: asyncio.AbstractEventLoop) -> QueuePoller:
    """Locally: the batch queue polled in a thread, each chunk run on the app's event loop, as the
    SQS trigger hands chunks to the batch function in AWS."""
    runner = BatchRunner(app)
    settings = services_of_app(app).settings
    max_receives = settings.batch_max_receives
    queue = services_of_app(app).batch_queue
    if queue is None:
        raise ValueError("no batch queue is set (PARLEY_BATCH_QUEUE_URL)")

    def handle(body: str, receives: int) -> bool:
        try:
            message = chunk_message(body)
        except ValueError:
            logger.error("batch queue: dropped a message that is not a chunk")
            return True
        if receives > max_receives:
            work = runner.give_up_chunk(message, receives - 1)
            asyncio.run_coroutine_threadsafe(work, loop).result()
            return True
        if asyncio.run_coroutine_threadsafe(runner.run_chunk(message), loop).result():
            return True
        # Left for later (its route's slots stayed busy), not failed: a fresh message, as in
        # Lambda, so that waiting does not count towards giving up.
        queue.send(message.batch_id, [message.chunk], delay_seconds=min(900, settings.batch_visibility_seconds))
        return True

    return QueuePoller(queue, handle, settings.batch_visibility_seconds).start()
