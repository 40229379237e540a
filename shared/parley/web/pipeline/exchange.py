"""One request on its way through the pipeline: what each stage found, for the stages after it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from ...core.policy import NO_POLICY, Policy
from ...core.request_guard import GuardedRequest, JudgedBlocks
from ...io.keys import KeyRecord
from ...telemetry import RequestOutcome
from ..dependencies import services_of
from ..middleware import outcome_of
from ..services import Services

__all__ = ["Endpoint", "Exchange"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What differs between endpoints: how the body is parsed and guarded, how it is called."""

    name: str
    parse: Callable[[bytes], dict[str, Any]]
    guard: Callable[[dict[str, Any], Policy, bytes | None, JudgedBlocks], GuardedRequest]
    route_and_call: Callable[["Exchange"], Awaitable[Response]]
    with_found: Callable[[dict[str, Any], list[dict[str, Any]]], dict[str, Any]]  # what it found, put in


@dataclass(slots=True)
class Exchange:
    request: Request
    key: KeyRecord
    endpoint: Endpoint
    body: bytes = b""
    data: dict[str, Any] = field(default_factory=dict)  # the parsed body; guarded in place
    policy: Policy = NO_POLICY
    placeholder_key: bytes | None = None  # the account's, when the policy masks
    guarded: GuardedRequest = field(default_factory=GuardedRequest)

    @property
    def services(self) -> Services:
        return services_of(self.request)

    @property
    def outcome(self) -> RequestOutcome | None:
        return outcome_of(self.request)
