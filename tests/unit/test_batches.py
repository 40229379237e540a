"""Message Batches in Anthropic's shapes: create bodies in → their requests or the exact refusal;
records in → MessageBatch objects and pages; results in → JSONL lines. Every shape is also read
back by the official Python SDK's own types and JSONL decoder."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from anthropic import BaseModel as SdkModel
from anthropic._decoders.jsonl import JSONLDecoder
from anthropic.pagination import SyncPage
from anthropic.types import shared as sdk_shared
from anthropic.types.messages import DeletedMessageBatch, MessageBatch, MessageBatchIndividualResponse
from anthropic.types.messages import message_batch_result as sdk_results

from parley.core import batches
from parley.core.batches import (
    MAX_BATCH_BYTES,
    MAX_BATCH_REQUESTS,
    BatchRecord,
    RequestCounts,
    archived_as_of,
    batch_page,
    batch_params_error,
    check_batch_size,
    deleted_message_batch,
    message_batch,
    parse_batch_create,
    parse_list_query,
    result_line,
    results_path,
)
from parley.core.errors import ParleyError, RequestTooLargeError
from parley.core.ids import new_batch_id
from tests.vectors.loader import VECTORS, load

BATCHES = VECTORS / "batches"
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def cases(name: str, key: str = "cases") -> list[Any]:
    found = load(BATCHES / name)[key]
    return [pytest.param(case, id=case.get("name") or str(index)) for index, case in enumerate(found)]


def record_of(document: dict[str, Any]) -> BatchRecord:
    def moment(name: str) -> datetime | None:
        return datetime.fromisoformat(document[name]) if document.get(name) else None

    return BatchRecord(
        id=document["id"],
        account=document["account"],
        created_at=datetime.fromisoformat(document["created_at"]),
        request_counts=RequestCounts(**document["request_counts"]),
        cancel_initiated_at=moment("cancel_initiated_at"),
        ended_at=moment("ended_at"),
        archived_at=moment("archived_at"),
    )


def extra_fields(model: SdkModel, path: str = "") -> list[str]:
    """Fields the SDK type does not declare, anywhere inside `model` (a misspelt key lands here)."""
    found = [f"{path}{name}" for name in model.model_extra or {}]
    for name in type(model).model_fields:
        values = getattr(model, name)
        for index, value in enumerate(values if isinstance(values, list) else [values]):
            if isinstance(value, SdkModel):
                found += extra_fields(value, f"{path}{name}[{index}].")
    return found


def test_the_module_exports_what_it_means_to():
    assert sorted(batches.__all__) == sorted(
        [
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
    )
    assert all(hasattr(batches, name) for name in batches.__all__)


def test_batch_ids_have_the_apis_shape_and_never_repeat():
    ids = [new_batch_id() for _ in range(2000)]
    assert all(re.fullmatch(f"msgbatch_01[{_BASE58}]{{22}}", value) for value in ids), ids[:3]
    assert len(set(ids)) == len(ids)


# --- create ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("create_errors.json"))
def test_a_create_body_the_api_refuses_gets_its_exact_answer(case: dict[str, Any]) -> None:
    bodies: list[Any] = [case["raw"].encode()] if "raw" in case else [json.dumps(case["body"]).encode()]
    if isinstance(case.get("body"), dict):
        bodies.append(case["body"])
    for body in bodies:
        with pytest.raises(ParleyError) as raised:
            parse_batch_create(body)
        error = raised.value
        assert (error.status, error.type, error.message) == (case["status"], case["type"], case["message"])


@pytest.mark.parametrize("case", cases("create_accepted.json"))
def test_a_create_body_the_api_accepts_gives_its_requests_in_order(case: dict[str, Any]) -> None:
    for body in (json.dumps(case["body"]).encode(), case["body"]):
        requests = parse_batch_create(body)
        assert [[request.custom_id, request.params] for request in requests] == case["expected"]


def test_a_batch_holds_at_most_100000_requests():
    def body(count: int) -> dict[str, Any]:
        return {"requests": [{"custom_id": f"r{index}", "params": {}} for index in range(count)]}

    assert len(parse_batch_create(body(MAX_BATCH_REQUESTS))) == MAX_BATCH_REQUESTS
    with pytest.raises(ParleyError) as raised:
        parse_batch_create(body(MAX_BATCH_REQUESTS + 1))
    assert (raised.value.status, raised.value.message) == (
        400,
        "requests: List should have at most 100000 items after validation, not 100001",
    )


def test_a_body_over_256_mb_is_refused_before_it_is_read():
    assert MAX_BATCH_BYTES == 256 * 1024 * 1024
    check_batch_size(MAX_BATCH_BYTES)
    for refuse in (
        lambda: check_batch_size(MAX_BATCH_BYTES + 1),
        lambda: parse_batch_create(bytes(MAX_BATCH_BYTES + 1)),
    ):
        with pytest.raises(RequestTooLargeError) as raised:
            refuse()
        assert (raised.value.status, raised.value.type) == (413, "request_too_large")
        assert raised.value.message == "Request exceeds the maximum allowed number of bytes."


def test_only_a_streaming_request_is_refused_by_the_batch_itself():
    streaming = {"model": "claude-opus-4-7", "max_tokens": 8, "stream": True, "messages": []}
    assert batch_params_error(streaming) == '"stream=True" is not supported in the Message Batches API'
    for params in ({}, {"stream": False}, {"stream": "true"}, {"stream": 1}, {"max_tokens": 0}):
        assert batch_params_error(params) is None, params  # the Messages validation's to judge


# --- the MessageBatch object -------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("message_batch.json"))
def test_a_record_is_written_as_the_apis_message_batch(case: dict[str, Any]) -> None:
    record = record_of(case["record"])
    written = message_batch(record, case["results_url"])
    assert written == case["expected"]
    assert list(written) == list(case["expected"]) and len(written) == 10  # the API's order, every key
    assert list(written["request_counts"]) == ["processing", "succeeded", "errored", "canceled", "expired"]

    read = MessageBatch.model_validate(json.loads(json.dumps(written)))
    assert extra_fields(read) == []
    assert read.created_at == record.created_at and read.expires_at == record.created_at + timedelta(hours=24)
    assert (read.ended_at, read.archived_at) == (record.ended_at, record.archived_at)
    assert read.cancel_initiated_at == record.cancel_initiated_at
    assert read.request_counts.model_dump() == written["request_counts"]


def test_the_status_follows_from_cancel_and_end():
    created = datetime(2026, 1, 1, tzinfo=timezone.utc)
    record = BatchRecord("msgbatch_01a", "acct", created, RequestCounts(processing=2))
    assert record.processing_status == "in_progress" and record.request_count == 2
    canceling = BatchRecord("msgbatch_01a", "acct", created, RequestCounts(processing=2), cancel_initiated_at=created)
    assert canceling.processing_status == "canceling"
    ended = BatchRecord("msgbatch_01a", "acct", created, RequestCounts(succeeded=1, canceled=1), created, created)
    assert ended.processing_status == "ended" and ended.request_count == 2


def test_a_record_refuses_a_time_without_a_zone():
    naive = datetime(2026, 1, 1)
    with pytest.raises(ValueError, match="created_at"):
        BatchRecord("msgbatch_01a", "acct", naive, RequestCounts(processing=1))
    with pytest.raises(ValueError, match="ended_at"):
        BatchRecord("msgbatch_01a", "acct", naive.replace(tzinfo=timezone.utc), RequestCounts(), ended_at=naive)


def test_results_are_archived_29_days_after_creation_not_after_the_end():
    created = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    ended = created + timedelta(hours=23)
    record = BatchRecord("msgbatch_01a", "acct", created, RequestCounts(succeeded=1), ended_at=ended)
    due = created + timedelta(days=29)
    assert record.expires_at == created + timedelta(hours=24) and record.archive_due_at == due
    assert archived_as_of(record, due - timedelta(microseconds=1)) is record
    assert archived_as_of(record, due).archived_at == due
    later = archived_as_of(record, due + timedelta(days=400))
    assert later.archived_at == due and message_batch(later, "/r")["archived_at"] == "2026-01-30T12:00:00.123456+00:00"
    assert archived_as_of(later, due + timedelta(days=800)) is later


def test_a_deleted_batch_is_the_sdks_deleted_message_batch():
    written = deleted_message_batch("msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d")
    assert written == {"id": "msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d", "type": "message_batch_deleted"}
    assert extra_fields(DeletedMessageBatch.model_validate(written)) == []


def test_the_results_path_is_the_documented_route():
    assert results_path("msgbatch_01a") == "/v1/messages/batches/msgbatch_01a/results"


# --- listing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("list.json", "queries"))
def test_a_list_query_reads_as_its_page_or_is_refused(case: dict[str, Any]) -> None:
    if "error" in case:
        with pytest.raises(ParleyError) as raised:
            parse_list_query(case["query"])
        assert (raised.value.status, raised.value.type, raised.value.message) == (
            400,
            "invalid_request_error",
            case["error"],
        )
    else:
        query = parse_list_query(case["query"])
        assert {"after_id": query.after_id, "before_id": query.before_id, "limit": query.limit} == case["expected"]


def test_a_limit_too_long_to_read_is_refused():
    with pytest.raises(ParleyError, match="limit: Input should be a valid integer"):
        parse_list_query({"limit": "9" * 5000})


@pytest.mark.parametrize("case", cases("list.json", "pages"))
def test_a_page_is_the_sdks_page_of_message_batches(case: dict[str, Any]) -> None:
    records = [record_of(document) for document in case["records"]]
    written = batch_page(records, results_path, case["has_more"])
    assert written == case["expected"]
    assert list(written) == ["data", "has_more", "first_id", "last_id"]

    page = SyncPage[MessageBatch].model_validate(json.loads(json.dumps(written)))
    assert [batch.id for batch in page.data] == [record.id for record in records]
    assert all(isinstance(batch, MessageBatch) and extra_fields(batch) == [] for batch in page.data)
    assert (page.has_more, page.first_id, page.last_id) == (case["has_more"], written["first_id"], written["last_id"])


# --- results -----------------------------------------------------------------------------------


def result_of(call: list[Any]) -> dict[str, Any]:
    constructor, *arguments = call
    return getattr(batches, constructor)(*arguments)


@pytest.mark.parametrize("case", cases("results.json"))
def test_a_result_is_written_as_its_exact_line(case: dict[str, Any]) -> None:
    line = result_line(case["custom_id"], result_of(case["call"]))
    assert line == case["line"].encode()
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and b"\r" not in line

    read = MessageBatchIndividualResponse.model_validate(json.loads(line))
    assert read.custom_id == case["custom_id"] and extra_fields(read) == []
    assert type(read.result).__name__ == case["sdk"][0]
    if read.result.type == "errored":
        assert type(read.result.error.error).__name__ == case["sdk"][1]
        assert "request_id" in json.loads(line)["result"]["error"]  # TypeScript's ErrorResponse requires it


@pytest.mark.parametrize("chunk_size", [64, 1, 7, 1 << 20])  # 64: what the SDK reads the body in
def test_the_sdks_own_jsonl_decoder_reads_every_line(chunk_size: int) -> None:
    vectors = load(BATCHES / "results.json")["cases"]
    body = b"".join(result_line(case["custom_id"], result_of(case["call"])) for case in vectors)
    chunks = [body[start : start + chunk_size] for start in range(0, len(body), chunk_size)]
    decoder = JSONLDecoder(
        raw_iterator=iter(chunks),
        line_type=MessageBatchIndividualResponse,
        http_response=None,  # type: ignore[arg-type]  # only close() uses it
    )
    read = list(decoder)
    assert [line.custom_id for line in read] == [case["custom_id"] for case in vectors]
    for line, case in zip(read, vectors, strict=True):
        assert isinstance(line, MessageBatchIndividualResponse)
        assert isinstance(line.result, getattr(sdk_results, case["sdk"][0]))
        if len(case["sdk"]) > 1:
            assert isinstance(line.result.error, sdk_shared.ErrorResponse)
            assert type(line.result.error.error).__name__ == case["sdk"][1]
            assert line.result.error.request_id == case["call"][3]
    assert read[-1].result.message.content[0].text == "one\r\ntwo\nthree\rfour\u2028five\x1csix\tdéjà vu"
