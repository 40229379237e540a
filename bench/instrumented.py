"""Parley's app as the streaming function serves it, plus a DynamoDB call counter for the benchmark.

`uvicorn bench.instrumented:app` serves `parley.web.app:app` unchanged, except that its DynamoDB
client counts every call it makes, split by whether a response was still open when the call
started (so the client was, or could be, waiting for it: the critical path) or not (background).
GET /_bench/dynamodb returns the counts since the last call and resets them. Sequential requests
only: with several in flight, "a response was open" is not "this request's response was open".
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import orjson

from parley.settings import Settings
from parley.web.app import app as parley_app
from parley.web.services import Services

__all__ = ["app"]

_READS = {"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems", "DescribeTable"}

_lock = threading.Lock()
_open_responses = 0
_calls: Counter[tuple[str, str]] = Counter()


def _count(model: Any, **_: Any) -> None:
    where = "critical" if _open_responses else "background"
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
    global _open_responses
    if scope["type"] == "http" and scope["path"] == "/_bench/dynamodb":
        body = _report()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["type"] != "http":
        await parley_app(scope, receive, send)
        return
    _open_responses += 1
    still_open = True

    async def counting_send(message: dict[str, Any]) -> None:
        nonlocal still_open
        global _open_responses
        await send(message)
        if still_open and message["type"] == "http.response.body" and not message.get("more_body", False):
            still_open = False
            _open_responses -= 1

    try:
        await parley_app(scope, receive, counting_send)
    finally:
        if still_open:
            _open_responses -= 1
