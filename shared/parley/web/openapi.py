"""GET /openapi.json: the routes as FastAPI sees them, plus what it cannot see.

The handlers read the raw request (so that the body size is checked before parsing, and the
error is Anthropic's), so FastAPI knows neither the request bodies nor the answers. This adds
them: the request bodies from the pydantic models in core.anthropic_types, the query parameters,
the success answers, and every error as Anthropic's envelope.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ..core.anthropic_types import CountTokensRequest, MessagesRequest
from ..core.batches import CUSTOM_ID_PATTERN, MAX_BATCH_REQUESTS
from .batches import BATCHES_PATH, JSONL

__all__ = ["install_openapi"]

_REF = "#/components/schemas/{model}"
_ERRORS = {
    "400": ("invalid_request_error", "The request is not valid."),
    "401": ("authentication_error", "No API key, or an unknown, revoked or expired one."),
    "403": ("permission_error", "The key may not use this model."),
    "404": ("not_found_error", "No such model or path."),
    "413": ("request_too_large", "The request body is over the size limit."),
    "429": ("rate_limit_error", "A rate limit was reached (see retry-after)."),
    "500": ("api_error", "Parley or its worker failed."),
    "504": ("timeout_error", "The worker did not answer in time."),
    "529": ("overloaded_error", "The worker is overloaded or unreachable."),
}

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string", "enum": sorted({kind for kind, _ in _ERRORS.values()} | {"billing_error"})},
                "message": {"type": "string"},
            },
        },
        "request_id": {"type": "string"},
    },
}
_MESSAGE_SCHEMA = {
    "type": "object",
    "required": ["id", "type", "role", "content", "model", "stop_reason", "usage"],
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "message"},
        "role": {"const": "assistant"},
        "content": {"type": "array", "items": {"type": "object", "required": ["type"]}},
        "model": {"type": "string"},
        "stop_reason": {"type": ["string", "null"]},
        "stop_sequence": {"type": ["string", "null"]},
        "usage": {
            "type": "object",
            "required": ["input_tokens", "output_tokens"],
            "properties": {"input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"}},
        },
    },
}
# POST /v1/chat/completions is OpenAI's API: its body is passed through, its errors are OpenAI's.
_CHAT_REQUEST_SCHEMA = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "messages": {"type": "array", "minItems": 1, "items": {"type": "object"}},
        "stream": {"type": "boolean"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "max_completion_tokens": {"type": "integer", "minimum": 1},
    },
}
_CHAT_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {"message": {"type": "string"}, "type": {"type": "string"}},
        }
    },
}
_MODEL_SCHEMA = {
    "type": "object",
    "required": ["type", "id", "display_name", "created_at"],
    "properties": {
        "type": {"const": "model"},
        "id": {"type": "string"},
        "display_name": {"type": "string"},
        "created_at": {"type": "string"},
    },
}
_MODEL_LIST_SCHEMA = {
    "type": "object",
    "required": ["data", "has_more", "first_id", "last_id"],
    "properties": {
        "data": {"type": "array", "items": {"$ref": _REF.format(model="ModelInfo")}},
        "has_more": {"type": "boolean"},
        "first_id": {"type": ["string", "null"]},
        "last_id": {"type": ["string", "null"]},
    },
}
_USAGE_SCHEMA = {
    "type": "object",
    "required": ["key_id", "account", "since", "until", "data"],
    "properties": {
        "key_id": {"type": "string"},
        "account": {"type": "string"},
        "since": {"type": "string"},
        "until": {"type": "string"},
        "data": {"type": "array", "items": {"type": "object"}},
    },
}
_BATCH_TIME = {"type": ["string", "null"], "format": "date-time"}
_MESSAGE_BATCH_SCHEMA = {
    "type": "object",
    "required": [
        "id", "type", "processing_status", "request_counts", "ended_at", "created_at", "expires_at",
        "archived_at", "cancel_initiated_at", "results_url",
    ],
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "message_batch"},
        "processing_status": {"enum": ["in_progress", "canceling", "ended"]},
        "request_counts": {
            "type": "object",
            "required": ["processing", "succeeded", "errored", "canceled", "expired"],
            "properties": {
                name: {"type": "integer", "minimum": 0}
                for name in ("processing", "succeeded", "errored", "canceled", "expired")
            },
        },
        "ended_at": _BATCH_TIME,
        "created_at": {"type": "string", "format": "date-time"},
        "expires_at": {"type": "string", "format": "date-time"},
        "archived_at": _BATCH_TIME,
        "cancel_initiated_at": _BATCH_TIME,
        "results_url": {"type": ["string", "null"]},
    },
}  # fmt: skip
_MESSAGE_BATCH_LIST_SCHEMA = {
    **_MODEL_LIST_SCHEMA,
    "properties": {
        **_MODEL_LIST_SCHEMA["properties"],
        "data": {"type": "array", "items": {"$ref": _REF.format(model="MessageBatch")}},
    },
}
_MESSAGE_BATCH_CREATE_SCHEMA = {
    "type": "object",
    "required": ["requests"],
    "properties": {
        "requests": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_BATCH_REQUESTS,
            "items": {
                "type": "object",
                "required": ["custom_id", "params"],
                "properties": {
                    "custom_id": {"type": "string", "pattern": CUSTOM_ID_PATTERN},
                    # Judged when the request runs, as a Messages request (its error is its result).
                    "params": {"type": "object"},
                },
            },
        }
    },
}
_DELETED_MESSAGE_BATCH_SCHEMA = {
    "type": "object",
    "required": ["id", "type"],
    "properties": {"id": {"type": "string"}, "type": {"const": "message_batch_deleted"}},
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _answers(success: dict[str, Any], errors: tuple[str, ...], envelope: str = "ErrorResponse") -> dict[str, Any]:
    answers: dict[str, Any] = {"200": success}
    for status in errors:
        answers[status] = {"description": _ERRORS[status][1], "content": _json({"$ref": _REF.format(model=envelope)})}
    return answers


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_AUTHENTICATED = ("400", "401", "429", "500")
_WORKER = ("403", "404", "413", "504", "529")


def _describe(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for model in (MessagesRequest, CountTokensRequest):
        model_schema = model.model_json_schema(ref_template=_REF)
        schemas.update(model_schema.pop("$defs", {}))
        schemas[model.__name__] = model_schema
    schemas.update(
        ErrorResponse=_ERROR_SCHEMA,
        ChatCompletionRequest=_CHAT_REQUEST_SCHEMA,
        ChatErrorResponse=_CHAT_ERROR_SCHEMA,
        MessageResponse=_MESSAGE_SCHEMA,
        ModelInfo=_MODEL_SCHEMA,
        ModelList=_MODEL_LIST_SCHEMA,
        Usage=_USAGE_SCHEMA,
        MessageBatch=_MESSAGE_BATCH_SCHEMA,
        MessageBatchList=_MESSAGE_BATCH_LIST_SCHEMA,
        MessageBatchCreateRequest=_MESSAGE_BATCH_CREATE_SCHEMA,
        DeletedMessageBatch=_DELETED_MESSAGE_BATCH_SCHEMA,
    )
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, which Parley never sends
        schemas.pop(unused, None)
    components["securitySchemes"] = {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        "Bearer": {"type": "http", "scheme": "bearer"},
    }
    paths = schema["paths"]
    message_answer = {
        "description": "The message (application/json), or its event stream when `stream` is true.",
        "content": {
            **_json({"$ref": _REF.format(model="MessageResponse")}),
            "text/event-stream": {"schema": {"type": "string"}},
        },
    }
    for path in ("/v1/messages", "/v1/anthropic/messages"):
        operation = paths[path]["post"]
        operation["requestBody"] = {"required": True, "content": _json({"$ref": _REF.format(model="MessagesRequest")})}
        operation["responses"] = _answers(message_answer, (*_AUTHENTICATED, *_WORKER))
    count = paths["/v1/messages/count_tokens"]["post"]
    count["requestBody"] = {"required": True, "content": _json({"$ref": _REF.format(model="CountTokensRequest")})}
    count["responses"] = _answers(
        {
            "description": "The prompt's estimated token count.",
            "content": _json(
                {"type": "object", "required": ["input_tokens"], "properties": {"input_tokens": {"type": "integer"}}}
            ),
        },
        ("400", "401", "404", "413", "500"),
    )
    chat = paths["/v1/chat/completions"]["post"]
    chat["requestBody"] = {"required": True, "content": _json({"$ref": _REF.format(model="ChatCompletionRequest")})}
    chat["responses"] = _answers(
        {
            "description": "The worker's chat.completion (application/json), or its chunks when `stream` is true.",
            "content": {**_json({"type": "object"}), "text/event-stream": {"schema": {"type": "string"}}},
        },
        (*_AUTHENTICATED, *_WORKER),
        envelope="ChatErrorResponse",
    )
    models = paths["/v1/models"]["get"]
    models["parameters"] = [
        _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size (default 20)."),
        _query("after_id", {"type": "string"}, "The page after this model id."),
        _query("before_id", {"type": "string"}, "The page before this model id."),
    ]
    models["responses"] = _answers(
        {"description": "The models this gateway serves.", "content": _json({"$ref": _REF.format(model="ModelList")})},
        ("400", "401", "500"),
    )
    model = paths["/v1/models/{model_id}"]["get"]
    model["responses"] = _answers(
        {"description": "One model.", "content": _json({"$ref": _REF.format(model="ModelInfo")})},
        ("401", "404", "500"),
    )
    usage = paths["/v1/usage"]["get"]
    usage["parameters"] = [
        _query("since", {"type": "string", "format": "date"}, "First day (UTC), default 30 days ago."),
        _query("until", {"type": "string", "format": "date"}, "Last day (UTC), default today."),
        _query("by_model", {"type": "boolean"}, "One row per model and day."),
    ]
    usage["responses"] = _answers(
        {"description": "The key's own usage.", "content": _json({"$ref": _REF.format(model="Usage")})},
        ("400", "401", "500"),
    )
    _describe_batches(paths)
    for path, path_item in paths.items():
        for method, operation in path_item.items():
            name = re.sub(r"\W+", "_", path).strip("_") or "root"
            operation["operationId"] = f"{method}_{name}"
            if path.startswith("/v1/"):
                operation["security"] = [{"ApiKey": []}, {"Bearer": []}]


def _describe_batches(paths: dict[str, Any]) -> None:
    """The Message Batches API (docs/batches.md). 404: no such batch, or batches are not set up."""
    batch = {"description": "The batch.", "content": _json({"$ref": _REF.format(model="MessageBatch")})}
    create = paths[BATCHES_PATH]["post"]
    create["requestBody"] = {
        "required": True,
        "content": _json({"$ref": _REF.format(model="MessageBatchCreateRequest")}),
    }
    create["responses"] = _answers(batch, ("400", "401", "404", "413", "500"))
    listing = paths[BATCHES_PATH]["get"]
    listing["parameters"] = [
        _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size (default 20)."),
        _query("after_id", {"type": "string"}, "The page of batches older than this one."),
        _query("before_id", {"type": "string"}, "The page of batches newer than this one."),
    ]
    listing["responses"] = _answers(
        {
            "description": "The account's batches, newest first.",
            "content": _json({"$ref": _REF.format(model="MessageBatchList")}),
        },
        ("400", "401", "404", "500"),
    )
    one = f"{BATCHES_PATH}/{{batch_id}}"
    paths[one]["get"]["responses"] = _answers(batch, ("401", "404", "500"))
    paths[f"{one}/cancel"]["post"]["responses"] = _answers(batch, ("401", "404", "500"))
    paths[one]["delete"]["responses"] = _answers(
        {"description": "The batch is deleted.", "content": _json({"$ref": _REF.format(model="DeletedMessageBatch")})},
        ("400", "401", "404", "500"),
    )
    paths[f"{one}/results"]["get"]["responses"] = _answers(
        {
            "description": "One line of JSON per request, in request order: its custom_id and result.",
            "content": {JSONL: {"schema": {"type": "string"}}},
        },
        ("401", "404", "500"),
    )


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` (and GET /openapi.json) describe the real requests and answers."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            with warnings.catch_warnings():  # "/" answers GET and HEAD with one function: ids are set below
                warnings.simplefilter("ignore", UserWarning)
                schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            _describe(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
