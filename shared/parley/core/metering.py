"""Usage, cost and rate-limit arithmetic: plain data in, plain data out.

Money is counted in integer micro-dollars (1 USD = 1,000,000), so sums never drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache

__all__ = [
    "Limits",
    "Prices",
    "UsageEvent",
    "Window",
    "cost_micros",
    "day_of",
    "month_of",
    "usd",
    "window_at",
]

MICROS_PER_USD = 1_000_000
WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per million tokens, per route."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    cache_hit_per_mtok: float = 0.0  # every token of an answer served from the response cache
    batch_factor: float = 0.5  # a message batch's requests pay this share of the input and output prices


def cost_micros(
    prices: Prices,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    cache_hit: bool = False,
    batch: bool = False,
) -> int:
    """What a request costs; cached prompt tokens are billed as input tokens. An answer from the
    response cache (docs/cache.md) is billed at the cache-hit price for all its tokens; a message
    batch's request (docs/batches.md) at the batch share of the input and output prices."""
    tokens_in = input_tokens + cache_read_tokens
    if cache_hit:
        return round((tokens_in + output_tokens) * prices.cache_hit_per_mtok)
    share = prices.batch_factor if batch else 1.0
    return round((tokens_in * prices.input_per_mtok + output_tokens * prices.output_per_mtok) * share)


def usd(micros: int) -> float:
    return micros / MICROS_PER_USD


@dataclass(frozen=True, slots=True)
class Limits:
    """Per key or per account; None means unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    monthly_spend_usd: float | None = None

    @property
    def any_rate(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None


@dataclass(frozen=True, slots=True)
class Window:
    """A fixed one-minute rate-limit window."""

    start: int

    @property
    def end(self) -> int:
        return self.start + WINDOW_SECONDS

    def retry_after(self, now: float) -> int:
        return max(1, math.ceil(self.end - now))

    def reset_rfc3339(self) -> str:
        return datetime.fromtimestamp(self.end, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def window_at(now: float) -> Window:
    return Window(int(now) // WINDOW_SECONDS * WINDOW_SECONDS)


@lru_cache(maxsize=8)
def _date_of_day(day_number: int) -> str:
    return datetime.fromtimestamp(day_number * 86_400, timezone.utc).strftime("%Y-%m-%d")


def day_of(epoch_seconds: float) -> str:
    return _date_of_day(int(epoch_seconds // 86_400))  # POSIX days are exactly 86,400 s


def month_of(epoch_seconds: float) -> str:
    return day_of(epoch_seconds)[:7]


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One request's usage: what is metered, exactly once, keyed by the request id. `model` is the
    route's public name (aggregates are kept under it, whatever alias the client sent)."""

    request_id: str
    at: float
    key_id: str
    account: str
    model: str
    worker: str
    status: int
    stream: bool
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_micros: int = 0
    latency_ms: float = 0.0
    time_to_first_token_ms: float | None = None
    error_type: str | None = None
    client_disconnected: bool = False
    requested_model: str | None = None  # the client's spelling, when it is not the route's name
    cache_hit: bool = False  # answered from the response cache, without a worker
    retrieved_tokens: int = 0  # of input_tokens, what retrieval put into the prompt (an estimate)
    batch: bool = False  # one request of a message batch, priced at the route's batch share

    def aggregate_keys(self) -> list[tuple[str, str]]:
        """(partition, sort) of every aggregate this event adds to. Per key and per account: the day,
        the day per model (sort key day#D#model#M, so one query returns both) and the month (what
        spend caps read); per model: the day."""
        day, month = f"day#{day_of(self.at)}", f"month#{month_of(self.at)}"
        by_model = f"{day}#model#{self.model}"
        key, account = f"key#{self.key_id}", f"account#{self.account}"
        return [
            (key, day),
            (key, by_model),
            (key, month),
            (account, day),
            (account, by_model),
            (account, month),
            (f"model#{self.model}", day),
        ]
