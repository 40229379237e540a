"""The worker client: one HTTP call to one worker, over a pooled aiohttp.ClientSession.

aiohttp rather than httpx: at 16 concurrent requests to a loopback worker httpx spent 1.7 ms of
CPU per request (its pool scans every connection on each request) and aiohttp 0.13 ms; one at a
time, a round trip took 0.78 ms against 0.19 ms (same body, bench/worker.py on loopback).

Every failure is translated here, at the boundary, into a `WorkerFailure`: the Anthropic error
a client should see, and whether another attempt (on this or another worker) may succeed.
Nothing above this module sees an aiohttp exception.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import contextmanager
from typing import Any, AsyncIterator, Callable, Iterator
from urllib.parse import urlsplit

import aiohttp
import orjson

from ..core.errors import (
    ApiError,
    GatewayTimeoutError,
    InvalidRequestError,
    OverloadedError,
    ParleyError,
    retry_after_seconds,
    worker_error,
)
from ..core.tokens import worker_token_count
from .routes import Timeouts, Worker
from .secrets import SecretResolver

__all__ = ["WorkerClient", "WorkerFailure", "WorkerStream"]

_MAX_ERROR_BODY = 64 * 1024
# What an event stream's first line starts with (after a BOM and blank space): a field name.
_SSE_START = re.compile(rb"^(\xef\xbb\xbf)?\s*(data:|event:|id:|retry:|:)")
# vLLM's /tokenize answers these where it has none: the worker does not tokenize.
_NO_TOKENIZER = frozenset({404, 405, 501})
# A worker error the request itself caused: another worker would refuse it too.
_REQUEST_FAULTS = frozenset({400, 413, 422})
_SAFETY_MARGIN_SECONDS = 5.0
# An idle pooled connection is dropped before uvicorn (vLLM, SGLang) would close it (5 s), so a
# request is never sent on a connection the worker is closing.
_KEEPALIVE_SECONDS = 4.0


class WorkerFailure(Exception):
    """A worker call that failed: `error` is what the client sees if no attempt succeeds."""

    def __init__(self, error: ParleyError, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retryable = retryable
        self.retry_after = retry_after


@contextmanager
def _translate_transport_errors() -> Iterator[None]:
    try:
        yield
    except aiohttp.ConnectionTimeoutError:
        error: ParleyError = OverloadedError("The worker for this model could not be reached in time.")
        raise WorkerFailure(error, retryable=True) from None
    except (aiohttp.ServerTimeoutError, asyncio.TimeoutError):
        error = GatewayTimeoutError("The worker for this model did not answer in time.")
        raise WorkerFailure(error, retryable=True) from None
    except aiohttp.ClientConnectorError:
        raise WorkerFailure(OverloadedError("The worker for this model could not be reached."), True) from None
    except (aiohttp.ClientError, OSError):
        error = ApiError("The connection to the worker for this model failed.", should_retry=True)
        raise WorkerFailure(error, retryable=True) from None


def _failure_from(response: aiohttp.ClientResponse, body: bytes) -> WorkerFailure:
    """A worker's error answer (or a 200 that brought an error body instead of a stream)."""
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = body[:_MAX_ERROR_BODY].decode("utf-8", "replace")
    retry_after = retry_after_seconds(response.headers.get("retry-after"))  # read once, here
    error = worker_error(response.status, parsed, retry_after=retry_after, content_type=response.content_type)
    return WorkerFailure(error, error.status not in _REQUEST_FAULTS, retry_after)


def _is_event_stream(content_type: str, first: bytes) -> bool:
    """Whether an answer is an event stream: its content type says so, or (a server that labels
    its stream wrongly) its first bytes are an SSE field."""
    return content_type == "text/event-stream" or bool(_SSE_START.match(first))


async def _read_bounded(response: aiohttp.ClientResponse, first: bytes) -> bytes:
    """The rest of a body that is no stream, up to _MAX_ERROR_BODY bytes."""
    body = bytearray(first)
    while len(body) < _MAX_ERROR_BODY:
        chunk = await response.content.read(_MAX_ERROR_BODY - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


class WorkerStream:
    """An open streaming answer whose first bytes have arrived: iterate `chunks()`, then
    (always) `aclose()`."""

    def __init__(self, response: aiohttp.ClientResponse, first: bytes, idle_seconds: float):
        self._response = response
        self._first = first
        self.idle_seconds = idle_seconds

    def take_first(self) -> bytes:
        """The bytes that have arrived already (once; `chunks()` then yields only what follows)."""
        first, self._first = self._first, b""
        return first

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive. The caller enforces `idle_seconds` (it waits for each
        chunk anyway, to send pings) and raises `idle_timeout()` when it passes."""
        if self._first:
            yield self.take_first()
        content = self._response.content
        try:
            with _translate_transport_errors():
                try:
                    async for chunk in content.iter_any():
                        yield chunk
                except aiohttp.ClientPayloadError:
                    # aiohttp raises a lost connection's error before handing over the bytes that
                    # arrived with it (its public reads check the error first).
                    rest = content._read_nowait(-1)
                    if rest:
                        yield rest
                    raise
        except WorkerFailure as failure:
            raise failure.error from None

    def idle_timeout(self) -> GatewayTimeoutError:
        return GatewayTimeoutError(
            f"The worker sent nothing for {self.idle_seconds:g} seconds in the middle of its answer."
        )

    async def aclose(self) -> None:
        """Back to the pool if the whole body was read; otherwise the connection is closed, which
        tells the worker to stop generating."""
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


def _api_key_headers(worker: Worker, api_key: str) -> dict[str, str]:
    if worker.api == "openai":
        return {"authorization": f"Bearer {api_key}"}
    headers = {"x-api-key": api_key}
    if not (urlsplit(worker.base_url).hostname or "").endswith("anthropic.com"):
        # vLLM and Ollama check Authorization; Anthropic itself takes x-api-key only.
        headers["authorization"] = f"Bearer {api_key}"
    return headers


ConnectorFactory = Callable[[int], aiohttp.TCPConnector]


def connection_pool_options(max_connections: int) -> dict[str, Any]:
    return {"limit": max_connections, "keepalive_timeout": _KEEPALIVE_SECONDS}


def _connector(max_connections: int) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(**connection_pool_options(max_connections))


class WorkerClient:
    """Calls workers over one connection pool. The pool belongs to an event loop, so it is made
    on first use, inside the loop that uses it (and made again if a later call runs in another)."""

    def __init__(
        self,
        max_connections: int = 100,
        secrets: SecretResolver | None = None,
        connector: ConnectorFactory = _connector,
    ) -> None:
        self._max_connections = max_connections
        self._connector = connector
        self._secrets = secrets or SecretResolver()
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=self._connector(self._max_connections),
                auto_decompress=True,
                skip_auto_headers=("user-agent",),
            )
            self._loop = loop
        return self._session

    async def _headers(self, worker: Worker, accept: str, headers: dict[str, str] | None) -> dict[str, str]:
        # identity: a compressing worker would hold stream chunks back, and compression costs both
        # ends CPU on a private network.
        all_headers = {"content-type": "application/json", "accept": accept, "accept-encoding": "identity"}
        if headers:
            all_headers.update(headers)
        api_key = await self._secrets.resolve(worker.api_key_ref)
        if api_key:
            all_headers.update(_api_key_headers(worker, api_key))
        return all_headers

    @staticmethod
    def _encode(body: dict[str, Any]) -> bytes:
        try:
            return orjson.dumps(body)
        except TypeError as exc:  # orjson.JSONEncodeError: nesting too deep, an integer over 64 bits
            error = InvalidRequestError(f"The request could not be encoded for the worker: {exc}")
            raise WorkerFailure(error, retryable=False) from None

    async def _post(
        self, url: str, content: bytes, headers: dict[str, str], timeout: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        return await self._http().post(url, data=content, headers=headers, timeout=timeout, allow_redirects=False)

    async def complete(
        self,
        worker: Worker,
        path: str,
        body: dict[str, Any],
        timeouts: Timeouts,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A buffered call: the worker's JSON answer."""
        content = self._encode(body)
        all_headers = await self._headers(worker, "application/json", headers)
        limit = aiohttp.ClientTimeout(
            total=timeouts.buffered + _SAFETY_MARGIN_SECONDS, connect=timeouts.connect, sock_connect=timeouts.connect
        )
        try:
            async with asyncio.timeout(timeouts.buffered):
                with _translate_transport_errors():
                    async with await self._post(worker.url_for(path), content, all_headers, limit) as response:
                        status, answer_body = response.status, await response.read()
                        if status != 200:
                            raise _failure_from(response, answer_body)
        except TimeoutError:
            raise WorkerFailure(
                GatewayTimeoutError("The worker for this model did not answer in time."), True
            ) from None
        try:
            answer = orjson.loads(answer_body)
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
        content = self._encode(body)
        all_headers = await self._headers(worker, "text/event-stream", headers)
        # No read timeout: the caller enforces the idle timeout between chunks (and sends pings).
        limit = aiohttp.ClientTimeout(total=None, connect=timeouts.connect, sock_connect=timeouts.connect)
        response: aiohttp.ClientResponse | None = None
        try:
            async with asyncio.timeout(timeouts.first_byte):
                with _translate_transport_errors():
                    response = await self._post(worker.url_for(path), content, all_headers, limit)
                    if response.status != 200:
                        raise _failure_from(response, await response.read())
                    first = await response.content.readany()
                    if not _is_event_stream(response.content_type, first):
                        # A model still loading, a proxy's page: its error, not a broken stream.
                        raise _failure_from(response, await _read_bounded(response, first))
        except TimeoutError:
            if response is not None:
                response.close()
            raise WorkerFailure(
                GatewayTimeoutError(f"The worker sent nothing within {timeouts.first_byte:g} seconds."), True
            ) from None
        except BaseException:
            if response is not None:
                response.close()
            raise
        return WorkerStream(response, first, timeouts.idle)

    async def tokenize(self, worker: Worker, body: dict[str, Any], timeouts: Timeouts) -> int | None:
        """The prompt's token count from vLLM's POST /tokenize, or None if this worker has no
        tokenizer there (404, 405, 501, or an answer without a count). Any other failure
        (unreachable, timeout, 5xx, a refusal of this prompt) raises WorkerFailure: it says
        nothing about whether the worker tokenizes."""
        limit = aiohttp.ClientTimeout(total=timeouts.connect * 2, connect=timeouts.connect)
        content = self._encode(body)
        all_headers = await self._headers(worker, "application/json", None)
        with _translate_transport_errors():
            async with await self._post(worker.url_for("/tokenize"), content, all_headers, limit) as response:
                status, answer_body = response.status, await response.read()
                if status != 200 and status not in _NO_TOKENIZER:
                    raise _failure_from(response, answer_body)
        if status != 200:
            return None
        try:
            answer = orjson.loads(answer_body)
        except orjson.JSONDecodeError:
            return None
        return worker_token_count(answer.get("count")) if isinstance(answer, dict) else None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
