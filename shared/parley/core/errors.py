"""Parley's errors: each is one Anthropic error type with its HTTP status.

    ParleyError
    ├── InvalidRequestError      400 invalid_request_error
    ├── AuthenticationError      401 authentication_error
    ├── BillingError             402 billing_error
    ├── PermissionDeniedError    403 permission_error
    ├── NotFoundError            404 not_found_error
    ├── RequestTooLargeError     413 request_too_large
    ├── RateLimitError           429 rate_limit_error
    ├── ApiError                 500 api_error
    ├── GatewayTimeoutError      504 timeout_error
    └── OverloadedError          529 overloaded_error

`worker_error(status, body)` maps a worker's HTTP error to one of these, keeping the
worker's own message.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "AuthenticationError",
    "BillingError",
    "GatewayTimeoutError",
    "InvalidRequestError",
    "NotFoundError",
    "OverloadedError",
    "ParleyError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "error_body",
    "worker_error",
]


class ParleyError(Exception):
    status = 500
    type = "api_error"
    should_retry = False

    def __init__(
        self, message: str, *, headers: dict[str, str] | None = None, should_retry: bool | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        if should_retry is not None:
            self.should_retry = should_retry


class InvalidRequestError(ParleyError):
    status = 400
    type = "invalid_request_error"


class AuthenticationError(ParleyError):
    status = 401
    type = "authentication_error"


class BillingError(ParleyError):
    status = 402
    type = "billing_error"


class PermissionDeniedError(ParleyError):
    status = 403
    type = "permission_error"


class NotFoundError(ParleyError):
    status = 404
    type = "not_found_error"


class RequestTooLargeError(ParleyError):
    status = 413
    type = "request_too_large"


class RateLimitError(ParleyError):
    status = 429
    type = "rate_limit_error"
    should_retry = True


class ApiError(ParleyError):
    status = 500
    type = "api_error"
    should_retry = True


class GatewayTimeoutError(ParleyError):
    status = 504
    type = "timeout_error"
    should_retry = True


class OverloadedError(ParleyError):
    status = 529
    type = "overloaded_error"
    should_retry = True


def error_body(error: ParleyError, request_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "error": {"type": error.type, "message": error.message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def _worker_message(body: Any) -> str | None:
    """The human message inside an OpenAI-style (or Anthropic-style) error body."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            message = inner.get("message") or inner.get("detail")
            if isinstance(message, str) and message:
                return message
        elif isinstance(inner, str) and inner:
            return inner
        for key in ("message", "detail"):
            if isinstance(body.get(key), str) and body[key]:
                return body[key]
    if isinstance(body, str) and body.strip():
        return body.strip()[:2000]
    return None


_WORKER_STATUS_TO_ERROR: dict[int, type[ParleyError]] = {
    400: InvalidRequestError,
    413: RequestTooLargeError,
    422: InvalidRequestError,
    429: RateLimitError,
    503: OverloadedError,
    529: OverloadedError,
    408: GatewayTimeoutError,
    504: GatewayTimeoutError,
}


def worker_error(status: int, body: Any, *, retry_after: str | None = None) -> ParleyError:
    """Map a worker's HTTP error response to the Anthropic error a client should see.

    A worker's 401, 403 or 404 (wrong key, wrong model name) is the operator's misconfiguration,
    not the caller's fault: it becomes a 500 that says so.
    """
    message = _worker_message(body) or f"The worker answered HTTP {status}."
    error_class = _WORKER_STATUS_TO_ERROR.get(status)
    if error_class is None:
        error_class = ApiError
    misconfigured = status in (401, 403, 404)
    if misconfigured:
        message = f"The worker rejected the route's configuration (HTTP {status}): {message}"
    headers = {"retry-after": retry_after} if retry_after and error_class is RateLimitError else None
    return error_class(message, headers=headers, should_retry=False if misconfigured else None)
