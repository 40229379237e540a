"""Rate limits shared by every instance: fixed one-minute windows as conditional DynamoDB counters.

A request is admitted when its scope's window is still under the limit, and counted in the same
atomic update. Requests per minute are exact. Tokens per minute count the prompt's estimate on
admission and the real input and output when the request ends, so a window can exceed its
token limit by what the requests admitted before it filled up go on to produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from ..core.errors import RateLimitError
from ..core.metering import Limits, Window, window_at

__all__ = ["Allowance", "RateLimiter", "rate_limit_headers"]


@dataclass(frozen=True, slots=True)
class Allowance:
    scope: str
    limits: Limits
    window: Window
    requests: int
    tokens: int


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


class RateLimiter:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._dynamodb = dynamodb
        self._table = table

    def acquire(self, scopes: list[tuple[str, Limits]], tokens: int, now: float) -> list[Allowance]:
        """Admit the request in every limited scope, or in none (raises RateLimitError)."""
        allowances: list[Allowance] = []
        try:
            for scope, limits in scopes:
                if limits.any_rate:
                    allowances.append(self._acquire_one(scope, limits, tokens, now))
        except RateLimitError:
            for allowance in allowances:
                self.adjust(allowance, requests=-1, tokens=-tokens)
            raise
        return allowances

    def _acquire_one(self, scope: str, limits: Limits, tokens: int, now: float) -> Allowance:
        window = window_at(now)
        conditions: list[str] = []
        values: dict[str, Any] = {
            ":one": {"N": "1"},
            ":tokens": {"N": str(tokens)},
            ":ttl": {"N": str(window.end + 300)},
        }
        if limits.requests_per_minute is not None:
            conditions.append("(attribute_not_exists(requests) OR requests < :rpm)")
            values[":rpm"] = {"N": str(limits.requests_per_minute)}
        if limits.tokens_per_minute is not None:
            conditions.append("(attribute_not_exists(tokens) OR tokens < :tpm)")
            values[":tpm"] = {"N": str(limits.tokens_per_minute)}
        try:
            answer = self._dynamodb.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"{scope}#{window.start}"}},
                UpdateExpression="ADD requests :one, tokens :tokens SET expires_at = :ttl",
                ConditionExpression=" AND ".join(conditions),
                ExpressionAttributeValues=values,
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            refused = Allowance(scope, limits, window, limits.requests_per_minute or 0, limits.tokens_per_minute or 0)
            raise RateLimitError(
                f"This request would exceed {_whose(scope)} rate limit of {_describe(limits)}. Please try again later.",
                headers={"retry-after": str(window.retry_after(now)), **rate_limit_headers(refused)},
            ) from None
        attributes = answer["Attributes"]
        return Allowance(scope, limits, window, int(attributes["requests"]["N"]), int(attributes["tokens"]["N"]))

    def adjust(self, allowance: Allowance, requests: int = 0, tokens: int = 0) -> None:
        """Correct a window's counts (a refused sibling scope, or real tokens replacing the estimate)."""
        if not requests and not tokens:
            return
        self._dynamodb.update_item(
            TableName=self._table,
            Key={"pk": {"S": f"{allowance.scope}#{allowance.window.start}"}},
            UpdateExpression="ADD requests :requests, tokens :tokens",
            ExpressionAttributeValues={":requests": {"N": str(requests)}, ":tokens": {"N": str(tokens)}},
        )


def _describe(limits: Limits) -> str:
    parts = []
    if limits.requests_per_minute is not None:
        parts.append(f"{limits.requests_per_minute:,} requests per minute")
    if limits.tokens_per_minute is not None:
        parts.append(f"{limits.tokens_per_minute:,} input and output tokens per minute")
    return " and ".join(parts)
