"""The Message Batches API (`/v1/messages/batches`) in Anthropic's shapes, without I/O.

- `parse_batch_create` validates a create body as the API does before it accepts a batch:
  `requests` holds 1 to 100,000 items, each with a `custom_id` unique in the batch and a
  `params` object. What `params` holds is not looked at: the API accepts a bad one and errors
  that request once the batch runs, with the message a Messages request would get (plus
  `batch_params_error`, what only batches refuse). Messages are pydantic's with a dotted path
  (`requests.0.custom_id: Field required`), as the API words them.
- `BatchRecord` is a batch as Parley keeps it; `message_batch` writes it as the API's
  `MessageBatch` object, `batch_page` a page of them, `deleted_message_batch` the answer to a
  delete. `parse_list_query` reads a list request's query.
- `result_line` writes one line of the results JSONL from one of the four results
  (`succeeded_result`, `errored_result`, `canceled_result`, `expired_result`).

Times are aware datetimes, in any zone; they are written in UTC with microseconds
(`2025-01-29T14:25:40.914571+00:00`), as the API writes them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import orjson

from .anthropic_types import load_json_object
from .errors import InvalidRequestError, RequestTooLargeError

__all__ = [
    "BATCH_LIFETIME",
    "CUSTOM_ID_PATTERN",
    "DEFAULT_LIST_LIMIT",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_REQUESTS",
    "MAX_LIST_LIMIT",
    "RESULTS_RETENTION",
    "BatchRecord",
    "BatchRequest",
    "ListQuery",
    "ProcessingStatus",
    "RequestCounts",
    "archived_as_of",
    "batch_page",
    "batch_params_error",
    "canceled_result",
    "check_batch_size",
    "deleted_message_batch",
    "errored_result",
    "expired_result",
    "message_batch",
    "parse_batch_create",
    "parse_list_query",
    "result_line",
    "results_path",
    "succeeded_result",
]

MAX_BATCH_BYTES = 256 * 1024 * 1024
MAX_BATCH_REQUESTS = 100_000
CUSTOM_ID_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
_MAX_CUSTOM_ID_LENGTH = 64
_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]+")  # fullmatch: `$` would let a trailing newline through

BATCH_LIFETIME = timedelta(hours=24)
"""From creation to `expires_at`: requests not yet sent to the model by then are `expired`."""
RESULTS_RETENTION = timedelta(days=29)
"""From creation (not from the end) to the archive, when results are no longer available."""

DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 1000
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")

ProcessingStatus = Literal["in_progress", "canceling", "ended"]


# --- create ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchRequest:
    custom_id: str
    params: dict[str, Any]  # a Messages request body, not yet validated


def check_batch_size(byte_count: int) -> None:
    """Refuse a create body over 256 MB (413 request_too_large)."""
    if byte_count > MAX_BATCH_BYTES:
        raise RequestTooLargeError("Request exceeds the maximum allowed number of bytes.")


def parse_batch_create(body: bytes | dict[str, Any]) -> list[BatchRequest]:
    """The requests of a create body (raw, or parsed JSON), or InvalidRequestError naming the
    first bad field in document order; duplicate custom_ids are looked for once every item is valid."""
    if isinstance(body, bytes):
        check_batch_size(len(body))
        body = load_json_object(body)
    if "requests" not in body:
        raise _refused("requests", "Field required")
    items = body["requests"]
    if not isinstance(items, list):
        raise _refused("requests", "Input should be a valid list")
    if not items:
        raise _refused("requests", "List should have at least 1 item after validation, not 0")
    if len(items) > MAX_BATCH_REQUESTS:
        raise _refused(
            "requests", f"List should have at most {MAX_BATCH_REQUESTS} items after validation, not {len(items)}"
        )
    requests = [_batch_request(item, f"requests.{index}") for index, item in enumerate(items)]
    seen: set[str] = set()
    for request in requests:
        if request.custom_id in seen:
            raise _refused(
                "requests",
                f"custom_id's must be unique within a batch. Duplicate custom_id found: {request.custom_id}",
            )
        seen.add(request.custom_id)
    return requests


def _batch_request(item: Any, path: str) -> BatchRequest:
    if not isinstance(item, dict):
        raise _refused(path, "Input should be a valid dictionary")
    return BatchRequest(custom_id=_custom_id(item, f"{path}.custom_id"), params=_params(item, f"{path}.params"))


def _custom_id(item: dict[str, Any], path: str) -> str:
    if "custom_id" not in item:
        raise _refused(path, "Field required")
    value = item["custom_id"]
    if not isinstance(value, str):
        raise _refused(path, "Input should be a valid string")
    if not value:
        raise _refused(path, "String should have at least 1 character")
    if len(value) > _MAX_CUSTOM_ID_LENGTH:
        raise _refused(path, f"String should have at most {_MAX_CUSTOM_ID_LENGTH} characters")
    if not _CUSTOM_ID.fullmatch(value):
        raise _refused(path, f"String should match pattern '{CUSTOM_ID_PATTERN}'")
    return value


def _params(item: dict[str, Any], path: str) -> dict[str, Any]:
    if "params" not in item:
        raise _refused(path, "Field required")
    value = item["params"]
    if not isinstance(value, dict):
        raise _refused(path, "Input should be a valid dictionary")
    return value


def _refused(path: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"{path}: {message}")


def batch_params_error(params: dict[str, Any]) -> str | None:
    """Why a batch refuses a request's params that a single Messages request would take, or None.

    The processor records it as `errored_result("invalid_request_error", message, None)` without
    running the request; everything else about params is the Messages validation's to judge."""
    if params.get("stream") is True:
        return '"stream=True" is not supported in the Message Batches API'
    return None


# --- the MessageBatch object -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestCounts:
    """Requests by status; they add up to the batch's requests at every moment."""

    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0

    @property
    def total(self) -> int:
        return self.processing + self.succeeded + self.errored + self.canceled + self.expired


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A batch as Parley keeps it. Its times are aware datetimes (a naive one is refused).

    `expires_at` and `archive_due_at` follow from `created_at`; `processing_status` from which
    of `cancel_initiated_at` and `ended_at` are set."""

    id: str
    account: str
    created_at: datetime
    request_counts: RequestCounts
    cancel_initiated_at: datetime | None = None
    ended_at: datetime | None = None
    archived_at: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("created_at", "cancel_initiated_at", "ended_at", "archived_at"):
            moment = getattr(self, name)
            if moment is not None and moment.utcoffset() is None:
                raise ValueError(f"BatchRecord.{name} must be an aware datetime, not {moment!r}")

    @property
    def request_count(self) -> int:
        return self.request_counts.total

    @property
    def expires_at(self) -> datetime:
        return self.created_at + BATCH_LIFETIME

    @property
    def archive_due_at(self) -> datetime:
        return self.created_at + RESULTS_RETENTION

    @property
    def processing_status(self) -> ProcessingStatus:
        if self.ended_at is not None:
            return "ended"
        if self.cancel_initiated_at is not None:
            return "canceling"
        return "in_progress"


def archived_as_of(record: BatchRecord, now: datetime) -> BatchRecord:
    """The record as it stands at `now`: archived (its results gone) once 29 days have passed
    since its creation."""
    if record.archived_at is None and now >= record.archive_due_at:
        return replace(record, archived_at=record.archive_due_at)
    return record


def results_path(batch_id: str) -> str:
    """The results route, relative: the SDKs join it to their base URL, stage prefix included."""
    return f"/v1/messages/batches/{batch_id}/results"


def message_batch(record: BatchRecord, results_url: str | None) -> dict[str, Any]:
    """The API's MessageBatch object, all 10 keys in the order the API sends them.
    `results_url` is shown only once the batch has ended (null before, as the API does)."""
    counts = record.request_counts
    status = record.processing_status
    return {
        "id": record.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": {
            "processing": counts.processing,
            "succeeded": counts.succeeded,
            "errored": counts.errored,
            "canceled": counts.canceled,
            "expired": counts.expired,
        },
        "ended_at": _rfc3339(record.ended_at),
        "created_at": _rfc3339(record.created_at),
        "expires_at": _rfc3339(record.expires_at),
        "archived_at": _rfc3339(record.archived_at),
        "cancel_initiated_at": _rfc3339(record.cancel_initiated_at),
        "results_url": results_url if status == "ended" else None,
    }


def _rfc3339(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def deleted_message_batch(batch_id: str) -> dict[str, str]:
    return {"id": batch_id, "type": "message_batch_deleted"}


# --- listing -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A page of batches, newest first: the `limit` just older than `after_id`, or the `limit`
    just newer than `before_id` (still newest first), or the newest `limit`."""

    after_id: str | None = None
    before_id: str | None = None
    limit: int = DEFAULT_LIST_LIMIT


def parse_list_query(query: Mapping[str, str]) -> ListQuery:
    """A list request's query (other parameters ignored), or InvalidRequestError naming the field.
    An empty cursor is no cursor."""
    after_id = query.get("after_id") or None
    before_id = query.get("before_id") or None
    if after_id is not None and before_id is not None:
        raise _refused("before_id", "cannot be given with after_id")
    return ListQuery(after_id=after_id, before_id=before_id, limit=_limit(query.get("limit")))


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIST_LIMIT
    try:
        limit = int(value) if _INTEGER.fullmatch(value) else None
    except ValueError:  # more digits than int() reads
        limit = None
    if limit is None:
        raise _refused("limit", "Input should be a valid integer, unable to parse string as an integer")
    if limit < 1:
        raise _refused("limit", "Input should be greater than or equal to 1")
    if limit > MAX_LIST_LIMIT:
        raise _refused("limit", f"Input should be less than or equal to {MAX_LIST_LIMIT}")
    return limit


def batch_page(
    records_newest_first: list[BatchRecord], results_url_of: Callable[[str], str | None], has_more: bool
) -> dict[str, Any]:
    """A list answer. `results_url_of` gives a batch id's results URL; `first_id` is the newest on
    the page, which is the cursor the SDKs send as `before_id` to page towards newer batches."""
    data = [message_batch(record, results_url_of(record.id)) for record in records_newest_first]
    return {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


# --- results -----------------------------------------------------------------------------------


def result_line(custom_id: str, result: dict[str, Any]) -> bytes:
    """One line of the results JSONL: compact JSON and `\\n`. JSON escapes every line break
    inside strings, so the only one is the last (a blank line or `\\r` breaks the Python SDK)."""
    return orjson.dumps({"custom_id": custom_id, "result": result}, option=orjson.OPT_APPEND_NEWLINE)


def succeeded_result(message: dict[str, Any]) -> dict[str, Any]:
    """`message` is the Messages API answer, as a non-streaming request gets it."""
    return {"type": "succeeded", "message": message}


def errored_result(error_type: str, message: str, request_id: str | None) -> dict[str, Any]:
    """An error body as the Messages API answers it, `request_id` always present: null when the
    request was refused before it ran, as the API does."""
    return {
        "type": "errored",
        "error": {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id},
    }


def canceled_result() -> dict[str, Any]:
    """A request not yet sent to the model when the batch was canceled."""
    return {"type": "canceled"}


def expired_result() -> dict[str, Any]:
    """A request not yet sent to the model when the batch reached its `expires_at`."""
    return {"type": "expired"}
