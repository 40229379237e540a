"""Parley's app as the streaming function serves it, plus a DynamoDB call counter for the benchmark.

`uvicorn bench.instrumented:app` serves `parley.web.app:app` unchanged, except that its DynamoDB
client counts every call it makes, split by whether a response was still open when the call
started (so the client was, or could be, waiting for it: the critical path) or not (background).
GET /_bench/dynamodb returns the counts since the last call and resets them. A call belongs to
the request whose context it runs in (contextvars follow Parley's threads and background tasks),
so work a request leaves behind is never counted against the next one.
"""

from __future__ import annotations

import threading
from collections import Counter
from contextvars import ContextVar
from typing import Any

import orjson

from parley.settings import Settings
from parley.web.app import app as parley_app
from parley.web.services import Services

__all__ = ["app"]

_READS = {"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems", "DescribeTable"}

_lock = threading.Lock()
_response_open: ContextVar[list[bool] | None] = ContextVar("response_open", default=None)
_calls: Counter[tuple[str, str]] = Counter()


def _count(model: Any, **_: Any) -> None:
    state = _response_open.get()
    where = "critical" if state is not None and state[0] else "background"
    with _lock:
        _calls[(where, model.name)] += 1


def _services() -> Services:
    import boto3

    dynamodb = boto3.client("dynamodb")
    dynamodb.meta.events.register("before-call.dynamodb", _count)
    return Services.build(Settings.from_environment(), dynamodb)


parley_app.state.services_factory = _services


def _report() -> bytes:
    with _lock:
        calls = dict(_calls)
        _calls.clear()
    report: dict[str, Any] = {}
    for (where, operation), count in calls.items():
        kind = "reads" if operation in _READS else "writes"
        entry = report.setdefault(where, {"reads": 0, "writes": 0, "operations": {}})
        entry[kind] += count
        entry["operations"][operation] = entry["operations"].get(operation, 0) + count
    return orjson.dumps(report)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] == "/_bench/dynamodb":
        body = _report()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["type"] != "http":
        await parley_app(scope, receive, send)
        return
    state = [True]  # this request's response is still open
    _response_open.set(state)

    async def counting_send(message: dict[str, Any]) -> None:
        await send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            state[0] = False

    try:
        await parley_app(scope, receive, counting_send)
    finally:
        state[0] = False
