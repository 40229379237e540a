"""Calling a route's workers on behalf of a request: failover, and giving up when the client leaves."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, TypeVar

from starlette.requests import Request

from ..io.failover import call_with_failover
from ..io.routes import Route, Worker
from ..io.worker import WorkerClient, WorkerFailure
from ..telemetry import log_text, worker_label
from .middleware import outcome_of
from .services import Services

__all__ = ["ClientDisconnected", "call_route", "first_answer_or_error", "unless_client_leaves", "worker_client"]

T = TypeVar("T")
logger = logging.getLogger("parley.upstream")


class ClientDisconnected(Exception):
    """The client closed the connection while its answer was being prepared."""


def worker_client(services: Services, route: Route) -> WorkerClient:
    """Accounts' own workers go through the client that connects to public addresses only."""
    return services.account_worker if route.account else services.worker


async def call_route(
    request: Request, services: Services, route: Route, call: Callable[[WorkerClient, Worker], Awaitable[T]]
) -> tuple[Worker, T]:
    """`call` on the route's workers, with failover; the outcome names the worker that answered."""
    client = worker_client(services, route)
    outcome = outcome_of(request)

    def on_failure(worker: Worker, failure: WorkerFailure) -> None:
        logger.warning(
            "worker %s failed (%s: %s); %s",
            worker_label(worker.base_url),
            failure.error.type,
            log_text(failure.error.message),
            "trying again" if len(route.workers) == 1 else "trying another worker",
        )

    worker, result = await call_with_failover(
        route, lambda worker: call(client, worker), services.health, services.failover, services.rng, on_failure
    )
    if outcome is not None:
        outcome.worker = worker_label(worker.base_url)
    return worker, result


async def _client_left(receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and so closing its worker connection) if the client
    disconnects first. Call it only once the request body has been read."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_left(request.receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        outcome = outcome_of(request)
        if outcome is not None:
            outcome.client_disconnected = True
        raise ClientDisconnected
    return task.result()


async def first_answer_or_error(request: Request, opening: asyncio.Future[Any], seconds: float) -> None:
    """Give a streamed request's worker call `seconds` to answer before the stream starts: one
    refused at once raises here (a plain HTTP error); one slow to answer is left running (the
    stream starts, with pings). The call is cancelled if the client leaves meanwhile."""
    try:
        if not opening.done():
            await unless_client_leaves(request, asyncio.wait((opening,), timeout=seconds))
    except BaseException:
        opening.cancel()
        raise
    if opening.done() and opening.exception() is not None:
        raise opening.exception()  # type: ignore[misc]
