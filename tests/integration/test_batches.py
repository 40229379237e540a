"""The Message Batches API through the official Python SDK and raw HTTP, on a stack of its own
(its tables, bucket and queue; its process polls the queue): what a client sees of create,
retrieve, list, cancel, delete and results, refusals included; batch slots, batch price and
rate limits as a route's and a key's settings make them."""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import anthropic
import httpx
import orjson
import pytest

from parley.core.batches import BatchRecord, RequestCounts, parse_batch_create
from parley.core.ids import new_batch_id
from parley.core.metering import Limits, Prices
from parley.io.batch_objects import chunk_requests
from parley.io.keys import hash_key
from parley.io.routes import Route, Timeouts, Worker
from parley.settings import Settings
from parley.web.batch_runner import BatchRunner
from tests.fakeworker import Answer, FakeWorker
from tests.fakeworker.scripts import Gate
from tests.stack import RunningParley, parley_stack, tables_named

from .helpers import assert_error

NAME = "it-batches"
MODEL = "batch-model"
NO_BATCH_MODEL = "interactive-only"
SLOTS = 3
PRICES = Prices(input_per_mtok=4.0, output_per_mtok=20.0, batch_factor=0.25)
_NUMBER = re.compile(r"request (\w+)")
SAFETY_NET = Timeouts(connect=5.0, first_byte=20.0, idle=20.0, buffered=20.0)


@pytest.fixture(scope="module")
def stack(dynamodb: Any, batch_store_backends: Any, worker: FakeWorker) -> Iterator[RunningParley]:
    settings = Settings(
        **tables_named(NAME),
        **batch_store_backends.settings_for(NAME, visibility_seconds=3),
        batch_max_receives=2,
        batch_slot_patience_seconds=1.0,
    )
    routes = [
        Route(
            model=MODEL,
            workers=(Worker(base_url=worker.base_url, model="fake-model"),),
            prices=PRICES,
            batch_slots=SLOTS,
            timeouts=SAFETY_NET,
        ),
        Route(
            model=NO_BATCH_MODEL,
            workers=(Worker(base_url=worker.base_url, model="fake-model"),),
            batch_slots=0,
            timeouts=SAFETY_NET,
        ),
    ]
    with parley_stack(dynamodb, settings, routes, account="batch-acct", batch_backends=batch_store_backends) as running:
        yield running


@pytest.fixture
def client(stack: RunningParley) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key=stack.key, max_retries=0, timeout=30)


@pytest.fixture
def http(stack: RunningParley) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.url, headers={"x-api-key": stack.key, "anthropic-version": "2023-06-01"}, timeout=30
    ) as raw:
        yield raw


def _request(custom_id: str, **params: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "params": {
            "model": MODEL,
            "max_tokens": 32,
            "messages": [{"role": "user", "content": f"request {custom_id}"}],
            **params,
        },
    }


def _answer(body: Any) -> Answer:
    n = _NUMBER.search(str(body["messages"][-1]["content"])).group(1)
    return Answer(text=f"answer {n}", prompt_tokens=20, completion_tokens=5)


def _ended(client: anthropic.Anthropic, batch_id: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        assert time.monotonic() < deadline, f"{batch_id} did not end: {batch}"
        time.sleep(0.1)


# -- the life of a batch ----------------------------------------------------------------------------


def test_a_batch_runs_and_its_results_are_jsonl_in_request_order(client, http, worker):
    worker.responder = _answer
    batch = client.messages.batches.create(requests=[_request(f"r{n}") for n in range(12)])
    assert batch.id.startswith("msgbatch_") and batch.results_url is None
    assert (batch.expires_at - batch.created_at).total_seconds() == 24 * 3600

    ended = _ended(client, batch.id)
    assert ended.request_counts.succeeded == 12 and ended.request_counts.processing == 0
    assert ended.results_url == f"/v1/messages/batches/{batch.id}/results"

    results = list(client.messages.batches.results(batch.id))
    assert [r.custom_id for r in results] == [f"r{n}" for n in range(12)]
    assert [r.result.message.content[0].text for r in results] == [f"answer r{n}" for n in range(12)]
    assert all(r.result.message.model == MODEL for r in results)

    raw = http.get(f"/v1/messages/batches/{batch.id}/results")
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/x-jsonl"
    lines = raw.content.split(b"\n")
    assert lines[-1] == b"" and all(lines[:-1]), "one JSON object per line, no blank lines"
    assert [orjson.loads(line)["custom_id"] for line in lines[:-1]] == [f"r{n}" for n in range(12)]


def test_results_before_the_end_delete_in_progress_and_unknown_ids_are_refused_as_the_api_does(client, http, worker):
    release = threading.Event()
    worker.responder = lambda body: Gate(then=_answer(body), release=release)
    try:
        batch = client.messages.batches.create(requests=[_request("held")])
        assert worker.wait_for_requests(1, timeout=30)
        message = assert_error(http.get(f"/v1/messages/batches/{batch.id}/results"), 404, "not_found_error")
        assert message == f"Message Batch {batch.id} has no available results."
        message = assert_error(http.delete(f"/v1/messages/batches/{batch.id}"), 400, "invalid_request_error")
        assert message == "In progress batches cannot be deleted. Consider canceling the batch instead."
    finally:
        release.set()
    _ended(client, batch.id)
    unknown = "msgbatch_01NoSuchBatchHere000000"
    for response in (
        http.get(f"/v1/messages/batches/{unknown}"),
        http.post(f"/v1/messages/batches/{unknown}/cancel"),
        http.delete(f"/v1/messages/batches/{unknown}"),
        http.get(f"/v1/messages/batches/{unknown}/results"),
    ):
        assert assert_error(response, 404, "not_found_error") == f"Message Batch {unknown} not found."
    assert client.messages.batches.delete(batch.id).type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)


def test_another_accounts_batch_is_not_found(stack, client, http):
    batch = client.messages.batches.create(requests=[_request("mine")])
    other_key, _ = stack.services.keys.create(account="someone-else", name="other")
    other = anthropic.Anthropic(base_url=stack.url, api_key=other_key, max_retries=0)
    for call in (
        lambda: other.messages.batches.retrieve(batch.id),
        lambda: other.messages.batches.cancel(batch.id),
        lambda: list(other.messages.batches.results(batch.id)),
    ):
        with pytest.raises(anthropic.NotFoundError):
            call()
    assert batch.id not in [listed.id for listed in other.messages.batches.list()]
    _ended(client, batch.id)


def test_create_refuses_a_malformed_batch_naming_the_field(http):
    cases = [
        ({}, "requests: Field required"),
        ({"requests": []}, "requests: List should have at least 1 item after validation, not 0"),
        ({"requests": [{"params": {}}]}, "requests.0.custom_id: Field required"),
        (
            {"requests": [_request("ok"), {"custom_id": "bad id!", "params": {}}]},
            "requests.1.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'",
        ),
        (
            {"requests": [_request("twice"), _request("twice")]},
            "requests: custom_id's must be unique within a batch. Duplicate custom_id found: twice",
        ),
    ]
    for body, expected in cases:
        assert assert_error(http.post("/v1/messages/batches", json=body), 400, "invalid_request_error") == expected
    assert assert_error(http.post("/v1/messages/batches", content=b"[1]"), 400, "invalid_request_error")
    too_many = {"requests": [{"custom_id": f"c{n}", "params": {}} for n in range(100_001)]}
    message = assert_error(http.post("/v1/messages/batches", json=too_many), 400, "invalid_request_error")
    assert message == "requests: List should have at most 100000 items after validation, not 100001"


def test_list_pages_newest_first_through_the_sdk(client):
    made = [client.messages.batches.create(requests=[_request(f"list{n}")]).id for n in range(5)]
    page = client.messages.batches.list(limit=2)
    assert len(page.data) == 2 and page.has_more
    newest_first = [batch.id for batch in client.messages.batches.list(limit=2)]  # auto-paginated
    assert [batch_id for batch_id in newest_first if batch_id in made] == list(reversed(made))
    for batch_id in made:
        _ended(client, batch_id)


def test_requests_that_only_batches_refuse_and_bad_params_error_alone(client, worker):
    worker.responder = _answer
    batch = client.messages.batches.create(
        requests=[
            _request("good"),
            _request("streamed", stream=True),
            {"custom_id": "no-tokens", "params": {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}},
            _request("unknown-model", model="nobody-serves-this"),
            _request("not-for-batches", model=NO_BATCH_MODEL),
        ]
    )
    ended = _ended(client, batch.id)
    assert (ended.request_counts.succeeded, ended.request_counts.errored) == (1, 4)
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert results["good"].message.content[0].text == "answer good"
    errors = {
        custom_id: (r.error.error.type, r.error.error.message)
        for custom_id, r in results.items()
        if r.type == "errored"
    }
    assert errors == {
        "streamed": ("invalid_request_error", '"stream=True" is not supported in the Message Batches API'),
        "no-tokens": ("invalid_request_error", "max_tokens: Field required"),
        "unknown-model": ("not_found_error", "model: nobody-serves-this"),
        "not-for-batches": ("invalid_request_error", f"The model {NO_BATCH_MODEL} does not take message batches."),
    }
    assert results["streamed"].error.request_id is None, "refused by the batch itself, before it ran"
    assert len(worker.requests) == 1, "only the good request reached the worker"


# -- slots, cancel, price and limits ----------------------------------------------------------------


def test_batches_use_at_most_the_routes_slots_and_cancel_stops_new_requests(stack, client, worker):
    release = threading.Event()
    worker.responder = lambda body: Gate(then=_answer(body), release=release)
    try:
        batch = client.messages.batches.create(requests=[_request(f"c{n}") for n in range(40)])
        assert worker.wait_for_requests(SLOTS, timeout=30)
        assert not worker.wait_for_requests(SLOTS + 1, timeout=2.0), "more calls in flight than the route's slots"
        assert stack.services.batch_slots.taken(MODEL, SLOTS) == SLOTS
        canceling = client.messages.batches.cancel(batch.id)
        assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    finally:
        release.set()
    ended = _ended(client, batch.id)
    counts = ended.request_counts
    # What was in flight when the cancel came finished; nothing else was sent.
    assert len(worker.requests) == SLOTS
    assert (counts.succeeded, counts.canceled, counts.errored) == (SLOTS, 40 - SLOTS, 0)
    results = list(client.messages.batches.results(batch.id))
    assert [r.result.type for r in results].count("canceled") == 40 - SLOTS
    assert stack.services.batch_slots.taken(MODEL, SLOTS) == 0, "every slot given back"
    assert client.messages.batches.cancel(batch.id).processing_status == "ended", "cancel of an ended batch"


def test_each_request_is_metered_once_at_the_batch_price_and_rate_limits_do_not_hold_it(stack, client, worker):
    worker.responder = _answer
    key, record = stack.services.keys.create(
        account="batch-acct", name="slow key", limits=Limits(requests_per_minute=1, tokens_per_minute=10)
    )
    limited = anthropic.Anthropic(base_url=stack.url, api_key=key, max_retries=0)
    batch = limited.messages.batches.create(requests=[_request(f"p{n}") for n in range(6)])
    assert _ended(limited, batch.id).request_counts.succeeded == 6
    assert stack.services.metered()
    usage = stack.services.usage
    for n in range(6):
        row = usage.record_of(f"{batch.id}-{n}")
        assert row is not None and row["batch"] is True and row["key_id"] == record.key_id
        assert (int(row["input_tokens"]), int(row["output_tokens"])) == (20, 5)
        assert int(row["cost_micros"]) == round((20 * 4.0 + 5 * 20.0) * 0.25)
    assert usage.record_of(f"{batch.id}-6") is None


def test_a_revoked_keys_batch_errors_its_remaining_requests(stack, client, worker):
    release = threading.Event()
    worker.responder = lambda body: Gate(then=_answer(body), release=release)
    key, record = stack.services.keys.create(account="batch-acct", name="to revoke")
    revocable = anthropic.Anthropic(base_url=stack.url, api_key=key, max_retries=0)
    try:
        batch = revocable.messages.batches.create(requests=[_request(f"k{n}") for n in range(SLOTS + 2)])
        assert worker.wait_for_requests(SLOTS, timeout=30)
        stack.services.keys.revoke(record.key_id)  # clears this instance's key cache
    finally:
        release.set()
    ended = _ended(client, batch.id)  # another key of the same account sees the batch
    assert ended.request_counts.succeeded == SLOTS and ended.request_counts.errored == 2
    errored = [r.result.error.error for r in client.messages.batches.results(batch.id) if r.result.type == "errored"]
    assert [(e.type, e.message) for e in errored] == [("authentication_error", "This API key has been revoked.")] * 2


# -- expiry and chunks that keep failing ------------------------------------------------------------


def test_requests_not_run_within_24_hours_expire(stack, client, worker):
    services = stack.services
    requests = parse_batch_create({"requests": [_request(f"late{n}") for n in range(3)]})
    body, chunks = chunk_requests(requests)
    created = datetime.now(timezone.utc) - timedelta(hours=24, seconds=1)
    record = BatchRecord(new_batch_id(), "batch-acct", created, RequestCounts(processing=3))
    services.batch_objects.put_requests(record.id, body)
    services.batches.create(record, hash_key(stack.key), len(chunks))
    services.batch_queue.send(record.id, chunks)  # as if its chunks had waited in the queue all day

    ended = _ended(client, record.id)
    assert (ended.request_counts.expired, ended.request_counts.succeeded) == (3, 0)
    assert [r.result.type for r in client.messages.batches.results(record.id)] == ["expired"] * 3
    assert worker.requests == []


def test_a_chunk_that_fails_every_delivery_errors_what_is_left_of_it_and_the_batch_ends(client, worker, monkeypatch):
    worker.responder = _answer
    run_request = BatchRunner._run_request

    async def poisoned(self, state, index, request, deadline):
        if request.custom_id == "poison":
            raise RuntimeError("a request Parley cannot run")
        return await run_request(self, state, index, request, deadline)

    monkeypatch.setattr(BatchRunner, "_run_request", poisoned)
    batch = client.messages.batches.create(requests=[_request(name) for name in ("a", "b", "poison", "c")])
    ended = _ended(client, batch.id)
    assert (ended.request_counts.succeeded, ended.request_counts.errored) == (3, 1)
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert results["poison"].error.error.type == "api_error"
    assert results["poison"].error.error.message == (
        "Parley could not run this request: its part of the batch failed 2 times."
    )
    assert [results[name].message.content[0].text for name in ("a", "b", "c")] == ["answer a", "answer b", "answer c"]
    assert len(worker.requests) == 3, "the requests that had finished did not run again"


def test_while_other_instances_hold_every_slot_a_chunk_goes_back_and_runs_once_they_are_free(
    stack, client, worker, monkeypatch
):
    worker.responder = _answer
    given_back: list[str] = []
    run_chunk = BatchRunner.run_chunk

    async def watched(self, message, deadline=None):
        done = await run_chunk(self, message, deadline)
        if not done:
            given_back.append(message.batch_id)
        return done

    monkeypatch.setattr(BatchRunner, "run_chunk", watched)
    slots = stack.services.batch_slots
    held = [slots.try_take(MODEL, SLOTS, 600) for _ in range(SLOTS)]  # as other instances' calls would
    assert all(held) and slots.try_take(MODEL, SLOTS, 600) is None
    try:
        batch = client.messages.batches.create(requests=[_request(f"w{n}") for n in range(5)])
        # The chunk waits a second for a slot, goes back to the queue, comes back 3 s later: twice.
        deadline = time.monotonic() + 60
        while given_back.count(batch.id) < 2:
            assert time.monotonic() < deadline, "the chunk never came back"
            time.sleep(0.1)
        assert worker.requests == [] and client.messages.batches.retrieve(batch.id).request_counts.processing == 5
    finally:
        for lease in held:
            slots.give_back(lease)
    ended = _ended(client, batch.id)
    assert ended.request_counts.succeeded == 5 and len(worker.requests) == 5
