"""The worker client: one HTTP call to one worker, over a pooled httpx.AsyncClient.

Every failure is translated here, at the boundary, into a `WorkerFailure`: the Anthropic error
a client should see, and whether another attempt (on this or another worker) may succeed.
Nothing above this module sees an httpx exception.
"""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from typing import Any, AsyncIterator, Iterator

import httpx
import orjson

from ..core.errors import (
    ApiError,
    GatewayTimeoutError,
    InvalidRequestError,
    OverloadedError,
    ParleyError,
    worker_error,
)
from .routes import Timeouts, Worker
from .secrets import SecretResolver

__all__ = ["WorkerClient", "WorkerFailure", "WorkerStream", "new_http_client"]

_MAX_ERROR_BODY = 64 * 1024
# A worker error the request itself caused: another worker would refuse it too.
_REQUEST_FAULTS = frozenset({400, 413, 422})
_SAFETY_MARGIN_SECONDS = 5.0


class WorkerFailure(Exception):
    """A worker call that failed: `error` is what the client sees if no attempt succeeds."""

    def __init__(self, error: ParleyError, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retryable = retryable
        self.retry_after = retry_after


def new_http_client(max_connections: int, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        follow_redirects=False,
        transport=transport,
    )


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 86400 else None


@contextmanager
def _translate_transport_errors() -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
            error: ParleyError = OverloadedError("The worker for this model could not be reached in time.")
        else:
            error = GatewayTimeoutError("The worker for this model did not answer in time.")
        raise WorkerFailure(error, retryable=True) from None
    except httpx.ConnectError:
        raise WorkerFailure(OverloadedError("The worker for this model could not be reached."), True) from None
    except httpx.TransportError:
        error = ApiError("The connection to the worker for this model failed.", should_retry=True)
        raise WorkerFailure(error, retryable=True) from None


def _failure_from(response: httpx.Response, body: bytes) -> WorkerFailure:
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = body[:_MAX_ERROR_BODY].decode("utf-8", "replace")
    retry_after = response.headers.get("retry-after")
    error = worker_error(response.status_code, parsed, retry_after=retry_after)
    return WorkerFailure(error, response.status_code not in _REQUEST_FAULTS, _retry_after(retry_after))


class WorkerStream:
    """An open streaming answer whose first bytes have arrived: iterate `chunks()`, then
    (always) `aclose()`."""

    def __init__(self, response: httpx.Response, first: bytes, raw: AsyncIterator[bytes], idle_seconds: float):
        self._response = response
        self._first = first
        self._raw = raw
        self.idle_seconds = idle_seconds

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive. The caller enforces `idle_seconds` (it waits for each
        chunk anyway, to send pings) and raises `idle_timeout()` when it passes."""
        if self._first:
            yield self._first
        try:
            with _translate_transport_errors():
                async for chunk in self._raw:
                    yield chunk
        except WorkerFailure as failure:
            raise failure.error from None

    def idle_timeout(self) -> GatewayTimeoutError:
        return GatewayTimeoutError(
            f"The worker sent nothing for {self.idle_seconds:g} seconds in the middle of its answer."
        )

    async def aclose(self) -> None:
        await self._response.aclose()


def _api_key_headers(worker: Worker, api_key: str) -> dict[str, str]:
    if worker.api == "openai":
        return {"authorization": f"Bearer {api_key}"}
    headers = {"x-api-key": api_key}
    if not httpx.URL(worker.base_url).host.endswith("anthropic.com"):
        # vLLM and Ollama check Authorization; Anthropic itself takes x-api-key only.
        headers["authorization"] = f"Bearer {api_key}"
    return headers


class WorkerClient:
    def __init__(self, http: httpx.AsyncClient, secrets: SecretResolver | None = None) -> None:
        self._http = http
        self._secrets = secrets or SecretResolver()

    async def _request(
        self,
        worker: Worker,
        url: str,
        body: dict[str, Any],
        accept: str,
        timeout: httpx.Timeout,
        headers: dict[str, str] | None = None,
    ) -> httpx.Request:
        all_headers = {"content-type": "application/json", "accept": accept, **(headers or {})}
        api_key = await self._secrets.resolve(worker.api_key_ref)
        if api_key:
            all_headers.update(_api_key_headers(worker, api_key))
        try:
            content = orjson.dumps(body)
        except TypeError as exc:  # orjson.JSONEncodeError: nesting too deep, an integer over 64 bits
            error = InvalidRequestError(f"The request could not be encoded for the worker: {exc}")
            raise WorkerFailure(error, retryable=False) from None
        return self._http.build_request("POST", url, content=content, headers=all_headers, timeout=timeout)

    async def complete(
        self,
        worker: Worker,
        path: str,
        body: dict[str, Any],
        timeouts: Timeouts,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A buffered call: the worker's JSON answer."""
        limit = httpx.Timeout(
            timeouts.buffered + _SAFETY_MARGIN_SECONDS, connect=timeouts.connect, pool=timeouts.connect
        )
        request = await self._request(worker, worker.url + path, body, "application/json", limit, headers)
        try:
            with _translate_transport_errors():
                response = await asyncio.wait_for(self._http.send(request), timeouts.buffered)
        except asyncio.TimeoutError:
            raise WorkerFailure(
                GatewayTimeoutError("The worker for this model did not answer in time."), True
            ) from None
        if response.status_code != 200:
            raise _failure_from(response, response.content)
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise WorkerFailure(ApiError("The worker's answer is not valid JSON."), True) from None
        if not isinstance(answer, dict):
            raise WorkerFailure(ApiError("The worker's answer is not a JSON object."), True)
        return answer

    async def open_stream(
        self,
        worker: Worker,
        path: str,
        body: dict[str, Any],
        timeouts: Timeouts,
        headers: dict[str, str] | None = None,
    ) -> WorkerStream:
        """Send a streamed request and wait for the answer's first bytes (`timeouts.first_byte`).
        Until they arrive, any failure may be retried elsewhere: nothing has reached the client."""
        limit = httpx.Timeout(
            max(timeouts.first_byte, timeouts.idle) + _SAFETY_MARGIN_SECONDS,
            connect=timeouts.connect,
            pool=timeouts.connect,
        )
        request = await self._request(worker, worker.url + path, body, "text/event-stream", limit, headers)
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout(timeouts.first_byte):
                with _translate_transport_errors():
                    response = await self._http.send(request, stream=True)
                    if response.status_code != 200:
                        raise _failure_from(response, await response.aread())
                    raw = response.aiter_raw()
                    first = await anext(raw, b"")
        except TimeoutError:
            if response is not None:
                await response.aclose()
            raise WorkerFailure(
                GatewayTimeoutError(f"The worker sent nothing within {timeouts.first_byte:g} seconds."), True
            ) from None
        except BaseException:
            if response is not None:
                await response.aclose()
            raise
        return WorkerStream(response, first, raw, timeouts.idle)

    async def tokenize(self, worker: Worker, body: dict[str, Any], timeouts: Timeouts) -> int | None:
        """The prompt's token count from vLLM's POST /tokenize, or None if it gave none."""
        limit = httpx.Timeout(timeouts.connect * 2, connect=timeouts.connect)
        try:
            url = worker.url.removesuffix("/v1") + "/tokenize"
            request = await self._request(worker, url, body, "application/json", limit)
            with _translate_transport_errors():
                response = await asyncio.wait_for(self._http.send(request), timeouts.connect * 2)
            count = orjson.loads(response.content).get("count") if response.status_code == 200 else None
        except (WorkerFailure, ParleyError, asyncio.TimeoutError, orjson.JSONDecodeError, AttributeError):
            return None
        return count if isinstance(count, int) and count >= 0 else None

    async def aclose(self) -> None:
        await self._http.aclose()
