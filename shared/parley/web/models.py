"""GET /v1/models and GET /v1/models/{model_id}, in Anthropic's list shape.

A key limited to some models sees only those: another model is not found, as an unknown one is.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from ..core.errors import InvalidRequestError, NotFoundError
from ..io.keys import KeyRecord
from ..io.routes import Route
from .dependencies import authenticate, load_routes, resolve_route
from .responses import json_response

__all__ = ["router"]

router = APIRouter()


def _model_info(route: Route, model_id: str | None = None) -> dict[str, str]:
    return {
        "type": "model",
        "id": model_id or route.model,
        "display_name": route.display_name or route.model,
        "created_at": route.created_at,
    }


def _limit(value: str | None) -> int:
    if value is None:
        return 20
    if not value.isdigit() or not 1 <= int(value) <= 1000:
        raise InvalidRequestError("limit: Input should be an integer between 1 and 1000")
    return int(value)


@router.get("/v1/models")
async def list_models(request: Request, key: KeyRecord = Depends(authenticate)) -> Response:
    query = request.query_params
    limit = _limit(query.get("limit"))
    routes = await load_routes(request)
    own = [route for route in routes if route.account == key.account]
    own_names = {route.model for route in own}
    visible = own + [route for route in routes if route.account is None and route.model not in own_names]
    visible = [route for route in visible if key.allows(route.model)]
    models = [_model_info(route) for route in visible]
    ids = [model["id"] for model in models]
    if after_id := query.get("after_id"):
        models = models[ids.index(after_id) + 1 :] if after_id in ids else []
        page, has_more = models[:limit], len(models) > limit
    elif before_id := query.get("before_id"):
        models = models[: ids.index(before_id)] if before_id in ids else []
        page, has_more = models[-limit:], len(models) > limit
    else:
        page, has_more = models[:limit], len(models) > limit
    return json_response(
        {
            "data": page,
            "has_more": has_more,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        }
    )


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request, key: KeyRecord = Depends(authenticate)) -> Response:
    route = await resolve_route(request, model_id, key.account)
    if not key.allows(route.model):
        raise NotFoundError(f"model: {model_id}")  # what resolve_route says of an unknown one
    return json_response(_model_info(route, model_id))
