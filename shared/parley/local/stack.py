"""`make dev`: Parley on 127.0.0.1 with an embedded DynamoDB, a seeded key and route, and a worker.

The embedded DynamoDB is Amazon's DynamoDB Local (local/dynamodb_local.py) as a child process on a
free port, its data in PARLEY_DATA_DIR/dynamodb (default .parley/dynamodb), so keys, routes and
usage survive a restart (`rm -rf .parley` starts afresh); the usage journal is in
PARLEY_DATA_DIR/usage. Without Java there is no fallback to a mock: it says what to install.

Environment (the local contract in design.md): PARLEY_PORT, PARLEY_DEV_KEY, PARLEY_WORKER_URL,
PARLEY_WORKER_MODEL, PARLEY_MODEL, PARLEY_WORKER_API_KEY, AWS_ENDPOINT_URL_DYNAMODB,
PARLEY_DATA_DIR; PARLEY_WORKER_MAX_OUTPUT_TOKENS (default 8192) to clamp clients' max_tokens to
the worker's limit; PARLEY_POLICY_FILE, a guardrail policy document (JSON, docs/guardrails.md)
stored for the dev account at start (a document it refuses stops start-up; without it the dev
account keeps whatever policy it has); and PARLEY_PII_KEY, the key of PII placeholders, or
PARLEY_PII_KEY_REF, a secret reference to it (io/secrets.py). With neither, a random key is made
once and kept in PARLEY_DATA_DIR/pii.key (mode 0600), so placeholders stay the same across restarts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import uvicorn

from ..core.policy import PolicyError, parse_policy
from ..io.keys import KeyStore
from ..io.policies import PolicyStore
from ..io.routes import Route, RouteStore, Worker
from ..io.tables import create_tables
from ..settings import Settings
from .batch_backends import BATCH_BUCKET, BatchBackends, BatchBackendsUnavailableError
from .dynamodb_local import DynamoDBLocal, DynamoDBLocalUnavailableError, _free_port, use_local_aws_defaults

__all__ = [
    "DevStack",
    "apply_policy",
    "read_policy_file",
    "run_dev",
    "seed",
    "start_batch_backends",
    "start_embedded_dynamodb",
    "use_local_aws_defaults",
    "use_local_pii_key",
]

CLAUDE_ALIASES = ("claude-*",)
DEV_ACCOUNT, DEV_KEY_NAME = "dev", "dev key"


def start_embedded_dynamodb(data_dir: Path) -> DynamoDBLocal:
    """DynamoDB Local with its data in `data_dir`; AWS_ENDPOINT_URL_DYNAMODB points at it."""
    try:
        database = DynamoDBLocal(data_dir=data_dir).start()
    except DynamoDBLocalUnavailableError as error:
        sys.exit(f"parley dev: the embedded DynamoDB cannot start.\n{error}")
    os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = database.endpoint_url
    return database


@dataclass(frozen=True, slots=True)
class DevStack:
    key: str
    model: str
    worker: Worker
    demo: bool


def seed(dynamodb: object, settings: Settings, worker: Worker, model: str, dev_key: str | None, demo: bool) -> DevStack:
    """Tables, the dev route and a dev key. The dev keys of earlier runs are revoked: only the
    printed one works (PARLEY_DEV_KEY keeps one key, and its key id and usage, across restarts)."""
    create_tables(dynamodb, settings.table_names)
    routes = RouteStore(dynamodb, settings.routes_table)
    routes.put(Route(model=model, workers=(worker,), aliases=CLAUDE_ALIASES, display_name=model))
    keys = KeyStore(dynamodb, settings.keys_table)
    kept = keys.lookup(dev_key) if dev_key else None
    if kept is not None and kept.status != "active":
        kept = None
    for record in keys.list():
        if (record.account, record.name, record.status) == (DEV_ACCOUNT, DEV_KEY_NAME, "active") and record != kept:
            keys.revoke(record.key_id)
    key = dev_key if kept is not None else keys.create(account=DEV_ACCOUNT, name=DEV_KEY_NAME, key=dev_key)[0]
    return DevStack(key=key, model=model, worker=worker, demo=demo)


def read_policy_file(path: str) -> object:
    """The policy document in `path`, checked; SystemExit with the field it refuses."""
    try:
        document = json.loads(Path(path).read_bytes())
    except OSError as error:
        sys.exit(f"parley dev: PARLEY_POLICY_FILE={path}: cannot read it ({error.strerror or error})")
    except ValueError as error:
        sys.exit(f"parley dev: PARLEY_POLICY_FILE={path}: not valid JSON ({error})")
    try:
        parse_policy(document)
    except PolicyError as error:
        sys.exit(f"parley dev: PARLEY_POLICY_FILE={path}: {error.message}")
    return document


def apply_policy(dynamodb: object, settings: Settings, document: object | None, source: str = "") -> str:
    """Store `document` as the dev account's policy (None: keep what it has); the line saying so."""
    store = PolicyStore(dynamodb, settings.policies_table)
    if document is not None:
        version = store.put(DEV_ACCOUNT, document).version
        return f"Guardrail policy {source} applied to account {DEV_ACCOUNT} (version {version})"
    kept = store.get(DEV_ACCOUNT)
    if kept is None:
        return ""
    return (
        f"Account {DEV_ACCOUNT} keeps its stored guardrail policy (version {kept.version});"
        f" parley policy remove --account {DEV_ACCOUNT} removes it"
    )


def use_local_pii_key(data_dir: Path) -> None:
    """PARLEY_PII_KEY from data_dir/pii.key (made once, mode 0600) unless a key or a reference is set."""
    if os.environ.get("PARLEY_PII_KEY") or os.environ.get("PARLEY_PII_KEY_REF"):
        return
    path = data_dir / "pii.key"
    key = path.read_text().strip() if path.is_file() else ""
    if not key:
        data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(key + "\n")
    os.chmod(path, 0o600)
    os.environ["PARLEY_PII_KEY"] = key


def banner(stack: DevStack, port: int, data_dir: Path | None) -> str:
    base = f"http://127.0.0.1:{port}"
    worker = "the built-in DEMO worker (echoes you; not a language model)" if stack.demo else stack.worker.base_url
    endpoint = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
    data = f"{data_dir}  (kept across restarts; rm -rf it to start afresh)" if data_dir else endpoint
    return f"""
Parley is running on {base}
  model:   {stack.model}  (also answers any claude-* model name)
  worker:  {worker}
  API key: {stack.key}
  data:    {data}

The parley CLI (keys, routes, usage) on this stack:
  AWS_ENDPOINT_URL_DYNAMODB={endpoint} .venv/bin/parley usage --account dev

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
    data_dir = Path(os.environ.get("PARLEY_DATA_DIR") or ".parley").resolve()
    os.environ.setdefault("PARLEY_USAGE_LOG", str(data_dir / "usage"))
    os.environ.setdefault("PARLEY_KNOWLEDGE_BASES_URI", str(data_dir / "knowledge"))
    use_local_pii_key(data_dir)
    policy_file = os.environ.get("PARLEY_POLICY_FILE") or ""
    policy = read_policy_file(policy_file) if policy_file else None  # refused before anything starts
    database = None
    if not os.environ.get("AWS_ENDPOINT_URL_DYNAMODB"):
        database = start_embedded_dynamodb(data_dir / "dynamodb")
    batch_backends = None if os.environ.get("PARLEY_BATCH_QUEUE_URL") else start_batch_backends()
    try:
        _run_dev(boto3.client("dynamodb"), data_dir if database else None, policy, policy_file)
    finally:
        if batch_backends is not None:
            batch_backends.stop()
        if database is not None:  # after Parley's shutdown, which meters what its journal holds
            database.stop()


def start_batch_backends() -> BatchBackends:
    """The embedded S3 and SQS of message batches (local/batch_backends.py), polled by Parley."""
    import boto3

    try:
        backends = BatchBackends().start()
    except BatchBackendsUnavailableError as error:
        sys.exit(f"parley dev: the embedded S3 and SQS of message batches cannot start: {error}")
    backends.use()
    os.environ["PARLEY_BATCH_QUEUE_URL"] = backends.create(boto3.client("s3"), boto3.client("sqs"))
    os.environ["PARLEY_BATCH_BUCKET"] = BATCH_BUCKET
    os.environ["PARLEY_BATCH_POLL"] = "1"
    return backends


def _run_dev(dynamodb: object, data_dir: Path | None, policy: object | None, policy_file: str) -> None:
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
    stack = seed(dynamodb, settings, worker, model, os.environ.get("PARLEY_DEV_KEY"), demo)
    policy_line = apply_policy(dynamodb, settings, policy, policy_file)
    if policy_line:
        print(policy_line, flush=True)
    servers.append(uvicorn.Server(uvicorn.Config("parley.web.app:app", host="127.0.0.1", port=port)))
    print(banner(stack, port, data_dir), flush=True)
    # Each uvicorn server shuts down gracefully on SIGTERM or Ctrl-C (Parley's meters what its
    # journal holds) and raises the signal again under the handler it found: this one, so that the
    # process exits 0 and DynamoDB Local stops too (asyncio's own SIGINT handler would cancel the
    # servers and end in a KeyboardInterrupt traceback).
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: sys.exit(0))
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        runner.run(_serve(servers))
