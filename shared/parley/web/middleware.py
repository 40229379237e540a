"""Request ids on every response (`request-id` and `x-request-id`)."""

from __future__ import annotations

from typing import Any

from ..core.ids import new_request_id

__all__ = ["RequestIdMiddleware"]


class RequestIdMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        encoded = request_id.encode()

        async def send_with_request_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"request-id", encoded), (b"x-request-id", encoded)]
            await send(message)

        await self.app(scope, receive, send_with_request_id)
