"""Admission before a worker is called (allowed models, monthly spend, rate limits), and the usage
event of a request that has ended (metered exactly once from the usage log, docs/metering.md).

count_tokens is admitted apart (`admit_count_tokens`): the same allowed models, and the key's and
the account's requests-per-minute limits counted in windows of its own (Anthropic rate-limits
token counting separately from messages), with no tokens, no spend check and no usage record:
limited, not billed."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import Request

from ..core.errors import InvalidRequestError, PermissionDeniedError
from ..core.metering import MICROS_PER_USD, Limits, UsageEvent, cost_micros
from ..core.usage_log import usage_line
from ..io.accounts import AccountRecord
from ..io.background import refresh_in_background
from ..io.expiring import ExpiringCache
from ..io.keys import KeyRecord
from ..io.limits import Allowance, rate_limit_headers
from ..io.routes import Route
from ..telemetry import RequestOutcome
from .dependencies import services_of_app, store_call
from .middleware import add_response_headers, outcome_of
from .services import Services

metering_logger = logging.getLogger("parley.metering")

__all__ = [
    "COUNT_TOKENS_SCOPE",
    "admit",
    "admit_count_tokens",
    "conclude",
    "record_outcome",
    "usage_event",
]

COUNT_TOKENS_SCOPE = "#count_tokens"
"""The suffix of count_tokens' rate-limit scopes: `key#<id>#count_tokens`, `account#<id>#count_tokens`."""


def _whose(scope: str) -> str:
    return "this API key's" if scope.startswith("key#") else "this account's"


def _check_model(key: KeyRecord, route: Route) -> None:
    if not key.allows(route.model):
        raise PermissionDeniedError(f"This API key is not allowed to use the model {route.model}.")


async def _account_of(services: Services, key: KeyRecord) -> AccountRecord:
    account = services.accounts.cached(key.account)
    if account is ExpiringCache.MISSING:
        account = await store_call(services.accounts.get, key.account)
    elif services.accounts.due(key.account):
        refresh_in_background(services.accounts.get, key.account)
    return account  # type: ignore[return-value]


async def _acquire(services: Services, scopes: list[tuple[str, Limits]], tokens: int, now: float) -> list[Allowance]:
    allowances: list[Allowance] | None = []
    if any(limits.any_rate for _, limits in scopes):
        allowances = services.limits.acquire_local(scopes, tokens, now)  # no I/O
        if allowances is None:
            allowances = await store_call(services.limits.acquire, scopes, tokens, now)
    return allowances


async def admit(request: Request, services: Services, key: KeyRecord, route: Route, estimated_tokens: int) -> None:
    _check_model(key, route)
    account = await _account_of(services, key)
    scopes = [(f"key#{key.key_id}", key.limits), (f"account#{key.account}", account.limits)]
    now = time.time()
    for scope, limits in scopes:
        if limits.monthly_spend_usd is not None:
            spent = services.usage.cached_month_spend(scope, now)  # no I/O, no thread hop
            if spent is ExpiringCache.MISSING:
                spent = await store_call(services.usage.month_spend_micros, scope, now)
            elif services.usage.month_spend_due(scope, now):
                refresh_in_background(services.usage.month_spend_micros, scope, now)
            if spent >= limits.monthly_spend_usd * MICROS_PER_USD:
                # Anthropic's own wording, which clients such as Claude Code recognise.
                raise InvalidRequestError(
                    f"Your credit balance is too low to access this API: {_whose(scope)} monthly spend "
                    f"limit of ${limits.monthly_spend_usd:,.2f} is reached."
                )
    outcome = outcome_of(request)
    # A message batch's requests are held to the route's batch slots, not to rate limits.
    batch = outcome is not None and outcome.batch
    allowances = [] if batch else await _acquire(services, scopes, estimated_tokens, now)
    if outcome is not None:
        outcome.prices, outcome.allowances, outcome.estimated_tokens = route.prices, allowances, estimated_tokens
    if allowances:
        add_response_headers(request, rate_limit_headers(allowances[0]))


async def admit_count_tokens(request: Request, services: Services, key: KeyRecord, route: Route) -> None:
    """A count_tokens request: the key's allowed models, then the key's and the account's
    requests per minute in count_tokens' own windows (module docstring). A key or account with
    only a tokens-per-minute limit counts tokens without a limit."""
    _check_model(key, route)
    account = await _account_of(services, key)
    scopes = [
        (f"key#{key.key_id}{COUNT_TOKENS_SCOPE}", Limits(requests_per_minute=key.limits.requests_per_minute)),
        (f"account#{key.account}{COUNT_TOKENS_SCOPE}", Limits(requests_per_minute=account.limits.requests_per_minute)),
    ]
    allowances = await _acquire(services, scopes, 0, time.time())
    if allowances:
        add_response_headers(request, rate_limit_headers(allowances[0]))


def usage_event(outcome: RequestOutcome) -> UsageEvent | None:
    """What is metered: every request that was authenticated and routed, failed ones included."""
    if not (outcome.key_id and outcome.account and outcome.model):
        return None
    return UsageEvent(
        request_id=outcome.request_id,
        at=time.time(),
        key_id=outcome.key_id,
        account=outcome.account,
        model=outcome.model,
        worker=outcome.worker or "",
        status=outcome.status,
        stream=outcome.stream,
        input_tokens=outcome.input_tokens,
        output_tokens=outcome.output_tokens,
        cache_read_input_tokens=outcome.cache_read_input_tokens,
        cost_micros=cost_micros(
            outcome.prices,
            outcome.input_tokens,
            outcome.output_tokens,
            outcome.cache_read_input_tokens,
            cache_hit=outcome.cache == "hit",
            batch=outcome.batch,
        ),
        latency_ms=outcome.latency_ms,
        time_to_first_token_ms=outcome.time_to_first_token_ms,
        error_type=outcome.error_type,
        client_disconnected=outcome.client_disconnected,
        requested_model=outcome.requested_model,
        cache_hit=outcome.cache == "hit",
        retrieved_tokens=outcome.retrieved_tokens,
        batch=outcome.batch,
    )


def conclude(services: Services, outcome: RequestOutcome) -> UsageEvent | None:
    """The request's usage event, with its real tokens counted in this instance's rate-limit
    view at once (no I/O), so that the next request already sees them."""
    event = usage_event(outcome)
    if event is not None:
        used = event.input_tokens + event.cache_read_input_tokens + event.output_tokens
        for allowance in outcome.allowances:
            services.limits.note_tokens(allowance, used - outcome.estimated_tokens)
    return event


def record_outcome(app: Any, outcome: RequestOutcome) -> None:
    """A finished request (RequestContextMiddleware's `record`): its usage line to the usage log,
    its outcome to telemetry."""
    services = services_of_app(app)
    event = conclude(services, outcome)
    if event is not None:
        try:
            services.usage_log.append(event)
        except OSError:  # a full disk, say: the line in the error log can be replayed
            metering_logger.exception("usage log write failed; replay this line: %s", usage_line(event).rstrip())
    services.telemetry.record(outcome)
