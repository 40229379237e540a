"""JSON and error responses, encoded with orjson."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from ..core.chat_passthrough import chat_error_body
from ..core.errors import ParleyError, error_body

__all__ = ["error_response", "json_response"]


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, headers=headers, media_type="application/json")


def error_response(
    error: ParleyError, request_id: str | None, headers: dict[str, str] | None = None, openai: bool = False
) -> Response:
    """Anthropic's error envelope; OpenAI's for clients of /v1/chat/completions (`openai`)."""
    all_headers = {**error.headers, "x-should-retry": "true" if error.should_retry else "false", **(headers or {})}
    body = chat_error_body(error) if openai else error_body(error, request_id)
    return json_response(body, error.status, all_headers)
