"""The worker client: Chat Completions over a pooled httpx.AsyncClient.

Every transport failure is translated here, at the boundary, into the Anthropic error the
caller should see; nothing above this module sees an httpx exception.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, AsyncIterator, Iterator

import httpx
import orjson

from ..core.errors import (
    ApiError,
    GatewayTimeoutError,
    OverloadedError,
    ParleyError,
    worker_error,
)
from .routes import Worker
from .secrets import SecretResolver

__all__ = ["WorkerClient", "WorkerStream", "new_http_client"]

_MAX_ERROR_BODY = 64 * 1024


def new_http_client(connect_seconds: float, read_seconds: float, max_connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(read_seconds, connect=connect_seconds, pool=connect_seconds),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        follow_redirects=False,
    )


@contextmanager
def _translate_transport_errors() -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
            raise OverloadedError("The worker for this model could not be reached in time.") from None
        raise GatewayTimeoutError("The worker for this model did not answer in time.") from None
    except httpx.ConnectError:
        raise OverloadedError("The worker for this model could not be reached.") from None
    except httpx.TransportError:
        raise ApiError("The connection to the worker for this model failed.", should_retry=True) from None


def _error_from(response: httpx.Response, body: bytes) -> ParleyError:
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = body[:_MAX_ERROR_BODY].decode("utf-8", "replace")
    return worker_error(response.status_code, parsed, retry_after=response.headers.get("retry-after"))


class WorkerStream:
    """An open streaming answer: iterate `chunks()`, then (always) `aclose()`."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    async def chunks(self) -> AsyncIterator[bytes]:
        with _translate_transport_errors():
            async for chunk in self._response.aiter_raw():
                yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


class WorkerClient:
    def __init__(self, http: httpx.AsyncClient, secrets: SecretResolver | None = None) -> None:
        self._http = http
        self._secrets = secrets or SecretResolver()

    async def _headers(self, worker: Worker, accept: str = "application/json") -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": accept}
        api_key = await self._secrets.resolve(worker.api_key_ref)
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        return headers

    async def complete(self, worker: Worker, body: dict[str, Any]) -> dict[str, Any]:
        with _translate_transport_errors():
            response = await self._http.post(
                worker.base_url.rstrip("/") + "/chat/completions",
                content=orjson.dumps(body),
                headers=await self._headers(worker),
            )
        if response.status_code != 200:
            raise _error_from(response, response.content)
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise ApiError("The worker's answer is not valid JSON.") from None
        if not isinstance(answer, dict):
            raise ApiError("The worker's answer is not a JSON object.")
        return answer

    async def open_stream(self, worker: Worker, body: dict[str, Any]) -> WorkerStream:
        """Send the request and wait for the answer's status: errors before the first byte raise."""
        request = self._http.build_request(
            "POST",
            worker.base_url.rstrip("/") + "/chat/completions",
            content=orjson.dumps(body),
            headers=await self._headers(worker, accept="text/event-stream"),
        )
        with _translate_transport_errors():
            response = await self._http.send(request, stream=True)
            if response.status_code != 200:
                try:
                    body_bytes = await response.aread()
                finally:
                    await response.aclose()
                raise _error_from(response, body_bytes)
        return WorkerStream(response)

    async def aclose(self) -> None:
        await self._http.aclose()
