"""Routes: a public model name (or alias pattern) → the workers that answer it.

A route belongs to the operator (it may point anywhere) or to one account (its workers must be
public HTTPS endpoints, and only that account's keys see it).
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Literal

import orjson

from ..core.anthropic_types import MAX_MODEL_NAME_LENGTH
from ..core.metering import Prices
from ..core.request import WorkerProfile
from .expiring import ExpiringCache

__all__ = ["Route", "RouteStore", "Timeouts", "Worker", "WorkerApi", "match_route", "route_key"]

WorkerApi = Literal["openai", "anthropic"]
WORKER_APIS: tuple[WorkerApi, ...] = ("openai", "anthropic")


@dataclass(frozen=True, slots=True)
class Worker:
    """One server that answers a route.

    `base_url` is what the worker's own SDK takes: an OpenAI base URL ends in /v1
    (http://gpu:8000/v1); an Anthropic one does not (http://gpu:8000), but one given with /v1
    works too (`url_for`).

    `tokenize`: whether Parley asks the worker's POST /tokenize (vLLM) for prompt counts. None
    (the default): it learns, once per worker per instance, whether the worker has one
    (parley.io.tokenizers); True: always ask; False: never ask, estimate.
    """

    base_url: str
    model: str
    api_key_ref: str | None = None
    api: WorkerApi = "openai"
    weight: float = 1.0
    max_output_tokens: int | None = None
    context_tokens: int | None = None
    continuous_usage: bool = False
    images: bool = True
    files: bool = False
    tokenize: bool | None = None
    adapt_tool_schemas: bool = False
    short_tool_ids: bool = False
    fold_system: bool | None = None

    def __post_init__(self) -> None:
        if self.api not in WORKER_APIS:
            raise ValueError(f"api must be one of {WORKER_APIS}, not {self.api!r}")
        if not self.weight > 0:
            raise ValueError("weight must be positive")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, not {self.base_url!r}")

    @property
    def profile(self) -> WorkerProfile:
        return WorkerProfile(
            model=self.model,
            max_output_tokens=self.max_output_tokens,
            context_tokens=self.context_tokens,
            continuous_usage=self.continuous_usage,
            images=self.images,
            files=self.files,
            adapt_tool_schemas=self.adapt_tool_schemas,
            short_tool_ids=self.short_tool_ids,
            fold_system_messages=self.fold_system is True,
        )

    @property
    def identity(self) -> tuple[str, str]:
        """The worker as what an instance learns about it is kept under (health, tokenizer,
        template): its base URL and model, whatever else its route says."""
        return self.base_url, self.model

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/")

    @property
    def root_url(self) -> str:
        """The server's root: the base URL without the /v1 it may end in (vLLM's /tokenize is there)."""
        return self.url.removesuffix("/v1")

    def url_for(self, path: str) -> str:
        """The URL of `path` as the worker's SDK appends it to its base URL (/chat/completions for
        OpenAI, /v1/messages for Anthropic); /tokenize is on the server's root. An Anthropic
        worker registered with a base URL ending in /v1 gets /v1/messages once, not twice."""
        if path == "/tokenize" or (self.api == "anthropic" and path.startswith("/v1/")):
            return self.root_url + path
        return self.url + path

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        # Stored as "tokenizer" ("worker" / "estimate"; absent: learn). Routes stored before carry
        # "tokenize": false, the old default, which from_json reads as "learn".
        tokenize = data.pop("tokenize")
        if tokenize is not None:
            data["tokenizer"] = "worker" if tokenize else "estimate"
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Worker":
        known = {f.name for f in fields(cls)} - {"tokenize"}
        options = {name: value for name, value in data.items() if name in known}
        if "tokenizer" in data:
            options["tokenize"] = data["tokenizer"] == "worker"
        elif data.get("tokenize") is True:
            options["tokenize"] = True
        return cls(**options)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. `first_byte`: from sending a streamed request to the worker's first body byte;
    `idle`: the longest silence between two stream chunks; `buffered`: a whole buffered answer."""

    connect: float = 5.0
    first_byte: float = 120.0
    idle: float = 60.0
    buffered: float = 600.0

    def __post_init__(self) -> None:
        if min(self.connect, self.first_byte, self.idle, self.buffered) <= 0:
            raise ValueError("timeouts must be positive")


@dataclass(frozen=True, slots=True)
class Route:
    model: str
    workers: tuple[Worker, ...]
    aliases: tuple[str, ...] = ()
    display_name: str = ""
    prices: Prices = Prices()
    timeouts: Timeouts = Timeouts()
    account: str | None = None
    batch_slots: int = 4  # how many calls message batches may have in flight on this route, across instances
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))

    def __post_init__(self) -> None:
        if not self.workers:
            raise ValueError("a route needs at least one worker")
        if self.batch_slots < 0:
            raise ValueError("batch_slots must be 0 (no batches) or more")
        if not 0 <= self.prices.batch_factor <= 1:
            raise ValueError("the batch price factor must be from 0 to 1")

    @property
    def worker(self) -> Worker:
        return self.workers[0]


def route_key(model: str, account: str | None) -> str:
    """The table key: operator routes by model name; account routes under their account."""
    return f"account#{account}#{model}" if account else model


def _route(item: dict[str, Any]) -> Route:
    timeouts = orjson.loads(item["timeouts"]["S"]) if "timeouts" in item else {}
    account = item.get("account", {}).get("S")
    return Route(
        model=item["public_model"]["S"] if "public_model" in item else item["model"]["S"],
        workers=tuple(Worker.from_json(worker) for worker in orjson.loads(item["workers"]["S"])),
        aliases=tuple(item.get("aliases", {}).get("SS", ())),
        display_name=item.get("display_name", {}).get("S", ""),
        created_at=item.get("created_at", {}).get("S", ""),
        prices=Prices(
            input_per_mtok=float(item.get("input_usd_per_mtok", {}).get("N", 0)),
            output_per_mtok=float(item.get("output_usd_per_mtok", {}).get("N", 0)),
            cache_hit_per_mtok=float(item.get("cache_hit_usd_per_mtok", {}).get("N", 0)),
            batch_factor=float(item.get("batch_price_factor", {}).get("N", Prices.batch_factor)),
        ),
        batch_slots=int(item.get("batch_slots", {}).get("N", Route.batch_slots)),
        timeouts=Timeouts(**timeouts),
        account=account,
    )


class RouteStore:
    """All routes, read in one scan and cached per instance for `cache_seconds`."""

    def __init__(self, dynamodb: Any, table: str, cache_seconds: float = 30.0) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self._cache: ExpiringCache[tuple[Route, ...]] = ExpiringCache(cache_seconds)

    def put(self, route: Route) -> None:
        if not 0 < len(route.model) <= MAX_MODEL_NAME_LENGTH:
            raise ValueError(f"a route's model name must have 1 to {MAX_MODEL_NAME_LENGTH} characters")
        item: dict[str, Any] = {
            "model": {"S": route_key(route.model, route.account)},
            "public_model": {"S": route.model},
            "workers": {"S": orjson.dumps([worker.to_json() for worker in route.workers]).decode()},
            "display_name": {"S": route.display_name or route.model},
            "created_at": {"S": route.created_at},
            "input_usd_per_mtok": {"N": str(route.prices.input_per_mtok)},
            "output_usd_per_mtok": {"N": str(route.prices.output_per_mtok)},
            "cache_hit_usd_per_mtok": {"N": str(route.prices.cache_hit_per_mtok)},
            "batch_price_factor": {"N": str(route.prices.batch_factor)},
            "batch_slots": {"N": str(route.batch_slots)},
            "timeouts": {"S": orjson.dumps(asdict(route.timeouts)).decode()},
        }
        if route.aliases:
            item["aliases"] = {"SS": sorted(set(route.aliases))}
        if route.account:
            item["account"] = {"S": route.account}
        self._dynamodb.put_item(TableName=self._table, Item=item)
        self._cache.clear()

    def remove(self, model: str, account: str | None = None) -> bool:
        answer = self._dynamodb.delete_item(
            TableName=self._table, Key={"model": {"S": route_key(model, account)}}, ReturnValues="ALL_OLD"
        )
        self._cache.clear()
        return bool(answer.get("Attributes"))

    def cached(self) -> tuple[Route, ...] | object:
        return self._cache.get("all")

    def due(self) -> bool:
        """Whether the cached routes should be loaded again now (ExpiringCache.due)."""
        return self._cache.due("all")

    def load(self) -> tuple[Route, ...]:
        routes: list[Route] = []
        kwargs: dict[str, Any] = {"TableName": self._table}
        while True:
            page = self._dynamodb.scan(**kwargs)
            routes.extend(_route(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        ordered = tuple(sorted(routes, key=lambda route: (route.created_at, route.model), reverse=True))
        self._cache.put("all", ordered)
        return ordered


def match_route(routes: tuple[Route, ...], name: str, account: str | None = None) -> Route | None:
    """The route `account` may use for `name`: its own routes first, then the operator's; an
    exact name before an alias pattern, and among patterns the newest route first."""
    candidates = [route for route in routes if route.account == account] if account else []
    candidates += [route for route in routes if route.account is None]
    for route in candidates:
        if route.model == name:
            return route
    for route in candidates:
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in route.aliases):
            return route
    return None
