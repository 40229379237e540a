"""Per-request context: the request id on every response, and the request's outcome handed to
`record` once, before the response's last byte (after it, Lambda may freeze the process). The
app wires `record` (web/accounting.py `record_outcome`: the usage line to the usage log, stdout or
the local journal, no network, docs/metering.md), so this module depends on no other of web/."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from ..core.ids import new_request_id
from ..telemetry import RequestOutcome

__all__ = ["BATCH_CALL", "BatchCall", "RequestContextMiddleware", "add_response_headers", "batch_call_of", "outcome_of"]

_OBSERVED_PREFIX = "/v1/"

BATCH_CALL = "parley.batch_call"
"""The ASGI scope key of a message batch's request run in-process (web/batch_runner.py). Only
the runner builds such a scope: no header or body of a client's can set it."""


@dataclass(slots=True)
class BatchCall:
    """A batch request's call: its request id (the same on every run of it, so a request run
    again after a crash is metered once), the SHA-256 of the key that made the batch, and the
    outcome, kept here for the runner to record once it knows the call is final (a transient
    failure that is retried is not metered)."""

    request_id: str
    key_hash: str
    outcome: RequestOutcome | None = None


def batch_call_of(request: Any) -> BatchCall | None:
    return request.scope.get(BATCH_CALL)


def outcome_of(request: Any) -> RequestOutcome | None:
    return getattr(request.state, "outcome", None)


def add_response_headers(request: Any, headers: dict[str, str]) -> None:
    """Headers for the response this request gets, whichever way it ends (set by the middleware)."""
    state = request.state
    state.response_headers = {**(getattr(state, "response_headers", None) or {}), **headers}


class RequestContextMiddleware:
    def __init__(self, app: Any, record: Callable[[Any, RequestOutcome], None]) -> None:
        self.app = app
        self.record = record  # record(the ASGI app, the finished outcome)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        call: BatchCall | None = scope.get(BATCH_CALL)
        request_id = call.request_id if call is not None else new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        encoded = request_id.encode()
        outcome = None
        if scope["path"].startswith(_OBSERVED_PREFIX):
            outcome = state["outcome"] = RequestOutcome(request_id, scope["method"], scope["path"])
            outcome.batch = call is not None

        async def finish(final: dict[str, Any] | None = None) -> None:
            """Record the outcome, then send `final` (the response's last message) if given."""
            nonlocal outcome
            if outcome is None:
                if final is not None:
                    await send(final)
                return
            finished, outcome = outcome, None
            finished.finished = time.perf_counter()
            if call is not None:
                call.outcome = finished
            else:
                self.record(scope["app"], finished)
            if final is not None:
                await send(final)

        async def send_with_context(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"request-id", encoded), (b"x-request-id", encoded)]
                for name, value in state.get("response_headers", {}).items():
                    extra.append((name.encode(), value.encode()))
                message["headers"] = [*message.get("headers", ()), *extra]
                if outcome is not None:
                    outcome.status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                await finish(message)
                return
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        except Exception:
            if outcome is not None and not outcome.status:
                outcome.status, outcome.error_type = 500, "api_error"
            raise
        finally:
            if outcome is not None and outcome.status:
                outcome.client_disconnected = True
            await finish()
