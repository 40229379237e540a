"""A local Parley stack for tests: Amazon DynamoDB Local (one server for the whole run, tables per
stack), and Parley itself under uvicorn, metering through its usage journal as `make dev` does.

Plain context managers, not fixtures, so any test package can wrap them in fixtures of the
scope it needs. Nothing here leaves the loopback interface.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import boto3
import httpx
import uvicorn

from parley.io.routes import Route
from parley.io.tables import create_tables
from parley.local.batch_backends import BatchBackends
from parley.local.dynamodb_local import DynamoDBLocal
from parley.settings import Settings
from parley.web.app import create_app
from parley.web.services import Services

__all__ = [
    "AWS_ENV",
    "ERROR_BODIES",
    "BatchBackendsForTests",
    "RunningParley",
    "batch_backends",
    "dynamodb_client",
    "embedded_dynamodb",
    "environment",
    "free_port",
    "parley_stack",
    "serve",
    "tables_named",
    "wait_until_healthy",
]

# Dummy credentials: DynamoDB Local accepts any, and botocore must never find real ones.
AWS_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


def tables_named(prefix: str) -> dict[str, str]:
    """Settings fields naming every table `prefix-role`: a stack's own tables in the shared DynamoDB."""
    return {f"{role}_table": f"{prefix}-{role.replace('_', '-')}" for role in Settings().table_names}


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def dynamodb_client(endpoint_url: str) -> Any:
    """A boto3 DynamoDB client of its own (its own event hooks, for injected faults)."""
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint_url,
        region_name=AWS_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )


@contextmanager
def embedded_dynamodb() -> Iterator[Any]:
    """Amazon DynamoDB Local, in memory, on a free loopback port; yields a boto3 client for it.

    The dummy AWS variables are set for the duration and restored afterwards.
    """
    with environment(AWS_ENV), DynamoDBLocal() as server:
        yield dynamodb_client(server.endpoint_url)


@contextmanager
def environment(values: dict[str, str], removed: tuple[str, ...] = ()) -> Iterator[None]:
    """`values` set and `removed` unset in os.environ for the duration; what was there restored."""
    saved = {name: os.environ.get(name) for name in (*values, *removed)}
    for name in removed:
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass(frozen=True)
class BatchBackendsForTests:
    """The embedded S3 and SQS of message batches (moto's server, a child process): a mock, because
    S3 and SQS have no engine installable here (local/batch_backends.py says which were tried);
    the batches' own table is on DynamoDB Local like every other."""

    endpoint_url: str
    s3: Any
    sqs: Any

    def settings_for(self, name: str, visibility_seconds: int = 60) -> dict[str, Any]:
        """Settings fields for a stack with its own bucket and queue, polled by the stack itself."""
        self.s3.create_bucket(Bucket=name)
        queue_url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        return {
            "batch_bucket": name,
            "batch_queue_url": queue_url,
            "batch_poll": True,
            "batch_visibility_seconds": visibility_seconds,
        }


@contextmanager
def batch_backends() -> Iterator[BatchBackendsForTests]:
    """moto's server on a free loopback port, with S3 and SQS clients of it. Nothing else in the
    process is pointed at it: a stack gets the clients (`parley_stack(batch_backends=...)`), a
    process of its own the endpoint in its environment."""
    with BatchBackends() as server:
        clients = {
            service: boto3.client(
                service,
                endpoint_url=server.endpoint_url,
                region_name=AWS_ENV["AWS_DEFAULT_REGION"],
                aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            )
            for service in ("s3", "sqs")
        }
        yield BatchBackendsForTests(server.endpoint_url, clients["s3"], clients["sqs"])


def wait_until_healthy(url: str, is_alive: Callable[[], bool], seconds: float = 15.0) -> None:
    """Wait until GET {url}/health answers 200; fail if the server dies or takes too long."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or not is_alive():
            raise RuntimeError(f"nothing healthy came up on {url}")
        time.sleep(0.05)


ERROR_BODIES: list[str] = []
"""Every error a served stack sent a client (error responses and `event: error` stream events),
scanned for keys at the end of the session by tests/conftest.py."""


class CaptureErrors:
    """ASGI wrapper that keeps the body of every error answer (and every streamed error event)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def capture(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                if status >= 400 or b"event: error" in body:
                    ERROR_BODIES.append(body[:8192].decode("utf-8", "replace"))
            await send(message)

        await self.app(scope, receive, capture)


@contextmanager
def serve(app: Any, name: str = "parley-uvicorn", startup_seconds: float = 15.0) -> Iterator[str]:
    """Serve an ASGI app under uvicorn in a daemon thread on a free port; yields its base URL
    once GET /health answers 200. Error answers are captured for the session's key scan."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(CaptureErrors(app), host="127.0.0.1", port=port, log_level="warning", timeout_keep_alive=30)
    )
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, thread.is_alive, startup_seconds)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass(frozen=True)
class RunningParley:
    url: str
    key: str
    services: Services


@contextmanager
def parley_stack(
    dynamodb: Any,
    settings: Settings,
    routes: Iterable[Route],
    account: str = "acct",
    key_name: str = "test",
    batch_backends: BatchBackendsForTests | None = None,
) -> Iterator[RunningParley]:
    """Create the tables, seed `routes` and one API key, and serve Parley. Unless the settings name
    stdout, usage goes through a usage journal of the stack's own in a temporary folder. Message
    batches need `batch_backends` and the settings of its `settings_for`."""
    create_tables(dynamodb, settings.table_names)
    with tempfile.TemporaryDirectory(prefix="parley-usage-") as journal:
        if settings.usage_log != "stdout":
            settings = dataclasses.replace(settings, usage_log=journal)
        clients = {"s3": batch_backends.s3, "sqs": batch_backends.sqs} if batch_backends else {}
        services = Services.build(settings, dynamodb, **clients)
        try:
            for route in routes:
                services.routes.put(route)
            key, _ = services.keys.create(account=account, name=key_name)
            with serve(create_app(lambda: services)) as url:
                yield RunningParley(url=url, key=key, services=services)
        finally:
            services.close()
