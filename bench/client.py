"""A minimal blocking HTTP/1.1 keep-alive client that times a response's first marker and its end.

Deliberately tiny and the same for the direct and the Parley calls, so that what differs
between the two is the gateway. Understands Content-Length and chunked bodies only.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

__all__ = ["Connection", "Timing"]


@dataclass(frozen=True, slots=True)
class Timing:
    status: int
    body: bytes
    marker_seconds: float | None  # from the request's first byte sent to the marker's arrival
    total_seconds: float  # to the body's last byte


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self._sock = socket.create_connection((host, port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._host = f"{host}:{port}".encode()
        self._buf = bytearray()

    def close(self) -> None:
        self._sock.close()

    def _fill(self) -> None:
        data = self._sock.recv(262144)
        if not data:
            raise ConnectionError("server closed the connection")
        self._buf += data

    def _line(self) -> bytes:
        while (end := self._buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def post(self, path: str, body: bytes, headers: dict[str, str], marker: bytes | None = None) -> Timing:
        head = b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-length: %d\r\n" % (path.encode(), self._host, len(body))
        head += b"".join(b"%s: %s\r\n" % (name.encode(), value.encode()) for name, value in headers.items())
        started = time.perf_counter()
        self._sock.sendall(head + b"\r\n" + body)
        status = int(self._line().split(b" ", 2)[1])
        length, chunked = None, False
        while line := self._line():
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        marker_at = None
        if not chunked:
            data = self._exactly(length or 0)
            ended = time.perf_counter()
            if marker is not None and marker in data:
                marker_at = ended
            return Timing(status, data, None if marker_at is None else marker_at - started, ended - started)
        parts: list[bytes] = []
        while True:
            size = int(self._line().split(b";")[0], 16)
            if size == 0:
                while self._line():  # trailers, then the blank line
                    pass
                break
            part = self._exactly(size)
            self._exactly(2)
            if marker_at is None and marker is not None and marker in part:
                marker_at = time.perf_counter()
            parts.append(part)
        ended = time.perf_counter()
        return Timing(status, b"".join(parts), None if marker_at is None else marker_at - started, ended - started)
