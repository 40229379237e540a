"""GET /v1/usage: a key holder's own usage, per day (and per model with by_model=true).

Query: since, until (YYYY-MM-DD, UTC; default the last 30 days), by_model (true/false).
Answer: {"key_id", "account", "since", "until", "data": [{"day", "model", "requests", "errors",
"input_tokens", "cache_read_input_tokens", "output_tokens", "cache_hits", "cost_usd"}]}.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from ..core.errors import InvalidRequestError
from ..io.keys import KeyRecord
from ..io.usage import public_row
from .dependencies import authenticate, services_of, store_call
from .responses import json_response

__all__ = ["router"]

router = APIRouter()


def _day(value: str | None, default: date, name: str) -> str:
    if value is None:
        return default.isoformat()
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise InvalidRequestError(f"{name}: expected a date as YYYY-MM-DD") from None


@router.get("/v1/usage")
async def key_usage(request: Request, key: KeyRecord = Depends(authenticate)) -> Response:
    query = request.query_params
    today = datetime.now(timezone.utc).date()
    since = _day(query.get("since"), today - timedelta(days=30), "since")
    until = _day(query.get("until"), today, "until")
    by_model = query.get("by_model", "false").lower()
    if by_model not in ("true", "false"):
        raise InvalidRequestError("by_model: expected true or false")
    # (DynamoDB refuses a BETWEEN whose bounds are reversed: an empty range is simply empty)
    rows = (
        await store_call(services_of(request).usage.aggregates, f"key#{key.key_id}", since, until)
        if since <= until
        else []
    )
    data = [public_row(row) for row in rows if bool(row["model"]) == (by_model == "true")]
    return json_response({"key_id": key.key_id, "account": key.account, "since": since, "until": until, "data": data})
