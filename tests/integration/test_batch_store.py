"""Message batches in DynamoDB Local (io/batches.py): batches kept per account, listed newest first
and paged both ways as the SDKs page, canceled and ended once, each request finished exactly once
(also when processors race), results streamed back in order, and a batch deleted with all it has."""

from __future__ import annotations

import os
import random
import secrets
import threading
from datetime import datetime, timedelta, timezone

import pytest

from parley.core.batches import (
    RESULTS_RETENTION,
    BatchRecord,
    ListQuery,
    RequestCounts,
    batch_page,
    canceled_result,
    errored_result,
    expired_result,
    result_line,
    succeeded_result,
)
from parley.core.ids import new_batch_id
from parley.io.batches import (
    MAX_RESULT_BYTES,
    BatchExistsError,
    BatchNotFoundError,
    BatchStore,
    ResultTooLargeError,
    StoredBatch,
)
from parley.io.tables import create_tables
from tests.dynamodb_faults import DynamoDBFaults
from tests.stack import dynamodb_client

NOW = datetime(2027, 3, 1, 12, 0, 0, 914571, tzinfo=timezone.utc)
TABLE = f"batches-{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def store(dynamodb) -> BatchStore:
    create_tables(dynamodb, {"batches": TABLE})
    return BatchStore(dynamodb, TABLE)


def _account(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}"


def _new(store: BatchStore, account: str, requests: int = 3, created_at: datetime = NOW) -> BatchRecord:
    record = BatchRecord(new_batch_id(), account, created_at, RequestCounts(processing=requests))
    store.create(record, key_hash="hash-1", chunks=1)
    return record


def _message(text: str) -> dict:
    return {
        "id": "msg_01" + secrets.token_hex(8),
        "type": "message",
        "role": "assistant",
        "model": "parley-demo",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 2},
    }


def _items(dynamodb, partition: str) -> list[dict]:
    return dynamodb.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": partition}},
        ConsistentRead=True,
    )["Items"]


# -- create and get -------------------------------------------------------------------------------


def test_a_batch_is_kept_whole_and_only_its_account_sees_it(dynamodb, store):
    account = _account("owner")
    record = BatchRecord(new_batch_id(), account, NOW, RequestCounts(processing=7))
    store.create(record, key_hash="hash-7", chunks=2)

    assert store.get(record.id, account) == record
    assert store.get(record.id, _account("stranger")) is None
    assert store.get(new_batch_id(), account) is None
    assert store.get_any(record.id) == StoredBatch(record, "hash-7", 2)
    assert store.get_any(new_batch_id()) is None
    with pytest.raises(BatchExistsError):
        store.create(record, key_hash="hash-7", chunks=2)

    [batch] = _items(dynamodb, f"batch#{record.id}")
    assert batch["created_at"] == {"N": "1803902400.914571"}, "epoch seconds with exactly the microseconds"
    assert batch["expires_at"] == {"N": str(int((NOW + RESULTS_RETENTION).timestamp()))}
    assert {name: batch[name]["N"] for name in ("request_count", "succeeded", "errored", "canceled", "expired")} == {
        "request_count": "7",
        "succeeded": "0",
        "errored": "0",
        "canceled": "0",
        "expired": "0",
    }
    [listing] = _items(dynamodb, f"account#{account}")
    assert listing["sk"]["S"] == f"batch#2027-03-01T12:00:00.914571Z#{record.id}"
    assert listing["expires_at"] == batch["expires_at"]


def test_the_table_expires_its_items(dynamodb, store):
    described = dynamodb.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert described["AttributeName"] == "expires_at" and described["TimeToLiveStatus"] in ("ENABLED", "ENABLING")


def test_times_in_any_zone_come_back_as_the_same_instant(store):
    account = _account("zones")
    plus_five = timezone(timedelta(hours=5, minutes=30))
    record = _new(store, account, created_at=datetime(2027, 1, 2, 3, 4, 5, 999999, tzinfo=plus_five))
    kept = store.get(record.id, account)
    assert kept == record and kept.created_at.microsecond == 999999


# -- listing --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def listed(store) -> tuple[str, list[str]]:
    """45 batches of one account, oldest first (two in the same microsecond), among another's."""
    account, other = _account("lister"), _account("neighbour")
    records = []
    for index in range(45):
        created = NOW + timedelta(seconds=index // 2 * 7, microseconds=index // 2)
        records.append(_new(store, account, created_at=created))
        _new(store, other, created_at=created + timedelta(microseconds=1))
    return account, [record.id for record in sorted(records, key=lambda record: (record.created_at, record.id))]


def _page(store: BatchStore, account: str, **query) -> dict:
    records, has_more = store.list(account, ListQuery(**query))
    return batch_page(records, lambda _: None, has_more)


def test_an_account_lists_its_batches_newest_first_and_pages_back_and_forth(store, listed):
    account, oldest_first = listed
    newest_first = oldest_first[::-1]
    ids = lambda page: [batch["id"] for batch in page["data"]]  # noqa: E731

    first = _page(store, account, limit=20)
    assert (ids(first), first["has_more"]) == (newest_first[:20], True)
    second = _page(store, account, after_id=first["last_id"], limit=20)
    assert (ids(second), second["has_more"]) == (newest_first[20:40], True)
    third = _page(store, account, after_id=second["last_id"], limit=20)
    assert (ids(third), third["has_more"]) == (newest_first[40:], False)

    back = _page(store, account, before_id=third["first_id"], limit=20)
    assert (ids(back), back["has_more"]) == (newest_first[20:40], True), "just newer than the cursor, newest first"
    start = _page(store, account, before_id=back["first_id"], limit=20)
    assert (ids(start), start["has_more"]) == (newest_first[:20], False)

    nearer = _page(store, account, before_id=newest_first[25], limit=20)
    assert (ids(nearer), nearer["has_more"]) == (newest_first[5:25], True)
    assert ids(_page(store, account, before_id=newest_first[3], limit=20)) == newest_first[:3]
    assert _page(store, account, before_id=newest_first[0])["data"] == []
    tail = _page(store, account, after_id=newest_first[-1])
    assert (tail["data"], tail["has_more"]) == ([], False)
    everything = _page(store, account, limit=1000)
    assert (ids(everything), everything["has_more"]) == (newest_first, False)
    exact = _page(store, account, limit=45)
    assert (len(exact["data"]), exact["has_more"]) == (45, False)


def test_a_cursor_that_is_not_one_of_the_accounts_batches_is_not_found(store, listed):
    account, ids = listed
    stranger = _account("stranger")
    for query in (ListQuery(after_id=new_batch_id()), ListQuery(before_id=new_batch_id())):
        with pytest.raises(BatchNotFoundError):
            store.list(account, query)
    for query in (ListQuery(after_id=ids[10]), ListQuery(before_id=ids[10])):
        with pytest.raises(BatchNotFoundError):
            store.list(stranger, query)
    assert store.list(stranger, ListQuery()) == ([], False)
    with pytest.raises(ValueError):
        store.list(account, ListQuery(after_id=ids[10], before_id=ids[20]))


# -- cancel and end -------------------------------------------------------------------------------


def test_a_cancel_is_started_once_and_never_after_the_batch_ended(store):
    account = _account("cancel")
    record = _new(store, account)
    canceling = store.cancel(record.id, account, NOW + timedelta(minutes=1))
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at == NOW + timedelta(minutes=1)
    again = store.cancel(record.id, account, NOW + timedelta(minutes=2))
    assert again == canceling, "idempotent: the first cancel's time stays"
    assert store.cancel(record.id, _account("stranger"), NOW) is None
    assert store.cancel(new_batch_id(), account, NOW) is None
    assert store.get(record.id, account) == canceling

    ended = _new(store, account, requests=1)
    assert store.finish_request(ended.id, 0, "only", "succeeded", succeeded_result(_message("done")), NOW)
    assert store.end(ended.id, NOW + timedelta(minutes=3))
    after = store.cancel(ended.id, account, NOW + timedelta(minutes=4))
    assert after.processing_status == "ended" and after.cancel_initiated_at is None
    assert after.ended_at == NOW + timedelta(minutes=3)


def test_a_batch_ends_only_once_every_request_is_counted(store):
    account = _account("end")
    record = _new(store, account, requests=4)
    results = [
        ("succeeded", succeeded_result(_message("yes"))),
        ("errored", errored_result("invalid_request_error", "max_tokens: Field required", None)),
        ("canceled", canceled_result()),
    ]
    for index, (kind, result) in enumerate(results):
        assert not store.end(record.id, NOW)
        assert store.finish_request(record.id, index, f"r{index}", kind, result, NOW)
    assert not store.end(record.id, NOW)
    assert store.get(record.id, account).request_counts == RequestCounts(1, 1, 1, 1, 0)
    assert store.finish_request(record.id, 3, "r3", "expired", expired_result(), NOW)

    assert store.end(record.id, NOW + timedelta(hours=1))
    assert store.end(record.id, NOW + timedelta(hours=2)), "idempotent"
    ended = store.get(record.id, account)
    assert ended.ended_at == NOW + timedelta(hours=1) and ended.processing_status == "ended"
    assert ended.request_counts == RequestCounts(0, 1, 1, 1, 1)
    with pytest.raises(BatchNotFoundError):
        store.end(new_batch_id(), NOW)


# -- finishing requests ---------------------------------------------------------------------------


def test_a_request_is_finished_exactly_once(store):
    account = _account("once")
    record = _new(store, account, requests=2)
    result = succeeded_result(_message("first"))
    assert store.finish_request(record.id, 0, "a", "succeeded", result, NOW)
    assert not store.finish_request(record.id, 0, "a", "succeeded", succeeded_result(_message("again")), NOW)
    assert not store.finish_request(record.id, 0, "a", "errored", errored_result("api_error", "x", None), NOW)
    assert store.get(record.id, account).request_counts == RequestCounts(processing=1, succeeded=1)
    assert list(store.results(record.id)) == [(0, "a", result)], "the first result stays"

    with pytest.raises(ValueError):
        store.finish_request(record.id, 2, "c", "succeeded", result, NOW)  # past its requests
    with pytest.raises(ValueError):
        store.finish_request(record.id, 1, "b", "errored", result, NOW)  # not an errored result
    with pytest.raises(BatchNotFoundError):
        store.finish_request(new_batch_id(), 0, "a", "succeeded", result, NOW)
    assert store.get(record.id, account).request_counts == RequestCounts(processing=1, succeeded=1)


def test_processors_racing_on_one_request_finish_it_once(store):
    account = _account("race")
    record = _new(store, account, requests=3)
    start = threading.Barrier(8)
    answers: list[bool] = []

    def finish(worker: int) -> None:
        start.wait()
        result = errored_result("api_error", f"processor {worker}", None)
        answers.append(store.finish_request(record.id, 1, "same", "errored", result, NOW))

    threads = [threading.Thread(target=finish, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [False] * 7 + [True]
    assert store.get(record.id, account).request_counts == RequestCounts(processing=2, errored=1)
    [(index, custom_id, result)] = store.results(record.id)
    assert (index, custom_id) == (1, "same") and result["error"]["error"]["message"].startswith("processor ")


def test_processors_racing_through_a_whole_batch_count_it_exactly(store):
    account = _account("crowd")
    record = _new(store, account, requests=30)
    start = threading.Barrier(8)
    won: list[int] = []
    lock = threading.Lock()

    def run(worker: int) -> None:
        order = list(range(30))
        random.Random(worker).shuffle(order)
        start.wait()
        for index in order:
            kind, result = (
                ("succeeded", succeeded_result(_message(str(index)))) if index % 3 else ("expired", expired_result())
            )
            if store.finish_request(record.id, index, f"c{index}", kind, result, NOW):
                with lock:
                    won.append(index)

    threads = [threading.Thread(target=run, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == list(range(30)), "each request finished by exactly one processor"
    assert store.get(record.id, account).request_counts == RequestCounts(succeeded=20, expired=10)
    assert store.end(record.id, NOW)


def test_a_finish_whose_answer_was_lost_is_retried_and_lands_once(dynamodb, store):
    faults = DynamoDBFaults(dynamodb_client(dynamodb.meta.endpoint_url))
    faulty = BatchStore(faults.client, TABLE)
    account = _account("lost")
    record = _new(store, account, requests=3)
    result = succeeded_result(_message("landed"))

    faults.lose_acknowledgement("TransactWriteItems")
    assert faulty.finish_request(record.id, 0, "a", "succeeded", result, NOW), "the retry sees its own write"
    faults.throttle("TransactWriteItems", 2)
    assert faulty.finish_request(record.id, 1, "b", "succeeded", result, NOW)
    faults.server_error("TransactWriteItems")
    assert not faulty.finish_request(record.id, 1, "b", "succeeded", result, NOW)
    assert faults.injected == {"lost": 1, "throttle": 2, "server": 1} and faults.pending() == 0
    assert store.get(record.id, account).request_counts == RequestCounts(processing=1, succeeded=2)


def test_finished_says_which_requests_are_done(store):
    account = _account("finished")
    record = _new(store, account, requests=250)
    done = {0, 1, 99, 100, 101, 199, 200, 249}
    for index in done:
        assert store.finish_request(record.id, index, f"c{index}", "canceled", canceled_result(), NOW)
    assert store.finished(record.id, [*range(250), 0, 100, 249]) == done
    assert store.finished(record.id, [2, 3]) == set()
    assert store.finished(record.id, []) == set()
    assert store.finished(new_batch_id(), range(5)) == set()


def test_results_come_back_in_index_order_as_they_were_kept(store):
    account = _account("results")
    record = _new(store, account, requests=12)
    noise = os.urandom(100_000).hex()  # 200 KB that compresses to ~100 KB: the results span Query pages
    kept = {
        index: (
            f"custom_{index}",
            succeeded_result(_message(f"answer {index}: déjà vu 🦜\nline two\r\n{noise if index % 2 else ''}")),
        )
        for index in range(10)
    }
    kept[10] = ("refused", errored_result("invalid_request_error", '"stream=True" is not supported', None))
    kept[11] = ("late", expired_result())
    order = list(kept)
    random.Random(7).shuffle(order)
    for index in order:
        custom_id, result = kept[index]
        assert store.finish_request(record.id, index, custom_id, result["type"], result, NOW)

    assert list(store.results(record.id)) == [(index, *kept[index]) for index in range(12)]
    lines = list(store.result_lines(record.id))
    assert lines == [result_line(*kept[index]) for index in range(12)]
    assert all(line.count(b"\n") == 1 and line.endswith(b"\n") for line in lines)
    assert list(store.results(new_batch_id())) == []


def test_a_result_too_large_to_keep_is_refused_and_nothing_changes(dynamodb, store):
    account = _account("large")
    record = _new(store, account, requests=2)
    huge = succeeded_result(_message(os.urandom(MAX_RESULT_BYTES).hex()))  # incompressible past the limit
    with pytest.raises(ResultTooLargeError):
        store.finish_request(record.id, 0, "huge", "succeeded", huge, NOW)
    assert store.finished(record.id, [0]) == set()
    assert store.get(record.id, account).request_counts == RequestCounts(processing=2)

    repetitive = succeeded_result(_message("the same words again " * 40_000))  # 840 KB that compresses
    assert store.finish_request(record.id, 0, "big", "succeeded", repetitive, NOW)
    [(_, _, result)] = store.results(record.id)
    assert result == repetitive


# -- delete ---------------------------------------------------------------------------------------


def test_a_deleted_batch_leaves_nothing_behind(dynamodb, store):
    account = _account("delete")
    record = _new(store, account, requests=60)
    neighbour = _new(store, account, requests=1)
    for index in range(60):
        assert store.finish_request(record.id, index, f"c{index}", "canceled", canceled_result(), NOW)
    assert store.finish_request(neighbour.id, 0, "n", "canceled", canceled_result(), NOW)
    assert store.end(record.id, NOW)

    assert not store.delete(record.id, _account("stranger"))
    assert len(_items(dynamodb, f"batch#{record.id}")) == 61, "another account deletes nothing"

    assert store.delete(record.id, account)
    assert _items(dynamodb, f"batch#{record.id}") == []
    assert [item["batch_id"]["S"] for item in _items(dynamodb, f"account#{account}")] == [neighbour.id]
    assert store.get(record.id, account) is None
    assert store.list(account, ListQuery()) == ([store.get(neighbour.id, account)], False)
    assert len(_items(dynamodb, f"batch#{neighbour.id}")) == 2, "the neighbour is untouched"
    assert not store.delete(record.id, account)
    with pytest.raises(BatchNotFoundError):
        store.finish_request(record.id, 0, "c0", "canceled", canceled_result(), NOW)
    assert _items(dynamodb, f"batch#{record.id}") == [], "no result is finished after the batch is gone"
