"""Stage `normalise`: the body read and parsed, and the policy it is held to looked up."""

from __future__ import annotations

from ...core.policy import Policy
from ...io.background import refresh_in_background
from ...io.expiring import ExpiringCache
from ..dependencies import read_body, store_call
from .exchange import Exchange

__all__ = ["normalise", "policy_of"]


async def policy_of(exchange: Exchange) -> Policy:
    """The key's policy (its own, else its account's), cached per instance like keys."""
    policies = exchange.services.policies
    account, key_id = exchange.key.account, exchange.key.key_id
    policy = policies.cached(account, key_id)
    if policy is ExpiringCache.MISSING:
        policy = await store_call(policies.lookup, account, key_id)
    elif policies.due(account, key_id):
        refresh_in_background(policies.lookup, account, key_id)
    return policy  # type: ignore[return-value]


async def normalise(exchange: Exchange) -> None:
    services = exchange.services
    exchange.body = await read_body(exchange.request, services.settings.max_body_bytes)
    exchange.data = exchange.endpoint.parse(exchange.body)
    exchange.policy = await policy_of(exchange)
