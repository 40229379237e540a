"""Stage `meter`: what the request is metered under and the answer's usage, on its outcome; the
middleware writes the usage event once the request has ended (docs/metering.md)."""

from __future__ import annotations

from ...io.routes import Route
from ...telemetry import RequestOutcome

__all__ = ["note_route", "note_usage"]


def note_route(outcome: RequestOutcome | None, route: Route, requested_model: str) -> None:
    """Meter the request under the route's public name, whatever alias the client sent (so one
    model's usage is never split across spellings); the client's spelling stays on the record."""
    if outcome is not None:
        outcome.model = route.model
        outcome.requested_model = requested_model if requested_model != route.model else None


def note_usage(outcome: RequestOutcome | None, usage: dict[str, int]) -> None:
    if outcome is None:
        return
    outcome.input_tokens = usage["input_tokens"]
    outcome.output_tokens = usage["output_tokens"]
    outcome.cache_read_input_tokens = usage["cache_read_input_tokens"]
