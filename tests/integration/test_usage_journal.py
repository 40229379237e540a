"""The local usage journal and its metering loop (io/usage_journal.py): usage survives a crash
and a restart, a line metered again counts once, DynamoDB being down loses nothing, and a
crashed writer's partial line is dead-lettered alone."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest

from parley.core.metering import day_of
from parley.io.tables import create_tables
from parley.io.usage import UsageStore
from parley.io.usage_journal import MeteringLoop, UsageJournal
from tests.dynamodb_faults import DynamoDBFaults
from tests.fakeworker import Answer
from tests.integration.test_metering_store import event, expected, totals
from tests.stack import dynamodb_client


@pytest.fixture
def store(dynamodb, request) -> UsageStore:
    names = {"usage": f"ju-{request.node.name[:40]}", "usage_records": f"jr-{request.node.name[:40]}"}
    create_tables(dynamodb, names)
    return UsageStore(dynamodb, names["usage"], names["usage_records"], max_attempts=3)


def test_usage_written_before_a_crash_is_metered_at_the_next_start(store, tmp_path):
    events = [event(number, "key_crash") for number in range(20)]
    crashed = UsageJournal(tmp_path)  # no metering loop: the process died before it metered anything
    for usage in events:
        crashed.append(usage)
    crashed.close()

    restarted = UsageJournal(tmp_path)
    assert restarted.folder == crashed.folder, "a restart takes the same slot and finds what was left"
    MeteringLoop(restarted, store)
    assert restarted.loop.flush()
    assert totals(store, "key#key_crash") == expected(events)
    assert not [path for path in restarted.segments() if path.stat().st_size], "metered segments are deleted"
    restarted.close()


def test_a_line_metered_again_after_a_lost_checkpoint_counts_once(store, tmp_path):
    events = [event(number, "key_again") for number in range(5)]
    first = UsageJournal(tmp_path)
    MeteringLoop(first, store)
    for usage in events:
        first.append(usage)
    assert first.loop.flush()
    first.close()
    (first.folder / "checkpoint").write_text("0 0\n")  # as if it crashed before writing its checkpoint

    second = UsageJournal(tmp_path)
    MeteringLoop(second, store)
    assert second.loop.flush()
    assert totals(store, "key#key_again") == expected(events)
    second.close()


def test_nothing_is_lost_while_dynamodb_is_down(dynamodb, store, tmp_path):
    faults = DynamoDBFaults(dynamodb_client(dynamodb.meta.endpoint_url))
    flaky = UsageStore(faults.client, store._table, store._records_table, max_attempts=2)
    journal = UsageJournal(tmp_path)
    faults.server_error("TransactWriteItems", 6)  # three passes of two attempts each fail
    MeteringLoop(journal, flaky, idle_seconds=0.05)
    events = [event(number, "key_down") for number in range(8)]
    for usage in events:
        journal.append(usage)
    assert journal.loop.flush(timeout=60), "the loop caught up once DynamoDB answered again"
    assert faults.injected["server"] == 6
    assert totals(store, "key#key_down") == expected(events)
    journal.close()


def test_a_crashed_writers_partial_line_is_a_dead_letter_and_the_rest_is_metered(store, tmp_path):
    events = [event(number, "key_partial") for number in range(3)]
    crashed = UsageJournal(tmp_path)
    for usage in events:
        crashed.append(usage)
    crashed.close()
    [segment] = crashed.segments()
    with open(segment, "ab") as cut:
        cut.write(b'PARLEY_USAGE {"request_id": "req_cut", "at": 17')  # the write the crash cut short

    restarted = UsageJournal(tmp_path)
    MeteringLoop(restarted, store)
    assert restarted.loop.flush()
    assert totals(store, "key#key_partial") == expected(events)
    [letter] = [orjson.loads(line) for line in Path(tmp_path / "dead-letters.jsonl").read_bytes().splitlines()]
    assert letter["line"].startswith('PARLEY_USAGE {"request_id": "req_cut"')
    assert letter["reason"].startswith("malformed")
    restarted.close()


def test_two_processes_on_one_folder_each_get_a_slot(store, tmp_path):
    first, second = UsageJournal(tmp_path), UsageJournal(tmp_path)
    assert first.folder != second.folder
    first.append(event(1, "key_slots"))
    second.append(event(2, "key_slots"))
    for journal in (first, second):
        MeteringLoop(journal, store)
        assert journal.loop.flush()
        journal.close()
    today = day_of(time.time())
    [row] = [row for row in store.aggregates("key#key_slots", today, today) if row["model"] is None]
    assert row["requests"] == 2


def test_dead_letters_are_replayed_exactly_once_by_the_cli(store, tmp_path, dynamodb, monkeypatch, capsys):
    from parley.cli import main
    from parley.core.usage_log import usage_line
    from parley.io.meter import FileDeadLetters

    letters = FileDeadLetters(tmp_path / "dead-letters.jsonl")
    events = [event(number, "key_replay") for number in range(2)]
    for usage in events:
        letters.keep(usage_line(usage), "refused: the table was being restored")
    letters.keep("PARLEY_USAGE {broken", "malformed: not JSON")
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb.meta.endpoint_url)
    monkeypatch.setenv("PARLEY_USAGE_TABLE", store._table)
    monkeypatch.setenv("PARLEY_USAGE_RECORDS_TABLE", store._records_table)
    rejected = tmp_path / "rejected.jsonl"
    assert main(["replay-usage", str(letters.path), "--rejected", str(rejected)]) == 0
    assert "recorded 2, already recorded 0, refused again 1" in capsys.readouterr().out
    assert main(["replay-usage", str(letters.path), "--rejected", str(rejected)]) == 0
    assert "recorded 0, already recorded 2" in capsys.readouterr().out, "a second replay counts nothing"
    assert totals(store, "key#key_replay") == expected(events)
    assert [orjson.loads(line)["line"] for line in rejected.read_bytes().splitlines()] == ["PARLEY_USAGE {broken"] * 2


def test_a_journal_that_cannot_be_written_still_answers_and_logs_the_line_for_a_replay(
    parley, worker, monkeypatch, caplog
):
    def full_disk(event):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(parley.services.usage_log, "append", full_disk)
    worker.enqueue(Answer(text="still answered"))
    response = httpx.post(
        f"{parley.url}/v1/messages",
        headers={"x-api-key": parley.key},
        json={"model": "test-model", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert response.status_code == 200 and response.json()["content"][0]["text"] == "still answered"
    [logged] = [record for record in caplog.records if "usage log write failed" in record.getMessage()]
    line = logged.getMessage().split("replay this line: ", 1)[1]
    assert line.startswith("PARLEY_USAGE {") and response.headers["request-id"] in line
