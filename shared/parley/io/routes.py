"""Routes: a public model name (or alias pattern) → the worker that answers it."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from ..core.metering import Prices
from ..core.request import WorkerLimits
from .expiring import ExpiringCache

__all__ = ["Route", "RouteStore", "Worker", "match_route"]


@dataclass(frozen=True, slots=True)
class Worker:
    base_url: str
    model: str
    api_key_ref: str | None = None
    max_output_tokens: int | None = None
    continuous_usage: bool = False

    @property
    def limits(self) -> WorkerLimits:
        return WorkerLimits(
            model=self.model, max_output_tokens=self.max_output_tokens, continuous_usage=self.continuous_usage
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "model": self.model,
            "api_key_ref": self.api_key_ref,
            "max_output_tokens": self.max_output_tokens,
            "continuous_usage": self.continuous_usage,
        }


@dataclass(frozen=True, slots=True)
class Route:
    model: str
    workers: tuple[Worker, ...]
    aliases: tuple[str, ...] = ()
    display_name: str = ""
    prices: Prices = Prices()
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))

    @property
    def worker(self) -> Worker:
        return self.workers[0]


def _route(item: dict[str, Any]) -> Route:
    return Route(
        model=item["model"]["S"],
        workers=tuple(Worker(**worker) for worker in orjson.loads(item["workers"]["S"])),
        aliases=tuple(item.get("aliases", {}).get("SS", ())),
        display_name=item.get("display_name", {}).get("S", ""),
        created_at=item.get("created_at", {}).get("S", ""),
        prices=Prices(
            input_per_mtok=float(item.get("input_usd_per_mtok", {}).get("N", 0)),
            output_per_mtok=float(item.get("output_usd_per_mtok", {}).get("N", 0)),
        ),
    )


class RouteStore:
    """All routes, read in one scan and cached per instance for `cache_seconds`."""

    def __init__(self, dynamodb: Any, table: str, cache_seconds: float = 30.0) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self._cache: ExpiringCache[tuple[Route, ...]] = ExpiringCache(cache_seconds)

    def put(self, route: Route) -> None:
        item: dict[str, Any] = {
            "model": {"S": route.model},
            "workers": {"S": orjson.dumps([worker.to_json() for worker in route.workers]).decode()},
            "display_name": {"S": route.display_name or route.model},
            "created_at": {"S": route.created_at},
            "input_usd_per_mtok": {"N": str(route.prices.input_per_mtok)},
            "output_usd_per_mtok": {"N": str(route.prices.output_per_mtok)},
        }
        if route.aliases:
            item["aliases"] = {"SS": sorted(set(route.aliases))}
        self._dynamodb.put_item(TableName=self._table, Item=item)
        self._cache.clear()

    def remove(self, model: str) -> None:
        self._dynamodb.delete_item(TableName=self._table, Key={"model": {"S": model}})
        self._cache.clear()

    def cached(self) -> tuple[Route, ...] | object:
        return self._cache.get("all")

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


def match_route(routes: tuple[Route, ...], name: str) -> Route | None:
    """The route named `name`, else the first whose alias pattern matches it."""
    for route in routes:
        if route.model == name:
            return route
    for route in routes:
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in route.aliases):
            return route
    return None
