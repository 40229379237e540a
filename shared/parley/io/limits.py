"""Rate limits shared by every instance: fixed one-minute windows as conditional DynamoDB counters,
handed out to instances in leases so that a warm request usually needs no DynamoDB call.

An instance takes a lease of `n` requests from a scope's window with one atomic conditional
update (`ADD requests n`, only if the window has room for all `n`), then admits up to `n`
requests locally. Leases start at one request and double while a window stays busy, up to
1/16 of the requests-per-minute limit (at most 1,000), so small limits stay exact per request:
with a 3-rpm or 20-rpm key every request is still one conditional update, as before. Across
instances the limit is never exceeded (every admitted request was counted in DynamoDB first);
requests leased but not used by the end of the window are lost to that window, so a busy
scope on many instances can be refused up to one lease per instance early.

Tokens per minute count the prompt's estimate on admission and the real input and output when
the request ends. An instance adds the tokens of the requests it admitted from a lease to
DynamoDB with its next lease or its next metering write, and refuses locally as soon as its own
view of the window (DynamoDB's count at the last lease plus what it added since) is at the limit.
So a window can exceed its token limit by what the requests admitted before it filled up go on to
produce, and by what other instances admitted and have not written yet.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from ..core.errors import RateLimitError
from ..core.metering import Limits, Window, window_at

__all__ = ["Allowance", "RateLimiter", "rate_limit_headers"]

MAX_LEASE = 1000
LEASE_SHARE = 16  # a lease is at most this fraction of the requests-per-minute limit
TOKEN_ONLY_LEASE_TOKENS = 4096  # a tokens-only scope leases one request per this many tokens per minute


@dataclass(frozen=True, slots=True)
class Allowance:
    scope: str
    limits: Limits
    window: Window
    requests: int
    tokens: int


@dataclass(slots=True)
class _Lease:
    """What this instance knows about one scope's current window."""

    window: int
    left: int = 0  # requests leased and not yet admitted
    size: int = 0  # the last lease's size
    requests: int = 0  # the window's request count in DynamoDB after our last update
    tokens: int = 0  # the window's tokens as this instance knows them (DynamoDB's, plus unsent)
    unsent: int = 0  # tokens counted here and not yet added in DynamoDB


def rate_limit_headers(allowance: Allowance) -> dict[str, str]:
    """Anthropic's anthropic-ratelimit-* headers for this window."""
    headers: dict[str, str] = {}
    reset = allowance.window.reset_rfc3339()
    limits = allowance.limits
    if limits.requests_per_minute is not None:
        headers["anthropic-ratelimit-requests-limit"] = str(limits.requests_per_minute)
        headers["anthropic-ratelimit-requests-remaining"] = str(max(0, limits.requests_per_minute - allowance.requests))
        headers["anthropic-ratelimit-requests-reset"] = reset
    if limits.tokens_per_minute is not None:
        headers["anthropic-ratelimit-tokens-limit"] = str(limits.tokens_per_minute)
        headers["anthropic-ratelimit-tokens-remaining"] = str(max(0, limits.tokens_per_minute - allowance.tokens))
        headers["anthropic-ratelimit-tokens-reset"] = reset
    return headers


def _whose(scope: str) -> str:
    return "this API key's" if scope.startswith("key#") else "this account's"


def _max_lease(limits: Limits) -> int:
    if limits.requests_per_minute is not None:
        return max(1, min(MAX_LEASE, limits.requests_per_minute // LEASE_SHARE))
    return max(1, min(64, (limits.tokens_per_minute or 0) // TOKEN_ONLY_LEASE_TOKENS))


def _refusal(scope: str, limits: Limits, window: Window, now: float) -> RateLimitError:
    refused = Allowance(scope, limits, window, limits.requests_per_minute or 0, limits.tokens_per_minute or 0)
    return RateLimitError(
        f"This request would exceed {_whose(scope)} rate limit of {_describe(limits)}. Please try again later.",
        headers={"retry-after": str(window.retry_after(now)), **rate_limit_headers(refused)},
    )


class RateLimiter:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self._leases: dict[str, _Lease] = {}
        self._ended: list[tuple[str, int, int]] = []  # unsent tokens of windows that have ended
        self._lock = threading.Lock()

    def _current(self, scope: str, window: Window) -> _Lease:
        """The scope's lease for `window` (a new, empty one when its window has ended). Locked."""
        lease = self._leases.get(scope)
        if lease is None or lease.window != window.start:
            if lease is not None and lease.unsent:
                self._ended.append((scope, lease.window, lease.unsent))
            lease = self._leases[scope] = _Lease(window.start)
        return lease

    def acquire_local(self, scopes: list[tuple[str, Limits]], tokens: int, now: float) -> list[Allowance] | None:
        """Admit the request from this instance's leases alone (no I/O), or return None when a
        scope needs a new lease. Raises RateLimitError when a window is known to be full."""
        window = window_at(now)
        allowances: list[Allowance] = []
        with self._lock:
            for scope, limits in scopes:
                if not limits.any_rate:
                    continue
                lease = self._leases.get(scope)
                if lease is None or lease.window != window.start:
                    self._give_back(allowances, tokens)
                    return None
                if limits.tokens_per_minute is not None and lease.tokens >= limits.tokens_per_minute:
                    self._give_back(allowances, tokens)
                    raise _refusal(scope, limits, window, now)
                if lease.left <= 0:
                    self._give_back(allowances, tokens)
                    return None
                lease.left -= 1
                lease.tokens += tokens
                lease.unsent += tokens
                allowances.append(Allowance(scope, limits, window, lease.requests - lease.left, lease.tokens))
        return allowances

    def acquire(self, scopes: list[tuple[str, Limits]], tokens: int, now: float) -> list[Allowance]:
        """Admit the request in every limited scope, or in none (raises RateLimitError)."""
        allowances: list[Allowance] = []
        try:
            for scope, limits in scopes:
                if limits.any_rate:
                    allowances.append(self._acquire_one(scope, limits, tokens, now))
        except RateLimitError:
            with self._lock:
                self._give_back(allowances, tokens)
            raise
        return allowances

    def _give_back(self, allowances: list[Allowance], tokens: int) -> None:
        """Undo admissions (a sibling scope refused): the leased requests can be used again."""
        for allowance in allowances:
            lease = self._leases.get(allowance.scope)
            if lease is not None and lease.window == allowance.window.start:
                lease.left += 1
                lease.tokens -= tokens
                lease.unsent -= tokens

    def _acquire_one(self, scope: str, limits: Limits, tokens: int, now: float) -> Allowance:
        window = window_at(now)
        if limits.requests_per_minute == 0:  # the conditional write admits a first request anyway
            raise _refusal(scope, limits, window, now)
        with self._lock:
            lease = self._current(scope, window)
            if limits.tokens_per_minute is not None and lease.tokens >= limits.tokens_per_minute:
                raise _refusal(scope, limits, window, now)
            if lease.left > 0:  # another request took a lease while this one waited
                lease.left -= 1
                lease.tokens += tokens
                lease.unsent += tokens
                return Allowance(scope, limits, window, lease.requests - lease.left, lease.tokens)
            size = min(_max_lease(limits), max(1, lease.size * 2))
            unsent, lease.unsent = lease.unsent, 0
        while True:
            answer = self._lease(scope, limits, window, size, tokens + unsent)
            if answer is not None or size == 1:
                break
            size = 1  # the window has no room for a whole lease: ask for this request alone
        with self._lock:
            lease = self._current(scope, window)
            if answer is None:
                lease.unsent += unsent
                raise _refusal(scope, limits, window, now)
            requests, counted_tokens = answer
            lease.size = size
            lease.left += size - 1
            lease.requests = max(lease.requests, requests)
            lease.tokens = max(lease.tokens, counted_tokens + lease.unsent)
            return Allowance(scope, limits, window, lease.requests - lease.left, lease.tokens)

    def _lease(self, scope: str, limits: Limits, window: Window, size: int, tokens: int) -> tuple[int, int] | None:
        """Count `size` requests and `tokens` in the window if it has room; None if it has not."""
        from botocore.exceptions import ClientError

        conditions: list[str] = []
        values: dict[str, Any] = {
            ":size": {"N": str(size)},
            ":tokens": {"N": str(tokens)},
            ":ttl": {"N": str(window.end + 300)},
        }
        if limits.requests_per_minute is not None:
            conditions.append("(attribute_not_exists(requests) OR requests <= :room)")
            values[":room"] = {"N": str(limits.requests_per_minute - size)}
        if limits.tokens_per_minute is not None:
            conditions.append("(attribute_not_exists(tokens) OR tokens < :tpm)")
            values[":tpm"] = {"N": str(limits.tokens_per_minute)}
        try:
            answer = self._dynamodb.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"{scope}#{window.start}"}},
                UpdateExpression="ADD requests :size, tokens :tokens SET expires_at = :ttl",
                ConditionExpression=" AND ".join(conditions),
                ExpressionAttributeValues=values,
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            return None
        attributes = answer["Attributes"]
        return int(attributes["requests"]["N"]), int(attributes["tokens"]["N"])

    def note_tokens(self, allowance: Allowance, tokens: int) -> None:
        """Real tokens replacing the estimate: counted here at once (no I/O), written by `flush`."""
        if not tokens:
            return
        with self._lock:
            lease = self._leases.get(allowance.scope)
            if lease is not None and lease.window == allowance.window.start:
                lease.tokens += tokens
                lease.unsent += tokens
            else:
                self._ended.append((allowance.scope, allowance.window.start, tokens))

    def flush(self) -> None:
        """Write the tokens counted here since the last lease or flush (one update per busy scope)."""
        with self._lock:
            pending = [(scope, lease.window, lease.unsent) for scope, lease in self._leases.items() if lease.unsent]
            for scope, _, _ in pending:
                self._leases[scope].unsent = 0
            pending += self._ended
            self._ended = []
        for index, (scope, window, tokens) in enumerate(pending):
            try:
                self._add(scope, window, tokens)
            except Exception:
                with self._lock:  # keep what was not written for the next flush or lease
                    for scope_left, window_left, tokens_left in pending[index:]:
                        lease = self._leases.get(scope_left)
                        if lease is not None and lease.window == window_left:
                            lease.unsent += tokens_left
                        else:
                            self._ended.append((scope_left, window_left, tokens_left))
                raise

    def _add(self, scope: str, window: int, tokens: int) -> None:
        self._dynamodb.update_item(
            TableName=self._table,
            Key={"pk": {"S": f"{scope}#{window}"}},
            UpdateExpression="ADD tokens :tokens",
            ExpressionAttributeValues={":tokens": {"N": str(tokens)}},
        )


def _describe(limits: Limits) -> str:
    parts = []
    if limits.requests_per_minute is not None:
        parts.append(f"{limits.requests_per_minute:,} requests per minute")
    if limits.tokens_per_minute is not None:
        parts.append(f"{limits.tokens_per_minute:,} input and output tokens per minute")
    return " and ".join(parts)
