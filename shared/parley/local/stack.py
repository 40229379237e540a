"""`make dev`: Parley on 127.0.0.1 with an embedded DynamoDB, a seeded key and route, and a worker.

Environment (the local contract in design.md): PARLEY_PORT, PARLEY_DEV_KEY, PARLEY_WORKER_URL,
PARLEY_WORKER_MODEL, PARLEY_MODEL, PARLEY_WORKER_API_KEY, AWS_ENDPOINT_URL_DYNAMODB; and
PARLEY_WORKER_MAX_OUTPUT_TOKENS (default 8192) to clamp clients' max_tokens to the worker's limit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from dataclasses import dataclass
from typing import Callable

import uvicorn

from ..io.keys import KeyStore
from ..io.routes import Route, RouteStore, Worker
from ..io.tables import create_tables
from ..settings import Settings

__all__ = ["DevStack", "run_dev", "seed"]

DYNAMODB_PORT = 8000
CLAUDE_ALIASES = ("claude-*",)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def use_local_aws_defaults() -> None:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")


def start_embedded_dynamodb(port: int = DYNAMODB_PORT) -> object:
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            sys.exit(
                f"parley dev: port {port} is taken; stop what uses it, or set "
                "AWS_ENDPOINT_URL_DYNAMODB to a DynamoDB you run yourself"
            )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = f"http://127.0.0.1:{port}"
    return server


@dataclass(frozen=True, slots=True)
class DevStack:
    key: str
    model: str
    worker: Worker
    demo: bool


def seed(dynamodb: object, settings: Settings, worker: Worker, model: str, dev_key: str | None, demo: bool) -> DevStack:
    create_tables(dynamodb, settings.table_names)
    routes = RouteStore(dynamodb, settings.routes_table)
    routes.put(Route(model=model, workers=(worker,), aliases=CLAUDE_ALIASES, display_name=model))
    key, _ = KeyStore(dynamodb, settings.keys_table).create(account="dev", name="dev key", key=dev_key)
    return DevStack(key=key, model=model, worker=worker, demo=demo)


def banner(stack: DevStack, port: int) -> str:
    base = f"http://127.0.0.1:{port}"
    worker = "the built-in DEMO worker (echoes you; not a language model)" if stack.demo else stack.worker.base_url
    return f"""
Parley is running on {base}
  model:   {stack.model}  (also answers any claude-* model name)
  worker:  {worker}
  API key: {stack.key}

curl:
  curl {base}/v1/messages -H 'x-api-key: {stack.key}' -H 'anthropic-version: 2023-06-01' \\
    -H 'content-type: application/json' \\
    -d '{{"model": "{stack.model}", "max_tokens": 256, "messages": [{{"role": "user", "content": "Hello"}}]}}'

Python SDK:
  anthropic.Anthropic(base_url="{base}", api_key="{stack.key}")

Claude Code:
  ANTHROPIC_BASE_URL={base} ANTHROPIC_AUTH_TOKEN={stack.key} claude
"""


async def _serve(servers: list[uvicorn.Server]) -> None:
    await asyncio.gather(*(server.serve() for server in servers))


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed, as uvicorn itself picks it (the streaming function runs on it)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_dev() -> None:
    import boto3

    use_local_aws_defaults()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s parley %(message)s", "%H:%M:%S"))
    parley_logger = logging.getLogger("parley")
    parley_logger.addHandler(handler)
    parley_logger.setLevel(logging.INFO)
    if not os.environ.get("AWS_ENDPOINT_URL_DYNAMODB"):
        start_embedded_dynamodb()
    settings = Settings.from_environment()
    port = int(os.environ.get("PARLEY_PORT", "8080"))
    servers: list[uvicorn.Server] = []
    worker_url = os.environ.get("PARLEY_WORKER_URL")
    demo = not worker_url
    if demo:
        from .demo_worker import DEMO_MODEL

        demo_port = _free_port()
        servers.append(
            uvicorn.Server(
                uvicorn.Config(
                    "parley.local.demo_worker:app", host="127.0.0.1", port=demo_port, log_config=None, access_log=False
                )
            )
        )
        worker_url = f"http://127.0.0.1:{demo_port}/v1"
        worker_model = DEMO_MODEL
    else:
        worker_model = os.environ.get("PARLEY_WORKER_MODEL") or "default"
    worker = Worker(
        base_url=worker_url,
        model=worker_model,
        api_key_ref="env:PARLEY_WORKER_API_KEY" if os.environ.get("PARLEY_WORKER_API_KEY") else None,
        max_output_tokens=int(os.environ.get("PARLEY_WORKER_MAX_OUTPUT_TOKENS") or 8192),
    )
    model = os.environ.get("PARLEY_MODEL") or worker_model
    stack = seed(boto3.client("dynamodb"), settings, worker, model, os.environ.get("PARLEY_DEV_KEY"), demo)
    servers.append(uvicorn.Server(uvicorn.Config("parley.web.app:app", host="127.0.0.1", port=port)))
    print(banner(stack, port), flush=True)
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        runner.run(_serve(servers))
