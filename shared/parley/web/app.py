"""The ASGI app: `parley.web.app:app`. Both Lambda entry points and the local stack serve it."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Iterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match

from ..core.errors import (
    ApiError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    ParleyError,
    RequestTooLargeError,
)
from ..io.background import drain
from . import batches, chat_completions, messages, models, usage
from .accounting import record_outcome
from .batch_runner import poll_batch_queue
from .chat_completions import CHAT_COMPLETIONS_PATH
from .dependencies import services_of_app
from .middleware import RequestContextMiddleware, outcome_of
from .openapi import install_openapi
from .responses import error_response, json_response
from .services import Services
from .upstream import ClientDisconnected

__all__ = ["app", "create_app"]

logger = logging.getLogger("parley")

_STATUS_ERRORS: dict[int, type[ParleyError]] = {404: NotFoundError, 413: RequestTooLargeError}


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _error_response(request: Request, error: ParleyError, headers: dict[str, str] | None = None) -> Response:
    openai = request.url.path == CHAT_COMPLETIONS_PATH
    return error_response(error, _request_id(request), headers, openai=openai)


def _note_error(request: Request, error: ParleyError) -> None:
    outcome = outcome_of(request)
    if outcome is not None:
        outcome.error_type = error.type


async def _parley_error(request: Request, error: ParleyError) -> Response:
    _note_error(request, error)
    return _error_response(request, error)


def _method_not_allowed(request: Request, error: HTTPException) -> tuple[ParleyError, dict[str, str]]:
    headers = {name.lower(): value for name, value in (error.headers or {}).items()}
    methods = {method.strip() for method in headers.get("allow", "").split(",") if method.strip()}
    for route in _routes(request.app.router.routes):  # Starlette names only the first route of the path
        if getattr(route, "methods", None) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    allowed = sorted(methods)
    headers["allow"] = ", ".join(allowed)
    message = f"Method {request.method} is not allowed for {request.url.path}; allowed: {headers['allow'] or 'none'}."
    return MethodNotAllowedError(message), headers


def _routes(routes: list[Any]) -> Iterator[Any]:
    """The app's routes, those of the routers it includes (none with a prefix) among them."""
    for route in routes:
        included = getattr(route, "original_router", None)
        yield from _routes(included.routes) if included is not None else (route,)


async def _http_error(request: Request, error: HTTPException) -> Response:
    """Starlette's own refusals (no such path, wrong method) in the API's error envelope."""
    if error.status_code == 405:
        parley_error, headers = _method_not_allowed(request, error)
    else:
        parley_error = _STATUS_ERRORS.get(error.status_code, InvalidRequestError)(str(error.detail))
        headers = dict(error.headers or {})
    _note_error(request, parley_error)
    return _error_response(request, parley_error, headers)


async def _validation_error(request: Request, error: RequestValidationError) -> Response:
    parley_error = InvalidRequestError(str(error.errors()[0].get("msg")))
    _note_error(request, parley_error)
    return _error_response(request, parley_error)


async def _unexpected_error(request: Request, error: Exception) -> Response:
    # Runs outside the request-context middleware, which has already recorded this request as a
    # 500 api_error; so this handler sets the request-id header itself.
    logger.exception("unhandled error", exc_info=error)
    request_id = _request_id(request)
    headers = {"request-id": request_id, "x-request-id": request_id} if request_id else None
    return error_response(ApiError("Internal server error", should_retry=True), request_id, headers)


async def _client_disconnected(request: Request, error: ClientDisconnected) -> Response:
    return Response(status_code=499)  # nobody reads it: the client has gone


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    poller = None
    if services_of_app(app).settings.batch_poll:  # locally: this process runs the batches (docs/batches.md)
        poller = poll_batch_queue(app, asyncio.get_running_loop())
    yield
    if poller is not None:
        await asyncio.to_thread(poller.stop)
    await drain()  # cache refreshes under way
    services = app.state.services
    if services is not None:  # the usage journal's loop meters what is left (for a few seconds)
        await asyncio.gather(services.worker.aclose(), services.account_worker.aclose())
        await asyncio.to_thread(services.close)


def create_app(services_factory: Callable[[], Services] = Services.from_environment) -> FastAPI:
    # No redirect from /v1/messages/ to /v1/messages: its Location would be built from the Host
    # header, and an API client does not follow a 307 for a POST anyway. It gets a 404.
    app = FastAPI(
        title="Parley", version="0.1.0", docs_url=None, redoc_url=None, lifespan=_lifespan, redirect_slashes=False
    )
    app.state.services = None
    app.state.services_factory = services_factory
    app.add_middleware(RequestContextMiddleware, record=record_outcome)
    app.add_exception_handler(ParleyError, _parley_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(ClientDisconnected, _client_disconnected)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error)
    app.include_router(batches.router)
    app.include_router(messages.router)
    app.include_router(chat_completions.router)
    app.include_router(models.router)
    app.include_router(usage.router)
    install_openapi(app)

    @app.get("/health")
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.api_route("/", methods=["GET", "HEAD"])
    async def root() -> Response:
        return json_response({"service": "parley"})

    return app


app = create_app()
