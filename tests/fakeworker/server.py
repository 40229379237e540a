"""A raw asyncio HTTP/1.1 server posing as an OpenAI-compatible worker, run in a daemon thread."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from http import HTTPStatus
from typing import Any, Callable, Union

from .anthropic import render_anthropic_buffered, render_anthropic_stream
from .retrieval import DEFAULT_DIMENSIONS, embeddings_answer, rerank_answer
from .scripts import (
    DONE_EVENT,
    SCRIPT_TYPES,
    Answer,
    Drop,
    Garbage,
    Gate,
    Hang,
    RawAnswer,
    Script,
    Stall,
    StreamError,
    WorkerError,
    is_streaming,
    render_buffered,
    render_stream,
    render_stream_error,
    response_headers,
)

CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"
TOKENIZE_PATH = "/tokenize"
MODELS_PATH = "/v1/models"
EMBEDDINGS_PATH = "/v1/embeddings"
RERANK_PATH = "/v1/rerank"
RETRIEVAL_PATHS = (EMBEDDINGS_PATH, RERANK_PATH)
MAX_HEAD_BYTES = 64 * 1024

# What a test may enqueue for /v1/embeddings or /v1/rerank instead of the computed answer: a
# WorkerError (its status and body), a RawAnswer (byte for byte), or a dict or str sent as a 200's body.
RetrievalScript = Union[WorkerError, RawAnswer, dict, str]


class _BadRequest(Exception):
    pass


class _Connection:
    """Buffered reads over a StreamReader, so a watcher can read ahead without losing bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()

    async def _fill(self) -> bool:
        data = await self.reader.read(65536)
        self.buf += data
        return bool(data)

    async def read_until(self, separator: bytes, limit: int = MAX_HEAD_BYTES) -> bytes | None:
        while (end := self.buf.find(separator)) < 0:
            if len(self.buf) > limit:
                raise _BadRequest("request head too large")
            if not await self._fill():
                if self.buf:
                    raise asyncio.IncompleteReadError(bytes(self.buf), None)
                return None
        data = bytes(self.buf[:end])
        del self.buf[: end + len(separator)]
        return data

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not await self._fill():
                raise asyncio.IncompleteReadError(bytes(self.buf), n)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def wait_eof(self) -> None:
        while await self._fill():
            pass

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


def _renderers(request: dict[str, Any]) -> tuple[Any, Any]:
    if request.get("anthropic"):
        return render_anthropic_stream, render_anthropic_buffered
    return render_stream, render_buffered


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _head(status: int, headers: list[tuple[str, str]], close: bool) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if close:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _error_body(message: str, kind: str, code: int) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


# What vLLM answers when the chat template raises (Mistral's and Gemma's, on a system message
# that is not first): the same 400 for /v1/chat/completions, streamed or not, and for /tokenize.
TEMPLATE_REFUSAL = "Conversation roles must alternate user/assistant/user/assistant/..."


def _refused_by_strict_template(prompt: Any) -> bool:
    messages = prompt.get("messages") if isinstance(prompt, dict) else None
    roles = [message.get("role") for message in messages or () if isinstance(message, dict)]
    return "system" in roles[1:]


def _prompt_token_count(prompt: Any) -> int:
    parts = [prompt.get("messages"), prompt.get("tools")] if isinstance(prompt, dict) else [prompt]
    return max(1, len(json.dumps(parts).encode()) // 3)


class FakeWorker:
    """A scriptable fake vLLM / Ollama / llama.cpp / SGLang worker on 127.0.0.1.

    Each POST /v1/chat/completions (or POST /v1/messages, answered in Anthropic's shape) takes the
    next enqueued script; when the queue is empty, what ``responder`` makes of the request's body,
    else ``Answer(text="ok")``. POST /tokenize answers
    ``token_count``, or when it is None a count of its own from the prompt's size (a third of its
    bytes: not Parley's estimate, so a test can tell the two apart). Every request is recorded in
    ``requests``; ``disconnects`` counts connections the client closed before the response was
    complete. ``strict_template``: its chat template refuses a system message that is not first,
    as vLLM does with Mistral's or Gemma's (a 400 for both paths, no script taken).

    POST /v1/embeddings and POST /v1/rerank answer deterministically (tests/fakeworker/retrieval.py:
    hashed bags of words of ``embedding_dimensions``, a rerank by word overlap) unless a script was
    enqueued for them (``enqueue_embeddings``, ``enqueue_rerank``). They are recorded apart, in
    ``retrieval_requests``, so ``requests`` stays the log of chat requests that tests count.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, model: str = "fake-model") -> None:
        self.host = host
        self.model = model
        self.token_count: int | None = None
        self.strict_template = False
        self.embedding_dimensions = DEFAULT_DIMENSIONS
        # What a chat request gets when no script is enqueued: responder(its parsed body) → a
        # script, or None for the default. Called on the worker's thread, once per request.
        self.responder: Callable[[Any], Script | None] | None = None
        self._cond = threading.Condition()
        self._queue: deque[Script] = deque()
        self._requests: list[dict[str, Any]] = []
        self._retrieval_requests: list[dict[str, Any]] = []
        self._retrieval_scripts: dict[str, deque[RetrievalScript]] = {path: deque() for path in RETRIEVAL_PATHS}
        self._disconnects = 0
        self._connections = 0
        self._tasks: set[asyncio.Task] = set()
        self._server: asyncio.AbstractServer | None = None
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fakeworker", daemon=True)
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(port), self._loop).result(timeout=10)
        self.base_url = f"http://{host}:{self.port}/v1"

    def __enter__(self) -> FakeWorker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FakeWorker({self.base_url!r}, pending={self.pending})"

    def enqueue(self, *scripts: Script) -> None:
        for script in scripts:
            if not isinstance(script, SCRIPT_TYPES):
                raise TypeError(f"not a worker script: {script!r}")
        with self._cond:
            self._queue.extend(scripts)

    def enqueue_embeddings(self, *scripts: RetrievalScript) -> None:
        """What the next POST /v1/embeddings requests get, one each, instead of the computed answer."""
        self._enqueue_retrieval(EMBEDDINGS_PATH, scripts)

    def enqueue_rerank(self, *scripts: RetrievalScript) -> None:
        """What the next POST /v1/rerank requests get, one each, instead of the computed answer."""
        self._enqueue_retrieval(RERANK_PATH, scripts)

    def _enqueue_retrieval(self, path: str, scripts: tuple[RetrievalScript, ...]) -> None:
        for script in scripts:
            if not isinstance(script, (WorkerError, RawAnswer, dict, str)):
                raise TypeError(f"not an embeddings or rerank script: {script!r}")
        with self._cond:
            self._retrieval_scripts[path].extend(scripts)

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._requests)

    @property
    def retrieval_requests(self) -> list[dict[str, Any]]:
        """The POST /v1/embeddings and /v1/rerank requests (not in ``requests``)."""
        with self._cond:
            return list(self._retrieval_requests)

    @property
    def disconnects(self) -> int:
        with self._cond:
            return self._disconnects

    @property
    def connections(self) -> int:
        """Connections accepted since the last reset."""
        with self._cond:
            return self._connections

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def wait_for_requests(self, count: int = 1, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self._requests) >= count, timeout)

    def wait_for_disconnects(self, count: int = 1, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._disconnects >= count, timeout)

    def reset(self) -> None:
        with self._cond:
            self._queue.clear()
            self._requests.clear()
            self._retrieval_requests.clear()
            for scripts in self._retrieval_scripts.values():
                scripts.clear()
            self._disconnects = 0
            self._connections = 0
            self.token_count = None
            self.strict_template = False
            self.embedding_dimensions = DEFAULT_DIMENSIONS
            self.responder = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self._loop.close()

    async def _start(self, port: int) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, port)
        return self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _next_script(self, body: Any = None) -> Script:
        with self._cond:
            responder = self.responder
            if self._queue:
                return self._queue.popleft()
        if responder is not None:
            script = responder(body)
            if script is not None:
                return script
        return Answer(text="ok")

    def _record(self, request: dict[str, Any]) -> None:
        retrieval = request["method"] == "POST" and request["path"].split("?", 1)[0] in RETRIEVAL_PATHS
        with self._cond:
            (self._retrieval_requests if retrieval else self._requests).append(request)
            self._cond.notify_all()

    def _next_retrieval_script(self, path: str) -> RetrievalScript | None:
        with self._cond:
            scripts = self._retrieval_scripts[path]
            return scripts.popleft() if scripts else None

    def _count_disconnect(self) -> None:
        with self._cond:
            self._disconnects += 1
            self._cond.notify_all()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._cond:
            self._connections += 1
        conn = _Connection(reader, writer)
        try:
            while True:
                try:
                    request = await self._read_request(conn)
                except _BadRequest as exc:
                    body = _error_body(str(exc), "BadRequestError", 400)
                    await conn.send(
                        _head(400, [("content-type", "application/json"), ("content-length", str(len(body)))], True)
                        + body
                    )
                    break
                if request is None:
                    break
                self._record({key: request[key] for key in ("method", "path", "headers", "body")})
                if not await self._respond(conn, request):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            conn.close()

    async def _read_request(self, conn: _Connection) -> dict[str, Any] | None:
        head = await conn.read_until(b"\r\n\r\n")
        if head is None:
            return None
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(f"malformed request line: {request_line!r}")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest(f"malformed header line: {line!r}")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if headers.get("expect", "").lower() == "100-continue":
            await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raw = await self._read_chunked(conn)
        else:
            raw = await conn.read_exactly(int(headers.get("content-length", "0") or 0))
        text = raw.decode("utf-8", "replace")
        try:
            body: Any = json.loads(text) if text else ""
        except ValueError:
            body = text
        connection = headers.get("connection", "").lower()
        keep_alive = version == "HTTP/1.1" and "close" not in connection
        return {"method": method, "path": target, "headers": headers, "body": body, "keep_alive": keep_alive}

    async def _read_chunked(self, conn: _Connection) -> bytes:
        body = bytearray()
        while True:
            size_line = await conn.read_until(b"\r\n")
            if size_line is None:
                raise asyncio.IncompleteReadError(bytes(body), None)
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise _BadRequest(f"malformed chunk size: {size_line!r}") from None
            if size == 0:
                while await conn.read_until(b"\r\n"):
                    pass
                return bytes(body)
            body += await conn.read_exactly(size)
            await conn.read_exactly(2)

    async def _respond(self, conn: _Connection, request: dict[str, Any]) -> bool:
        path = request["path"].split("?", 1)[0]
        close = not request["keep_alive"]
        if path in (CHAT_PATH, TOKENIZE_PATH) and self.strict_template and _refused_by_strict_template(request["body"]):
            body = _error_body(TEMPLATE_REFUSAL, "BadRequestError", 400)
            await conn.send(
                _head(400, [("content-type", "application/json"), ("content-length", str(len(body)))], close) + body
            )
            return not close
        if request["method"] == "POST" and path in (CHAT_PATH, MESSAGES_PATH):
            request["anthropic"] = path == MESSAGES_PATH
            return await self._serve_script(conn, request, self._next_script(request["body"]))
        if request["method"] == "POST" and path in RETRIEVAL_PATHS:
            return await self._serve_retrieval(conn, request, path)
        if request["method"] == "POST" and path == TOKENIZE_PATH:
            count = self.token_count if self.token_count is not None else _prompt_token_count(request["body"])
            body = json.dumps({"count": count, "max_model_len": 32768, "tokens": []}).encode()
            headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
            await conn.send(_head(200, headers, close) + body)
            return not close
        if request["method"] == "GET" and path == MODELS_PATH:
            body = json.dumps(
                {
                    "object": "list",
                    "data": [
                        {"id": self.model, "object": "model", "created": int(time.time()), "owned_by": "fakeworker"}
                    ],
                }
            ).encode()
            status = 200
        else:
            body = _error_body(f"Not found: {request['method']} {path}", "NotFoundError", 404)
            status = 404
        headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
        await conn.send(_head(status, headers, close) + body)
        return not close

    async def _serve_retrieval(self, conn: _Connection, request: dict[str, Any], path: str) -> bool:
        close = not request["keep_alive"]
        script = self._next_retrieval_script(path)
        if isinstance(script, RawAnswer):
            for data in script.wire():
                await conn.send(data)
            return False
        if isinstance(script, WorkerError):
            await self._send_error(conn, script, close)
            return not close
        if script is None:
            if path == EMBEDDINGS_PATH:
                status, answer = embeddings_answer(request["body"], self.model, self.embedding_dimensions)
            else:
                status, answer = rerank_answer(request["body"], self.model)
            body = json.dumps(answer).encode()
        else:
            status, body = 200, (script if isinstance(script, str) else json.dumps(script)).encode()
        headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
        await conn.send(_head(status, headers, close) + body)
        return not close

    async def _serve_script(self, conn: _Connection, request: dict[str, Any], script: Script) -> bool:
        watcher = asyncio.ensure_future(conn.wait_eof())
        sender = asyncio.ensure_future(self._play(conn, request, script))
        try:
            await asyncio.wait({watcher, sender}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not sender.done():
                sender.cancel()
            watcher.cancel()
            await asyncio.gather(watcher, sender, return_exceptions=True)
        if sender.cancelled() or isinstance(sender.exception(), ConnectionError):
            self._count_disconnect()
            return False
        return sender.result() and request["keep_alive"]

    async def _play(self, conn: _Connection, request: dict[str, Any], script: Script) -> bool:
        """Send the scripted response; the result says whether the connection may be reused."""
        close = not request["keep_alive"]
        body = request["body"]
        render_stream, render_buffered = _renderers(request)
        if isinstance(script, RawAnswer):
            for data in script.wire():
                await conn.send(data)
            return False
        if isinstance(script, Hang):
            await asyncio.sleep(script.seconds)
            return script.then is not None and await self._play(conn, request, script.then)
        if isinstance(script, Gate):
            released = await asyncio.to_thread(script.release.wait, script.safety_net_seconds)
            if not released:
                raise ConnectionError("the gate was never released")
            return await self._play(conn, request, script.then)
        if isinstance(script, WorkerError):
            await self._send_error(conn, script, close)
            return True
        if isinstance(script, Answer):
            if is_streaming(body):
                await self._send_stream(conn, script, render_stream(script, body), close)
            else:
                await self._send_buffered(conn, script, render_buffered(script, body), close)
            return True
        if isinstance(script, Drop):
            return await self._play_drop(conn, script, request)
        if isinstance(script, Stall):
            events = render_stream(script.answer, body)
            await self._send_stream(conn, script.answer, events, close, stall=(script.after_events, script.seconds))
            return True
        if isinstance(script, Garbage):
            if not is_streaming(body):
                await self._send_buffered(conn, script.answer, script.line.encode(), close)
                return True
            events = render_stream(script.answer, body)
            line = script.line if script.line.endswith("\n") else script.line + "\n\n"
            events.insert(min(script.at_event, len(events)), line.encode())
            await self._send_stream(conn, script.answer, events, close)
            return True
        if isinstance(script, StreamError):
            if not is_streaming(body):
                error = script.error.get("error", script.error)
                code = error.get("code") if isinstance(error, dict) else None
                status = code if isinstance(code, int) and 400 <= code < 600 else 500
                await self._send_error(conn, WorkerError(status, {"error": error}), close)
                return True
            events = [event for event in render_stream(script.answer, body) if event != DONE_EVENT]
            events = events[: script.after_events]
            events += [render_stream_error(script.answer.flavour, script.error), DONE_EVENT]
            await self._send_stream(conn, script.answer, events, close)
            return True
        raise TypeError(f"not a worker script: {script!r}")

    async def _play_drop(self, conn: _Connection, script: Drop, request: dict[str, Any]) -> bool:
        body = request["body"]
        render_stream, render_buffered = _renderers(request)
        if is_streaming(body):
            events = render_stream(script.answer, body)[: script.after_events]
            await self._send_stream(conn, script.answer, events, close=False, terminate=False)
        elif script.after_events > 0:
            payload = render_buffered(script.answer, body)
            headers = response_headers(script.answer.flavour, streaming=False)
            headers.append(("content-length", str(len(payload))))
            await conn.send(_head(200, headers, False) + payload[: len(payload) // 2])
        return False

    async def _send_error(self, conn: _Connection, error: WorkerError, close: bool) -> None:
        if isinstance(error.body, str):
            payload = error.body.encode()
            try:
                json.loads(error.body)
                kind = "application/json"
            except ValueError:
                kind = "text/plain; charset=utf-8"
        else:
            payload = json.dumps(error.body).encode()
            kind = "application/json"
        headers = [("content-type", kind), ("content-length", str(len(payload)))]
        headers += list((error.headers or {}).items())
        await conn.send(_head(error.status, headers, close) + payload)

    async def _send_buffered(self, conn: _Connection, answer: Answer, payload: bytes, close: bool) -> None:
        if answer.chunk_delay:
            await asyncio.sleep(answer.chunk_delay)
        headers = response_headers(answer.flavour, streaming=False)
        headers.append(("content-length", str(len(payload))))
        await conn.send(_head(200, headers, close) + payload)

    async def _send_stream(
        self,
        conn: _Connection,
        answer: Answer,
        events: list[bytes],
        close: bool,
        terminate: bool = True,
        stall: tuple[int, float] | None = None,
    ) -> None:
        headers = response_headers(answer.flavour, streaming=True)
        headers.append(("transfer-encoding", "chunked"))
        await conn.send(_head(200, headers, close))
        size = answer.split_bytes
        pending = b""
        for i, event in enumerate(events):
            if stall is not None and i == stall[0]:
                await asyncio.sleep(stall[1])
            if i and answer.chunk_delay:
                await asyncio.sleep(answer.chunk_delay)
            if size is None:
                await conn.send(_chunk(event))
                continue
            pending += event
            while len(pending) >= size:
                await conn.send(_chunk(pending[:size]))
                pending = pending[size:]
        if pending:
            await conn.send(_chunk(pending))
        if terminate:
            await conn.send(b"0\r\n\r\n")
