"""A fast fake OpenAI worker for the benchmark: raw asyncio, HTTP/1.1 keep-alive, no framework.

The path picks the behaviour, so the same Chat Completions body can be sent to it directly and
through Parley (whose routes point at `http://host:port/<mode>/v1`):

- `/instant/v1/chat/completions`: a small buffered answer at once (or a 3-chunk stream).
- `/paced/v1/chat/completions`: a stream of PACED_CHUNKS chunks, one every PACE_SECONDS, the first
  after PACE_SECONDS too (a model's time to first token).
- `/long/v1/chat/completions`: a stream of LONG_CHUNKS chunks, written as fast as the socket takes them.

It never parses the request body (its cost must not depend on the payload) and answers every
request the same way, so that it is never the bottleneck.

    python -m bench.worker PORT
"""

from __future__ import annotations

import asyncio
import socket
import sys

__all__ = ["LONG_CHUNKS", "PACED_CHUNKS", "PACE_SECONDS", "serve"]

PACE_SECONDS = 0.020
PACED_CHUNKS = 10
LONG_CHUNKS = 500

_ANSWER = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}'
)
_BUFFERED_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(_ANSWER)
_STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def _chunk(payload: bytes) -> bytes:
    """One SSE event as one HTTP chunk."""
    event = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def _delta(index: int) -> bytes:
    return _chunk(
        b'{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench",'
        b'"choices":[{"index":0,"delta":{%s"content":"tok%d "},"finish_reason":null}]}'
        % (b'"role":"assistant",' if index == 0 else b"", index)
    )


def _tail(tokens: int) -> bytes:
    return (
        _chunk(
            b'{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench",'
            b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'
        )
        + _chunk(
            b'{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench",'
            b'"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":%d,"total_tokens":%d}}'
            % (tokens, tokens + 12)
        )
        + _chunk(b"[DONE]")
        + b"0\r\n\r\n"
    )


_DELTAS = [_delta(index) for index in range(LONG_CHUNKS)]


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = bytes(self.buffer[:head_end]).lower()
            start = head.find(b"content-length:")
            end = head.find(b"\r\n", start)
            length = int(head[start + 15 : end if end >= 0 else len(head)]) if start >= 0 else 0
            if len(self.buffer) < head_end + 4 + length:
                return
            del self.buffer[: head_end + 4 + length]
            path = head[head.find(b" ") + 1 : head.find(b" http/")]
            streaming = b"text/event-stream" in head
            if path.startswith(b"/paced/"):
                self.busy = True
                asyncio.ensure_future(self._stream(PACED_CHUNKS, PACE_SECONDS))
                return
            if path.startswith(b"/long/"):
                self.busy = True
                asyncio.ensure_future(self._stream(LONG_CHUNKS, 0.0))
                return
            assert self.transport is not None
            if streaming:
                self.transport.write(_STREAM_HEAD + b"".join(_DELTAS[:3]) + _tail(3))
            else:
                self.transport.write(_BUFFERED_HEAD + _ANSWER)

    async def _stream(self, chunks: int, pace: float) -> None:
        transport = self.transport
        assert transport is not None
        transport.write(_STREAM_HEAD)
        for index in range(chunks):
            await asyncio.sleep(pace)
            if transport.is_closing():
                return
            transport.write(_DELTAS[index])
        transport.write(_tail(chunks))
        self.busy = False
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Protocol, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
