"""Shared helpers: request builders, a raw SSE reader, the stream grammar check, error envelopes."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx

from tests.anthropic_stream import StreamResult, assert_well_formed
from tests.fakeworker import FakeWorker, Script

MODEL = "test-model"
ALIAS = "claude-sonnet-4-6"  # answered by MODEL's route through its "claude-*" alias
WORKER_MODEL = "fake-model"
DOWN_MODEL = "down-model"  # routed to a port nobody listens on
MAX_OUTPUT_TOKENS = 4096
PING_SECONDS = 0.3
MAX_BODY_BYTES = 256 * 1024

HELLO = [{"role": "user", "content": "Hello"}]
FLAVOURS = ("vllm", "ollama", "llamacpp", "sglang")
THINKING_MODES = ({"type": "enabled", "budget_tokens": 1024}, {"type": "adaptive"})

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"],
    },
}
TIME_TOOL = {
    "name": "get_time",
    "description": "Local time in a timezone",
    "input_schema": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]},
}


def pdf_of(objects: list[bytes]) -> bytes:
    """A PDF file of these objects (numbered from 1; the first is the catalog), with its xref table."""
    pdf, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(pdf))
        pdf += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(pdf)
    pdf += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    pdf += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    pdf += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(pdf)


def request(**overrides: Any) -> dict[str, Any]:
    """A minimal valid Messages request, with overrides."""
    return {"model": MODEL, "max_tokens": 256, "messages": HELLO, **overrides}


# -- what the worker saw ---------------------------------------------------------------------


def last_worker_body(worker: FakeWorker) -> dict[str, Any]:
    assert worker.requests, "the worker received no request"
    body = worker.requests[-1]["body"]
    assert isinstance(body, dict), f"the worker received a non-JSON body: {body!r}"
    return body


# -- the official SDK, both ways -------------------------------------------------------------


def sdk_stream_final(client: anthropic.Anthropic, **params: Any) -> anthropic.types.Message:
    with client.messages.stream(**params) as stream:
        return stream.get_final_message()


def buffered_and_streamed(
    client: anthropic.Anthropic, worker: FakeWorker, script: Script, **params: Any
) -> tuple[anthropic.types.Message, anthropic.types.Message]:
    """The same scripted answer asked for with `messages.create` and with `messages.stream`."""
    worker.enqueue(script, script)
    buffered = client.messages.create(**params)
    streamed = sdk_stream_final(client, **params)
    return buffered, streamed


def without_id(message: anthropic.types.Message) -> dict[str, Any]:
    return message.model_dump(exclude={"id"})


# -- raw SSE -----------------------------------------------------------------------------------


@dataclass
class SSE:
    event: str | None
    data: str

    def json(self) -> dict[str, Any]:
        return json.loads(self.data)


@dataclass
class RawStream:
    response: httpx.Response
    sse: list[SSE]

    @property
    def events(self) -> list[tuple[str, dict[str, Any]]]:
        return [(item.event or "", item.json()) for item in self.sse]

    @property
    def names(self) -> list[str]:
        return [item.event or "" for item in self.sse]


def parse_sse(body: bytes) -> list[SSE]:
    """Events exactly as a spec-following SSE reader sees them (LF, CRLF or CR line ends)."""
    text = body.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    events: list[SSE] = []
    for block in text.split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].removeprefix(" ")
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if name is not None or data:
            events.append(SSE(name, "\n".join(data)))
    return events


def post_stream(
    http: httpx.Client, body: dict[str, Any], path: str = "/v1/messages", headers: dict[str, str] | None = None
) -> RawStream:
    response = http.post(path, json={**body, "stream": True}, headers=headers)
    return RawStream(response, parse_sse(response.content))


# -- the stream grammar ------------------------------------------------------------------------


def stream_raw(
    http: httpx.Client,
    worker: FakeWorker,
    script: Script | None,
    expect_error: bool = False,
    path: str = "/v1/messages",
    headers: dict[str, str] | None = None,
    **params: Any,
) -> tuple[RawStream, StreamResult]:
    """Enqueue `script` (None: the worker's default "ok"), stream `request(**params)` over raw HTTP,
    and check the stream's grammar."""
    if script is not None:
        worker.enqueue(script)
    raw = post_stream(http, request(**params), path, headers)
    assert raw.response.status_code == 200, raw.response.text
    assert raw.response.headers["content-type"].startswith("text/event-stream")
    return raw, assert_well_formed(raw.events, expect_error=expect_error)


# -- errors ------------------------------------------------------------------------------------


def assert_error(response: Any, status: int, error_type: str) -> str:
    """Anthropic's error envelope with this status and type; returns the message.

    `response` is an httpx response (raw client) or the SDK's (an APIStatusError's .response).
    """
    assert response.status_code == status, f"status {response.status_code}, expected {status}: {response.text}"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"type", "error", "request_id"}, f"envelope keys {sorted(body)}"
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}, f"error keys {sorted(body['error'])}"
    assert body["error"]["type"] == error_type, f"error type {body['error']['type']!r}, expected {error_type!r}"
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    assert body["request_id"] == response.headers["request-id"] == response.headers["x-request-id"]
    assert response.headers["x-should-retry"] in ("true", "false")
    return message


def wait_for_record(parley: Any, request_id: str, safety_net_seconds: float = 30.0) -> dict[str, Any]:
    """The request's usage record, once the request has ended on the server (an abandoned stream
    ends when the server notices) and the metering loop has metered it."""
    deadline = time.monotonic() + safety_net_seconds
    while True:
        assert parley.services.metered(), "the metering loop did not catch up"
        record = parley.services.usage.record_of(request_id)
        if record is not None:
            return record
        assert time.monotonic() < deadline, f"no usage record for {request_id}: its usage was lost"
        time.sleep(0.05)


def as_int(value: Any) -> int:
    return int(float(value))
