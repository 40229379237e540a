"""Request plumbing shared by the routes: services, auth, the size-limited body, route lookup."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from ..core.errors import (
    ApiError,
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    RequestTooLargeError,
)
from ..io.background import refresh_in_background
from ..io.expiring import ExpiringCache
from ..io.keys import KeyRecord, check_active, check_active_hash
from ..io.routes import Route, match_route
from .middleware import batch_call_of, outcome_of
from .services import Services

__all__ = ["store_call", "authenticate", "load_routes", "read_body", "resolve_route", "services_of", "services_of_app"]

T = TypeVar("T")
_MAX_KEY_LENGTH = 512


def services_of_app(app: Any) -> Services:
    state = app.state
    services = getattr(state, "services", None)
    if services is None:
        services = state.services = state.services_factory()
    return services


def services_of(request: Request) -> Services:
    return services_of_app(request.app)


async def store_call(function: Callable[..., T], *args: Any) -> T:
    try:
        return await run_in_threadpool(function, *args)
    except (BotoCoreError, ClientError) as exc:
        raise ApiError(
            f"Parley's key and route store is unavailable ({type(exc).__name__}).", should_retry=True
        ) from None


def _presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    authorization = request.headers.get("authorization")
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


async def authenticate(request: Request) -> KeyRecord:
    call = batch_call_of(request)
    record = await _batch_key(request, call.key_hash) if call is not None else await _presented(request)
    outcome = outcome_of(request)
    if outcome is not None:
        outcome.key_id, outcome.account = record.key_id, record.account
    return record


async def _batch_key(request: Request, key_hash: str) -> KeyRecord:
    """The key that made the batch (as it stands now: revoked since, its requests are refused)."""
    keys = services_of(request).keys
    record = keys.cached_hash(key_hash)
    if record is ExpiringCache.MISSING:
        record = await store_call(keys.lookup_hash, key_hash)
    return check_active_hash(record, key_hash)  # type: ignore[arg-type]


async def _presented(request: Request) -> KeyRecord:
    key = _presented_key(request)
    if not key:
        raise AuthenticationError("x-api-key header is required")
    if len(key) > _MAX_KEY_LENGTH:
        raise AuthenticationError("invalid x-api-key")
    keys = services_of(request).keys
    record = keys.cached(key)
    if record is ExpiringCache.MISSING:
        record = await store_call(keys.lookup, key)
    elif keys.due(key):
        refresh_in_background(keys.lookup, key)
    return check_active(record, key)  # type: ignore[arg-type]


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_large = RequestTooLargeError("Request exceeds the maximum size")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:  # nobody will read the answer; record a client error, not a crash
        raise InvalidRequestError("The client disconnected before the request body was complete.") from None
    return b"".join(chunks)


async def load_routes(request: Request) -> tuple[Route, ...]:
    routes_store = services_of(request).routes
    routes = routes_store.cached()
    if routes is ExpiringCache.MISSING:
        routes = await store_call(routes_store.load)
    elif routes_store.due():
        refresh_in_background(routes_store.load)
    return routes  # type: ignore[return-value]


async def resolve_route(request: Request, model: str, account: str | None = None) -> Route:
    route = match_route(await load_routes(request), model, account)
    if route is None:
        raise NotFoundError(f"model: {model}")
    return route
