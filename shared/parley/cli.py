"""The `parley` command: the local stack and the admin of keys, routes, accounts, policies and
knowledge bases.

It works against whatever DynamoDB the environment points at (AWS_ENDPOINT_URL_DYNAMODB,
AWS_PROFILE, AWS_DEFAULT_REGION), with table names from PARLEY_KEYS_TABLE, PARLEY_ROUTES_TABLE,
PARLEY_POLICIES_TABLE and the like (settings.py).
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

    endpoint = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB", "")
    if endpoint.startswith(("http://127.0.0.1:", "http://localhost:")):  # make dev's DynamoDB Local
        from .local.dynamodb_local import use_local_aws_defaults

        use_local_aws_defaults()
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
        key, record = store.create(
            account=args.account,
            name=args.name,
            limits=_limits(args),
            allowed_models=tuple(args.model or ()),
            expires_at=args.expires,
        )
        print(f"key id:  {record.key_id}\naccount: {record.account}\nkey:     {key}")
        print("(shown once: only its hash is stored)")
    elif args.keys_command == "list":
        rows = [
            [r.key_id, r.account, r.name, r.status, r.created_at, r.expires_at or "", ",".join(r.allowed_models),
             _describe_limits(r.limits)]
            for r in store.list()
        ]  # fmt: skip
        print(_table(rows, ["KEY ID", "ACCOUNT", "NAME", "STATUS", "CREATED", "EXPIRES", "MODELS", "LIMITS"]))
    elif args.keys_command == "revoke":
        if not store.revoke(args.key_id):
            print(f"no key with id {args.key_id}", file=sys.stderr)
            return 1
        print(f"revoked {args.key_id}")
    return 0


def _limits(args: argparse.Namespace) -> Any:
    from .core.metering import Limits

    return Limits(requests_per_minute=args.rpm, tokens_per_minute=args.tpm, monthly_spend_usd=args.monthly_spend)


def _describe_limits(limits: Any) -> str:
    parts = []
    if limits.requests_per_minute is not None:
        parts.append(f"{limits.requests_per_minute} rpm")
    if limits.tokens_per_minute is not None:
        parts.append(f"{limits.tokens_per_minute} tpm")
    if limits.monthly_spend_usd is not None:
        parts.append(f"${limits.monthly_spend_usd:,.2f}/month")
    return ", ".join(parts)


def _add_limit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpm", type=int, help="requests per minute")
    parser.add_argument("--tpm", type=int, help="input+output tokens per minute")
    parser.add_argument("--monthly-spend", type=float, help="USD per calendar month (UTC)")


def _accounts(args: argparse.Namespace) -> int:
    from .io.accounts import AccountRecord, AccountStore

    store = AccountStore(_dynamodb(), Settings.from_environment().accounts_table)
    if args.accounts_command == "set":
        store.put(AccountRecord(args.account, _limits(args)))
        print(f"account {args.account}: {_describe_limits(_limits(args)) or 'no limits'}")
    else:
        print(_table([[r.account, _describe_limits(r.limits)] for r in store.list()], ["ACCOUNT", "LIMITS"]))
    return 0


def _read_policy_file(name: str) -> Any:
    """The JSON in file `name` (`-`: stdin), or SystemExit(2) saying what is wrong with it."""
    import json
    from pathlib import Path

    try:
        return json.loads(sys.stdin.read() if name == "-" else Path(name).read_bytes())
    except OSError as error:
        print(f"parley policy set: cannot read {name}: {error.strerror or error}", file=sys.stderr)
    except ValueError as error:
        print(f"parley policy set: {name} is not valid JSON: {error}", file=sys.stderr)
    raise SystemExit(2)


def _policy(args: argparse.Namespace) -> int:
    import json

    from .core.policy import PolicyError, policy_document
    from .io.keys import KeyStore
    from .io.policies import PolicyStore

    settings = Settings.from_environment()
    dynamodb = _dynamodb()
    store = PolicyStore(dynamodb, settings.policies_table)
    whose = f"key {args.key} of account {args.account}" if args.key else f"account {args.account}"
    if args.policy_command == "set":
        document = _read_policy_file(args.file)
        if args.key and not any(
            (r.key_id, r.account) == (args.key, args.account) for r in KeyStore(dynamodb, settings.keys_table).list()
        ):
            print(f"parley policy set: account {args.account} has no key with id {args.key}", file=sys.stderr)
            return 1
        try:
            policy = store.put(args.account, document, args.key)
        except PolicyError as error:
            print(f"parley policy set: {args.file}: {error.message}", file=sys.stderr)
            return 2
        print(f"stored the policy of {whose}: version {policy.version}")
    elif args.policy_command == "show":
        policy = store.get(args.account, args.key)
        if policy is None:
            fallback = store.get(args.account) if args.key else None
            held_to = f"; its requests are held to account {args.account}'s ({fallback.version})" if fallback else ""
            print(f"no policy for {whose}{held_to}", file=sys.stderr)
            return 1
        print(json.dumps(policy_document(policy), indent=2, ensure_ascii=False))
        print(f"version: {policy.version}", file=sys.stderr)
    elif args.policy_command == "remove":
        if not store.remove(args.account, args.key):
            print(f"no policy for {whose}", file=sys.stderr)
            return 1
        print(f"removed the policy of {whose}")
    return 0


def _knowledge(args: argparse.Namespace) -> int:
    import asyncio

    from botocore.exceptions import BotoCoreError, ClientError

    from .core.knowledge_files import KnowledgeFileError
    from .io.knowledge_bases import KnowledgeBaseError, knowledge_base_store
    from .io.worker import WorkerFailure

    store = knowledge_base_store(Settings.from_environment().knowledge_bases_uri)
    try:
        return asyncio.run(_knowledge_command(args, store))
    except (KnowledgeBaseError, KnowledgeFileError, OSError, BotoCoreError, ClientError) as error:
        print(f"parley kb {args.kb_command}: {error}", file=sys.stderr)
    except ImportError as error:  # the local extra (LanceDB, WordLlama) not installed here
        print(
            f"parley kb {args.kb_command}: {error.name or error} is not installed (pip install 'parley[local]')",
            file=sys.stderr,
        )
    except WorkerFailure as failure:
        print(f"parley kb {args.kb_command}: the embedding worker failed: {failure.error.message}", file=sys.stderr)
    return 1


async def _knowledge_command(args: argparse.Namespace, store: Any) -> int:
    import asyncio
    from pathlib import Path

    from .io.embeddings import BUILTIN_EMBEDDER, ROUTE_EMBEDDER_PREFIX, embedder_named
    from .io.knowledge_bases import KnowledgeBaseError
    from .io.knowledge_ingest import add_file
    from .io.routes import RouteStore, match_route
    from .io.worker import WorkerClient

    command, account = args.kb_command, args.account
    client = WorkerClient()

    async def route_of(model: str) -> Any:
        route = match_route(RouteStore(_dynamodb(), Settings.from_environment().routes_table).load(), model, account)
        if route is None:
            raise KnowledgeBaseError(f"no route {model} to embed with")
        return route

    async def embedder(named: str, dimensions: int | None = None) -> Any:
        try:
            return await embedder_named(named, dimensions, route_of, lambda _: client)
        except ValueError as unknown:
            raise KnowledgeBaseError(str(unknown)) from None

    def existing() -> Any:
        knowledge_base = store.get(account, args.name)
        if knowledge_base is None:
            raise OSError(f"account {account} has no knowledge base {args.name}")
        return knowledge_base

    try:
        if command == "create":
            named = f"{ROUTE_EMBEDDER_PREFIX}{args.embedding_model}" if args.embedding_model else BUILTIN_EMBEDDER
            chosen = await embedder(named)
            dimensions = len((await chosen.embed(["how many dimensions"]))[0])  # the embedder works
            made = store.create(account, args.name, named, dimensions)
            print(
                f"created knowledge base {made.name} of account {made.account}"
                f" ({made.embedder}, {dimensions} dimensions)"
            )
        elif command == "add":
            knowledge_base = existing()
            chosen = await embedder(knowledge_base.embedder, knowledge_base.dimensions)
            for path in args.files:
                source = Path(path).name
                count = await add_file(store, chosen, account, args.name, source, Path(path).read_bytes())
                print(f"{source}: {count} chunks")
        elif command == "list" and args.name:
            existing()
            print(
                _table(
                    [[source, str(count)] for source, count in store.sources(account, args.name)], ["SOURCE", "CHUNKS"]
                )
            )
        elif command == "list":
            rows = [[kb.name, kb.embedder, str(kb.dimensions), kb.created_at] for kb in store.list(account)]
            print(_table(rows, ["NAME", "EMBEDDER", "DIMENSIONS", "CREATED"]))
        elif command == "remove" and args.source:
            if not store.remove_source(account, args.name, args.source):
                raise OSError(f"knowledge base {args.name} has no source {args.source}")
            print(f"removed {args.source} from {args.name}")
        elif command == "remove":
            if not store.remove(account, args.name):
                raise OSError(f"account {account} has no knowledge base {args.name}")
            print(f"removed knowledge base {args.name}")
        elif command == "search":
            knowledge_base = existing()
            asking = await embedder(knowledge_base.embedder, knowledge_base.dimensions)
            [vector] = await asking.embed([args.query])
            found = await asyncio.to_thread(store.search, account, args.name, vector, args.top_k)
            for chunk in found:
                print(f"{chunk.score:.3f}  {chunk.source} #{chunk.position} {chunk.title}".rstrip())
                print("    " + " ".join(chunk.text.split())[:300])
    finally:
        await client.aclose()
    return 0


def _usage_row(scope: str, row: dict[str, Any]) -> dict[str, Any]:
    from .io.usage import public_row

    kind, _, name = scope.partition("#")
    return {kind: name, **public_row(row), "model": name if kind == "model" else row["model"]}


def _usage(args: argparse.Namespace) -> int:
    import csv
    import json
    from datetime import datetime, timedelta, timezone

    from .io.keys import KeyStore
    from .io.usage import UsageStore

    settings = Settings.from_environment()
    dynamodb = _dynamodb()
    today = datetime.now(timezone.utc).date()
    first = args.since or (today - timedelta(days=30)).isoformat()
    last = args.until or today.isoformat()
    if args.key:
        scopes = [f"key#{args.key}"]
    elif args.model:
        scopes = [f"model#{args.model}"]
    elif args.account:
        scopes = [f"account#{args.account}"]
    else:
        scopes = [f"account#{a}" for a in sorted({r.account for r in KeyStore(dynamodb, settings.keys_table).list()})]
    store = UsageStore(dynamodb, settings.usage_table, settings.usage_records_table)
    rows = []
    for scope in scopes:
        for row in store.aggregates(scope, first, last):
            if args.by_model != bool(row["model"]) and not scope.startswith("model#"):
                continue
            rows.append(_usage_row(scope, row))
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["day"])
        writer.writeheader()
        writer.writerows(rows)
    else:
        header = list(rows[0]) if rows else ["day", "requests", "input_tokens", "output_tokens", "cost_usd"]
        cells = [["" if row.get(column) is None else str(row[column]) for column in header] for row in rows]
        print(_table(cells, [h.upper() for h in header]))
    return 0


def _replay_usage(args: argparse.Namespace) -> int:
    """Meter usage lines again: dead letters (`{"line": …}` JSON lines, as the journal and the SQS
    queue keep them) or plain `PARLEY_USAGE …` lines. Lines already metered count nothing."""
    from pathlib import Path

    import orjson

    from .io.meter import FileDeadLetters, meter_lines
    from .io.usage import UsageStore

    settings = Settings.from_environment()
    store = UsageStore(_dynamodb(), settings.usage_table, settings.usage_records_table)
    lines = []
    for path in args.files:
        for raw in Path(path).read_text().splitlines():
            if raw.startswith("{"):
                raw = str(orjson.loads(raw).get("line", ""))
            lines.append(raw)
    rejected = Path(args.rejected)
    report = meter_lines(lines, store, FileDeadLetters(rejected))
    print(
        f"recorded {report.recorded}, already recorded {report.already_recorded}, "
        f"refused again {report.dead_letters}"
        + (f" (kept in {rejected})" if report.dead_letters else "")
        + (f", not written (DynamoDB kept failing) {len(report.unavailable)}" if report.unavailable else "")
    )
    return 1 if report.unavailable else 0


_WORKER_FLAGS = {
    "continuous_usage",
    "images",
    "files",
    "tokenize",
    "adapt_tool_schemas",
    "short_tool_ids",
    "fold_system",
}
_WORKER_NUMBERS = {"weight": float, "max_output_tokens": int, "context_tokens": int}


def _worker_spec(spec: str) -> dict[str, Any]:
    """`url=…,model=…[,key=env:NAME][,api=anthropic][,weight=2][,tokenize][,images=false]…`; a flag
    without a value is true, `=false` (no, 0) false, and a flag not given keeps the worker's default
    (for `tokenize` and `fold_system`: learn it from the worker)."""
    options: dict[str, Any] = {}
    for part in filter(None, (piece.strip() for piece in spec.split(","))):
        name, _, value = part.partition("=")
        name = {"url": "base_url", "key": "api_key_ref"}.get(name, name).replace("-", "_")
        if name in _WORKER_FLAGS:
            options[name] = value.lower() not in ("false", "no", "0") if value else True
        elif name in _WORKER_NUMBERS:
            options[name] = _WORKER_NUMBERS[name](value)
        else:
            options[name] = value
    return options


def _route_workers(args: argparse.Namespace) -> tuple[Any, ...]:
    from .io.routes import Worker

    specs = [_worker_spec(spec) for spec in args.worker or ()]
    if args.worker_url:
        specs.insert(
            0,
            {
                "base_url": args.worker_url,
                "model": args.worker_model,
                "api_key_ref": f"env:{args.api_key_env}" if args.api_key_env else None,
                "max_output_tokens": args.max_output_tokens,
            },
        )
    if not specs:
        raise SystemExit("parley routes add: give --worker-url and --worker-model, or --worker (repeatable)")
    try:
        return tuple(Worker(**spec) for spec in specs)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"parley routes add: bad worker: {exc}") from None


def _routes(args: argparse.Namespace) -> int:
    from .core.errors import ParleyError
    from .core.metering import Prices
    from .io.egress import check_public_worker_url
    from .io.routes import Route, RouteStore, Timeouts

    store = RouteStore(_dynamodb(), Settings.from_environment().routes_table)
    if args.routes_command == "add":
        workers = _route_workers(args)
        if args.account:
            for worker in workers:
                try:
                    check_public_worker_url(worker.base_url)
                except ParleyError as error:
                    raise SystemExit(f"parley routes add: {error.message}") from None
        defaults = Timeouts()
        timeouts = Timeouts(
            connect=args.connect_timeout or defaults.connect,
            first_byte=args.first_byte_timeout or defaults.first_byte,
            idle=args.idle_timeout or defaults.idle,
            buffered=args.buffered_timeout or defaults.buffered,
        )
        try:
            route = Route(
                prices=Prices(args.input_price, args.output_price, args.cache_hit_price, args.batch_price_factor),
                model=args.model,
                workers=workers,
                aliases=tuple(args.alias or ()),
                display_name=args.display_name or args.model,
                timeouts=timeouts,
                account=args.account,
                batch_slots=args.batch_slots,
            )
        except ValueError as error:
            raise SystemExit(f"parley routes add: {error}") from None
        store.put(route)
        owner = f" for account {args.account}" if args.account else ""
        print(f"route {args.model}{owner} → " + ", ".join(f"{w.base_url} ({w.model})" for w in workers))
    elif args.routes_command == "list":
        rows = [
            [
                r.model,
                r.account or "",
                ",".join(r.aliases),
                w.base_url,
                w.model,
                w.api,
                f"{w.weight:g}",
                str(w.max_output_tokens or ""),
                {True: "worker", False: "estimate", None: "learn"}[w.tokenize],
                f"{r.batch_slots} slots, {r.prices.batch_factor:g}x price" if r.batch_slots else "off",
            ]
            for r in store.load()
            for w in r.workers
        ]
        headers = ["MODEL", "ACCOUNT", "ALIASES", "WORKER URL", "WORKER MODEL", "API", "WEIGHT", "MAX OUTPUT", "TOKENS"]
        headers.append("BATCHES")
        print(_table(rows, headers))
    elif args.routes_command == "remove":
        if not store.remove(args.model, args.account):
            print(f"no route {args.model}", file=sys.stderr)
            return 1
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
    create.add_argument("--model", action="append", help="a model this key may use (repeat; default: all)")
    create.add_argument("--expires", help="expiry, ISO 8601 with offset (e.g. 2027-01-01T00:00:00+00:00)")
    _add_limit_options(create)
    keys.add_parser("list")
    keys.add_parser("revoke").add_argument("key_id")
    for sub in (create, *keys.choices.values()):
        sub.set_defaults(run=_keys)

    routes = commands.add_parser("routes", help="model routes").add_subparsers(dest="routes_command", required=True)
    add = routes.add_parser("add")
    add.add_argument("model", help="the public model name clients send")
    add.add_argument("--worker-url", help="the worker's OpenAI base URL, ending in /v1")
    add.add_argument("--worker-model", help="the model name the worker serves")
    add.add_argument(
        "--worker",
        action="append",
        help="another worker (repeatable): url=…,model=…[,key=env:NAME|secretsmanager:ID|ssm:NAME]"
        "[,api=openai|anthropic][,weight=N][,max_output_tokens=N][,context_tokens=N]"
        "[,tokenize|tokenize=false][,images=false][,files][,adapt_tool_schemas][,short_tool_ids][,fold_system][,continuous_usage]"
        " (tokenize: always use the worker's POST /tokenize; tokenize=false: never; neither: Parley learns"
        " whether it has one)",
    )
    add.add_argument("--account", help="an account's own route: only its keys see it; workers must be public https")
    add.add_argument("--connect-timeout", type=float, help="seconds (default 5)")
    add.add_argument("--first-byte-timeout", type=float, help="seconds to a stream's first byte (default 120)")
    add.add_argument("--idle-timeout", type=float, help="longest silence between stream chunks (default 60)")
    add.add_argument("--buffered-timeout", type=float, help="seconds for a whole buffered answer (default 600)")
    add.add_argument("--api-key-env", help="the environment variable holding the worker's API key")
    add.add_argument("--max-output-tokens", type=int)
    add.add_argument("--alias", action="append", help="a model-name pattern this route also answers (e.g. 'claude-*')")
    add.add_argument("--display-name")
    add.add_argument("--input-price", type=float, default=0.0, help="USD per million input tokens")
    add.add_argument("--output-price", type=float, default=0.0, help="USD per million output tokens")
    add.add_argument(
        "--cache-hit-price",
        type=float,
        default=0.0,
        help="USD per million tokens (input and output) of an answer from the response cache (docs/cache.md)",
    )
    add.add_argument(
        "--batch-price-factor",
        type=float,
        default=0.5,
        help="the share of the input and output prices a message batch's request pays (default 0.5, docs/batches.md)",
    )
    add.add_argument(
        "--batch-slots",
        type=int,
        default=4,
        help="how many worker calls message batches may have in flight on this route (default 4; 0: no batches)",
    )
    routes.add_parser("list")
    remove = routes.add_parser("remove")
    remove.add_argument("model")
    remove.add_argument("--account", help="remove the account's own route of this name")
    for sub in routes.choices.values():
        sub.set_defaults(run=_routes)
    accounts = commands.add_parser("accounts", help="account limits").add_subparsers(
        dest="accounts_command", required=True
    )
    account_set = accounts.add_parser("set")
    account_set.add_argument("account")
    _add_limit_options(account_set)
    accounts.add_parser("list")
    for sub in accounts.choices.values():
        sub.set_defaults(run=_accounts)

    policy = commands.add_parser(
        "policy", help="guardrail policies of accounts and keys (a key's replaces its account's)"
    ).add_subparsers(dest="policy_command", required=True)
    policy_set = policy.add_parser("set", help="store a policy document (JSON); prints its version")
    policy_set.add_argument("--file", required=True, help="the JSON document (- for stdin)")
    policy.add_parser("show", help="the stored document on stdout, its version on stderr")
    policy.add_parser("remove", help="remove it (a key's requests fall back to its account's policy)")
    for sub in policy.choices.values():
        sub.add_argument("--account", required=True)
        sub.add_argument("--key", help="a key id (key_…) of the account: the key's own policy")
        sub.set_defaults(run=_policy)

    kb = commands.add_parser("kb", help="knowledge bases for retrieval (docs/rag.md)").add_subparsers(
        dest="kb_command", required=True
    )
    kb_create = kb.add_parser("create", help="a new knowledge base of the account")
    kb_create.add_argument("name")
    kb_create.add_argument(
        "--embedding-model", help="a route whose workers serve /v1/embeddings (default: the built-in WordLlama)"
    )
    kb_add = kb.add_parser("add", help="text, markdown or PDF files (a file added again replaces its chunks)")
    kb_add.add_argument("name")
    kb_add.add_argument("files", nargs="+")
    kb.add_parser("list", help="the account's knowledge bases, or a knowledge base's sources").add_argument(
        "name", nargs="?"
    )
    kb_remove = kb.add_parser("remove", help="a knowledge base, or one source of it")
    kb_remove.add_argument("name")
    kb_remove.add_argument("--source", help="the file name to remove")
    kb_search = kb.add_parser("search", help="the chunks nearest a question")
    kb_search.add_argument("name")
    kb_search.add_argument("query")
    kb_search.add_argument("--top-k", type=int, default=4)
    for sub in kb.choices.values():
        sub.add_argument("--account", required=True)
        sub.set_defaults(run=_knowledge)

    usage = commands.add_parser("usage", help="usage per account, key or model and day")
    usage.add_argument("--account")
    usage.add_argument("--key", help="a key id (key_…)")
    usage.add_argument("--model")
    usage.add_argument("--since", help="first day, YYYY-MM-DD (default: 30 days ago)")
    usage.add_argument("--until", help="last day, YYYY-MM-DD (default: today)")
    usage.add_argument("--by-model", action="store_true", help="one row per model and day")
    output = usage.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true")
    output.add_argument("--csv", action="store_true")
    usage.set_defaults(run=_usage)

    replay = commands.add_parser("replay-usage", help="meter usage lines or dead letters again (exactly once)")
    replay.add_argument("files", nargs="+", help="dead-letters.jsonl, SQS message bodies, or PARLEY_USAGE lines")
    replay.add_argument("--rejected", default="rejected-usage.jsonl", help="where lines refused again are kept")
    replay.set_defaults(run=_replay_usage)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
