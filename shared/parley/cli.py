"""The `parley` command: the local stack and the admin of keys and routes.

It works against whatever DynamoDB the environment points at (AWS_ENDPOINT_URL_DYNAMODB,
AWS_PROFILE, AWS_DEFAULT_REGION), with table names from PARLEY_KEYS_TABLE / PARLEY_ROUTES_TABLE.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

from .settings import Settings

__all__ = ["main"]


def _dynamodb() -> Any:
    import boto3

    return boto3.client("dynamodb")


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _keys(args: argparse.Namespace) -> int:
    from .io.keys import KeyStore

    store = KeyStore(_dynamodb(), Settings.from_environment().keys_table)
    if args.keys_command == "create":
        key, record = store.create(account=args.account, name=args.name)
        print(f"key id:  {record.key_id}\naccount: {record.account}\nkey:     {key}")
        print("(shown once: only its hash is stored)")
    elif args.keys_command == "list":
        rows = [[r.key_id, r.account, r.name, r.status, r.created_at] for r in store.list()]
        print(_table(rows, ["KEY ID", "ACCOUNT", "NAME", "STATUS", "CREATED"]))
    elif args.keys_command == "revoke":
        if not store.revoke(args.key_id):
            print(f"no key with id {args.key_id}", file=sys.stderr)
            return 1
        print(f"revoked {args.key_id}")
    return 0


def _routes(args: argparse.Namespace) -> int:
    from .io.routes import Route, RouteStore, Worker

    store = RouteStore(_dynamodb(), Settings.from_environment().routes_table)
    if args.routes_command == "add":
        worker = Worker(
            base_url=args.worker_url,
            model=args.worker_model,
            api_key_ref=f"env:{args.api_key_env}" if args.api_key_env else None,
            max_output_tokens=args.max_output_tokens,
        )
        store.put(
            Route(
                model=args.model,
                workers=(worker,),
                aliases=tuple(args.alias or ()),
                display_name=args.display_name or args.model,
            )
        )
        print(f"route {args.model} → {args.worker_url} ({args.worker_model})")
    elif args.routes_command == "list":
        rows = [
            [r.model, ",".join(r.aliases), r.worker.base_url, r.worker.model, str(r.worker.max_output_tokens or "")]
            for r in store.load()
        ]
        print(_table(rows, ["MODEL", "ALIASES", "WORKER URL", "WORKER MODEL", "MAX OUTPUT"]))
    elif args.routes_command == "remove":
        store.remove(args.model)
        print(f"removed {args.model}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    uvicorn.run("parley.web.app:app", host=args.host, port=args.port)
    return 0


def _dev(args: argparse.Namespace) -> int:
    from .local.stack import run_dev

    run_dev()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parley", description="Parley: the Anthropic Messages API over OpenAI-compatible workers"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("dev", help="run Parley locally with an embedded DynamoDB").set_defaults(run=_dev)

    serve = commands.add_parser("serve", help="run the app under uvicorn against the configured DynamoDB")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=int(os.environ.get("PARLEY_PORT", "8080")))
    serve.set_defaults(run=_serve)

    keys = commands.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create")
    create.add_argument("--account", required=True)
    create.add_argument("--name", default="")
    keys.add_parser("list")
    keys.add_parser("revoke").add_argument("key_id")
    for sub in (create, *keys.choices.values()):
        sub.set_defaults(run=_keys)

    routes = commands.add_parser("routes", help="model routes").add_subparsers(dest="routes_command", required=True)
    add = routes.add_parser("add")
    add.add_argument("model", help="the public model name clients send")
    add.add_argument("--worker-url", required=True, help="the worker's OpenAI base URL, ending in /v1")
    add.add_argument("--worker-model", required=True, help="the model name the worker serves")
    add.add_argument("--api-key-env", help="the environment variable holding the worker's API key")
    add.add_argument("--max-output-tokens", type=int)
    add.add_argument("--alias", action="append", help="a model-name pattern this route also answers (e.g. 'claude-*')")
    add.add_argument("--display-name")
    routes.add_parser("list")
    routes.add_parser("remove").add_argument("model")
    for sub in routes.choices.values():
        sub.set_defaults(run=_routes)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
