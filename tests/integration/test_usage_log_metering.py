"""Metering through the log, as the Lambda functions do it: no DynamoDB write the client waits
for, one usage line per request, and the metering function writing each exactly once; a line
that is not a usage event, or an event DynamoDB refuses, is dead-lettered alone and never costs
the good lines delivered with it."""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from pathlib import Path
from typing import Iterator

import anthropic
import pytest

from parley.core.metering import day_of
from parley.core.usage_log import USAGE_MARKER, usage_line
from parley.io.routes import Route, Timeouts, Worker
from parley.settings import Settings
from tests.fakeworker import Answer
from tests.integration.test_metering_store import event as usage_event
from tests.stack import RunningParley, parley_stack, tables_named
from tests.subscription import subscription_event

from .helpers import MODEL, WORKER_MODEL

HANDLER = Path(__file__).parents[2] / "functions" / "metering" / "handler.py"


def metering_function():
    spec = importlib.util.spec_from_file_location("metering_handler", HANDLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


@pytest.fixture(scope="module")
def stack(dynamodb, worker) -> Iterator[RunningParley]:
    settings = Settings(
        **tables_named("ulog"),
        usage_log="stdout",
    )
    route = Route(model=MODEL, workers=(Worker(base_url=worker.base_url, model=WORKER_MODEL),), timeouts=Timeouts())
    with parley_stack(dynamodb, settings, [route], account="ulog") as running:
        yield running


def test_usage_goes_to_the_log_and_the_metering_function_writes_it_once(stack, worker, capfd):
    client = anthropic.Anthropic(base_url=stack.url, api_key=stack.key, max_retries=0)
    worker.enqueue(Answer(text="one", prompt_tokens=30, completion_tokens=3))
    worker.enqueue(Answer(text="two", prompt_tokens=40, completion_tokens=5))
    first = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "a"}]
    )
    with client.messages.stream(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "b"}]) as second:
        second.get_final_message()
    ids = [first.headers["request-id"], second.response.headers["request-id"]]
    # each line was written before its response's last byte: both are there already
    lines = [line for line in capfd.readouterr().out.splitlines() if line.startswith(USAGE_MARKER)]
    assert [line for line in lines if any(request_id in line for request_id in ids)] == lines and len(lines) == 2
    usage = stack.services.usage
    assert all(usage.record_of(request_id) is None for request_id in ids), "the API itself wrote no usage"

    handler = metering_function()
    dead_letters = KeptLetters()
    delivery = subscription_event(["START RequestId: x", *lines, "END RequestId: x"])
    assert handler(delivery, store=usage, dead_letters=dead_letters) == {
        "recorded": 2, "already_recorded": 0, "dead_letters": 0, "unavailable": 0,
    }  # fmt: skip
    again = handler(delivery, store=usage, dead_letters=dead_letters)
    assert (again["recorded"], again["already_recorded"]) == (0, 2), "a redelivery counts nothing"
    records = [usage.record_of(request_id) for request_id in ids]
    assert [int(record["input_tokens"]) for record in records] == [30, 40]
    assert [int(record["output_tokens"]) for record in records] == [3, 5]
    key_id = records[0]["key_id"]
    today = day_of(time.time())
    [total] = [row for row in usage.aggregates(f"key#{key_id}", today, today) if row["model"] is None]
    assert (total["requests"], total["input_tokens"], total["output_tokens"]) == (2, 70, 8), "counted once"


class KeptLetters:
    def __init__(self) -> None:
        self.letters: list[tuple[str, str]] = []

    def keep(self, line: str, reason: str) -> None:
        self.letters.append((line, reason))


def test_a_poisoned_delivery_costs_no_good_line(stack, capfd):
    """GET /v1/PARLEY_USAGE%20x (a 404, no key needed) used to put the marker into a log line; the
    function parsed it, failed, and the genuine lines of the same delivery were never written."""
    good = [usage_event(number, "key_poison") for number in range(3)]
    refused = dataclasses.replace(usage_event(9, "key_poison"), model="m" * 1_010)  # sort key > 1 KB
    delivery = subscription_event(
        [
            '{"level":"INFO","message":"request","path":"/v1/PARLEY_USAGE x","status":404}',
            usage_line(good[0]),
            "PARLEY_USAGE {not json",
            usage_line(good[1]),
            'PARLEY_USAGE {"request_id": "req_forged", "input_tokens": -1000}',
            usage_line(refused),
            usage_line(good[2]),
        ]
    )
    dead_letters = KeptLetters()
    report = metering_function()(delivery, store=stack.services.usage, dead_letters=dead_letters)
    assert (report["recorded"], report["dead_letters"]) == (3, 3), report
    reasons = [reason for _, reason in dead_letters.letters]
    assert reasons[0].startswith("malformed: not JSON") and reasons[1].startswith("malformed:")
    assert reasons[2].startswith("refused:") and refused.request_id in dead_letters.letters[2][0]
    for line in dead_letters.letters:
        assert line[0].startswith("PARLEY_USAGE "), "the line itself is kept, for a replay"
    today = day_of(time.time())
    [total] = [row for row in stack.services.usage.aggregates("key#key_poison", today, today) if row["model"] is None]
    assert total["requests"] == 3 and total["input_tokens"] == sum(e.input_tokens for e in good)
