"""Parley's errors: each is one Anthropic error type with its HTTP status.

    ParleyError
    ├── InvalidRequestError      400 invalid_request_error
    ├── AuthenticationError      401 authentication_error
    ├── BillingError             402 billing_error
    ├── PermissionDeniedError    403 permission_error
    ├── NotFoundError            404 not_found_error
    ├── MethodNotAllowedError    405 invalid_request_error (Anthropic uses it for other 4xx too)
    ├── RequestTooLargeError     413 request_too_large
    ├── RateLimitError           429 rate_limit_error
    ├── ApiError                 500 api_error
    ├── GatewayTimeoutError      504 timeout_error
    └── OverloadedError          529 overloaded_error

`worker_error(status, body)` maps a worker's HTTP error to one of these, keeping the
worker's own message (an HTML page is named, not passed on; a text body is cut to one clean
line). `retry_after_seconds` reads a worker's `retry-after` header; only a delay it can trust
reaches the client, in whole seconds.
"""

from __future__ import annotations

import email.utils
import html
import math
import re
import time
from typing import Any

__all__ = [
    "ApiError",
    "AuthenticationError",
    "BillingError",
    "GatewayTimeoutError",
    "InvalidRequestError",
    "MethodNotAllowedError",
    "NotFoundError",
    "OverloadedError",
    "ParleyError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "error_body",
    "retry_after_seconds",
    "worker_chunk_error",
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


class MethodNotAllowedError(ParleyError):
    status = 405
    type = "invalid_request_error"


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


_MAX_RETRY_AFTER_SECONDS = 86400
_MAX_TEXT_MESSAGE = 500
_MAX_TITLE = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A `retry-after` header's delay in seconds, or None if it gives none Parley can trust:
    delay-seconds (an integer, or a decimal as some servers send) or an HTTP-date, in [0, 86400)."""
    if not value or not value.isascii():
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:  # an HTTP-date is GMT; one without a zone is no HTTP-date
            return None
        seconds = max(0.0, moment.timestamp() - (time.time() if now is None else now))
    return seconds if 0 <= seconds < _MAX_RETRY_AFTER_SECONDS else None


def _whole_seconds(seconds: float) -> str:
    return str(math.ceil(seconds))


def _is_html(text: str, content_type: str | None) -> bool:
    return (content_type or "").lower().startswith("text/html") or text.lstrip().startswith("<")


def _html_message(page: str, status: int) -> str:
    message = f"The worker answered HTTP {status} with an HTML page"
    found = _TITLE.search(page)
    title = " ".join(html.unescape(_TAG.sub("", found.group(1))).split()) if found else ""
    title = _CONTROL.sub("", title)[:_MAX_TITLE]
    return f"{message}: {title}" if title else message


def _text_message(text: str) -> str | None:
    """A plain-text body as one line a client can show: its first non-blank line, control
    characters removed, at most 500 characters."""
    for line in text.splitlines():
        line = _CONTROL.sub("", line).strip()
        if line:
            return line[:_MAX_TEXT_MESSAGE]
    return None


def _worker_message(body: Any, status: int, content_type: str | None = None) -> str | None:
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
        return _html_message(body, status) if _is_html(body, content_type) else _text_message(body)
    return None


def _status_in_body(body: Any) -> int | None:
    """The HTTP status an error body names (`code` or `status`, as vLLM and OpenAI put it)."""
    if not isinstance(body, dict):
        return None
    for holder in (body.get("error"), body):
        if isinstance(holder, dict):
            for key in ("code", "status"):
                value = holder.get(key)
                if isinstance(value, str) and value.isascii() and value.isdigit():
                    value = int(value)
                if isinstance(value, int) and not isinstance(value, bool) and 400 <= value < 600:
                    return value
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


def worker_error(
    status: int, body: Any, *, retry_after: str | float | None = None, content_type: str | None = None
) -> ParleyError:
    """Map a worker's HTTP error response to the Anthropic error a client should see.

    A worker's 401, 403 or 404 (wrong key, wrong model name) is the operator's misconfiguration,
    not the caller's fault: it becomes a 500 that says so. A 2xx here is an answer that was no
    answer (an error body where a stream was due): the status its body names, else a 500.
    `retry_after` is the worker's header as it came (or the seconds `retry_after_seconds` read
    from it); the client gets it in whole seconds, or not at all if it is no delay.
    """
    message = _worker_message(body, status, content_type)
    if message is None:
        message = f"The worker answered HTTP {status}" + (" without an event stream." if status < 400 else ".")
    effective = (_status_in_body(body) or 500) if status < 400 else status
    error_class = _WORKER_STATUS_TO_ERROR.get(effective, ApiError)
    misconfigured = effective in (401, 403, 404)
    if misconfigured:
        message = f"The worker rejected the route's configuration (HTTP {effective}): {message}"
    seconds = retry_after_seconds(retry_after) if isinstance(retry_after, str) else retry_after
    headers = None
    if seconds is not None and error_class is RateLimitError:
        headers = {"retry-after": _whole_seconds(seconds)}
    return error_class(message, headers=headers, should_retry=False if misconfigured else None)


def worker_chunk_error(error: Any) -> ParleyError:
    """A failure a worker reports inside its stream, as `data: {"error": {...}}` (vLLM): the status
    is the error's `code` when that is an HTTP error status, else 500."""
    status = 500
    if isinstance(error, dict):
        code = error.get("code")
        if isinstance(code, int) and 400 <= code < 600:
            status = code
        elif isinstance(code, str) and code.isascii() and code.isdigit() and 400 <= int(code) < 600:
            status = int(code)
    return worker_error(status, {"error": error})
