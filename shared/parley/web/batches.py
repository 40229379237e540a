"""The Message Batches API, `/v1/messages/batches` (docs/batches.md): create, retrieve, list,
cancel, delete, and the results JSONL. Batches are the key's account's; another account's
batch is not found. The requests run later, in web/batch_runner.py."""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import iterate_in_threadpool
from starlette.responses import Response, StreamingResponse

from ..core.batches import (
    MAX_BATCH_BYTES,
    BatchRecord,
    RequestCounts,
    archived_as_of,
    batch_page,
    deleted_message_batch,
    message_batch,
    parse_batch_create,
    parse_list_query,
    results_path,
)
from ..core.errors import ApiError, InvalidRequestError, NotFoundError
from ..core.ids import new_batch_id
from ..io.batch_objects import chunk_requests
from ..io.batches import BatchNotFoundError
from ..io.keys import KeyRecord
from .dependencies import authenticate, read_body, services_of, store_call
from .responses import json_response
from .services import Services

__all__ = ["BATCHES_PATH", "router"]

router = APIRouter()
BATCHES_PATH = "/v1/messages/batches"
JSONL = "application/x-jsonl"


def _batch_services(request: Request) -> Services:
    services = services_of(request)
    if not services.batches_enabled:
        raise NotFoundError("Message batches are not enabled on this Parley (no batch bucket and queue are set).")
    return services


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _shown(record: BatchRecord) -> dict:
    return message_batch(archived_as_of(record, _now()), results_path(record.id))


def _not_found(batch_id: str) -> NotFoundError:
    return NotFoundError(f"Message Batch {batch_id} not found.")


async def _batch(services: Services, batch_id: str, key: KeyRecord) -> BatchRecord:
    record = await store_call(services.batches.get, batch_id, key.account)
    if record is None:
        raise _not_found(batch_id)
    return record


@router.post(BATCHES_PATH)
async def create_batch(request: Request, key: KeyRecord = Depends(authenticate)) -> Response:
    services = _batch_services(request)
    requests = parse_batch_create(await read_body(request, MAX_BATCH_BYTES))
    body, chunks = chunk_requests(requests)
    record = BatchRecord(new_batch_id(), key.account, _now(), RequestCounts(processing=len(requests)))
    # The requests first, then the batch, then its chunks on the queue: a chunk never arrives
    # before its batch. A batch whose chunks could not all be queued is taken back.
    await store_call(services.batch_objects.put_requests, record.id, body)  # type: ignore[union-attr]
    await store_call(services.batches.create, record, key.key_hash, len(chunks))
    try:
        await store_call(services.batch_queue.send, record.id, chunks)  # type: ignore[union-attr]
    except (ApiError, RuntimeError):
        await store_call(services.batches.delete, record.id, key.account)
        raise ApiError("The batch could not be queued; nothing was kept. Try again.", should_retry=True) from None
    return json_response(_shown(record))


@router.get(BATCHES_PATH)
async def list_batches(request: Request, key: KeyRecord = Depends(authenticate)) -> Response:
    services = _batch_services(request)
    query = parse_list_query(request.query_params)
    try:
        records, has_more = await store_call(services.batches.list, key.account, query)
    except BatchNotFoundError:
        raise _not_found(query.after_id or query.before_id or "") from None
    now = _now()
    page = batch_page([archived_as_of(record, now) for record in records], results_path, has_more)
    return json_response(page)


@router.get(BATCHES_PATH + "/{batch_id}")
async def retrieve_batch(batch_id: str, request: Request, key: KeyRecord = Depends(authenticate)) -> Response:
    return json_response(_shown(await _batch(_batch_services(request), batch_id, key)))


@router.post(BATCHES_PATH + "/{batch_id}/cancel")
async def cancel_batch(batch_id: str, request: Request, key: KeyRecord = Depends(authenticate)) -> Response:
    services = _batch_services(request)
    record = await store_call(services.batches.cancel, batch_id, key.account, _now())
    if record is None:
        raise _not_found(batch_id)
    return json_response(_shown(record))


@router.delete(BATCHES_PATH + "/{batch_id}")
async def delete_batch(batch_id: str, request: Request, key: KeyRecord = Depends(authenticate)) -> Response:
    services = _batch_services(request)
    record = await _batch(services, batch_id, key)
    if record.processing_status != "ended":
        raise InvalidRequestError("In progress batches cannot be deleted. Consider canceling the batch instead.")
    if not await store_call(services.batches.delete, batch_id, key.account):
        raise _not_found(batch_id)
    await store_call(services.batch_objects.delete, batch_id)  # type: ignore[union-attr]
    return json_response(deleted_message_batch(batch_id))


@router.get(BATCHES_PATH + "/{batch_id}/results")
async def batch_results(batch_id: str, request: Request, key: KeyRecord = Depends(authenticate)) -> Response:
    services = _batch_services(request)
    record = archived_as_of(await _batch(services, batch_id, key), _now())
    if record.processing_status != "ended" or record.archived_at is not None:
        raise NotFoundError(f"Message Batch {batch_id} has no available results.")
    pieces = await store_call(services.batch_objects.results, batch_id)  # type: ignore[union-attr]
    if pieces is None:  # ended a moment ago, or its object is gone: the table has every result
        pieces = services.batches.result_lines(batch_id)
    return StreamingResponse(iterate_in_threadpool(pieces), media_type=JSONL)  # pages read off the event loop
