"""Metering through the log, as the Lambda functions do it: no DynamoDB write the client waits
for, one usage line per request, and the metering function writing each exactly once."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Iterator

import anthropic
import pytest

from parley.core.metering import day_of
from parley.core.usage_log import USAGE_MARKER
from parley.io.routes import Route, Timeouts, Worker
from parley.settings import Settings
from tests.fakeworker import Answer
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
        meter_via_log=True,
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
    time.sleep(0.2)
    lines = [line for line in capfd.readouterr().out.splitlines() if line.startswith(USAGE_MARKER)]
    assert [line for line in lines if any(request_id in line for request_id in ids)] == lines and len(lines) == 2
    usage = stack.services.usage
    assert all(usage.record_of(request_id) is None for request_id in ids), "the API itself wrote no usage"

    handler = metering_function()
    delivery = subscription_event(["START RequestId: x", *lines, "END RequestId: x"])
    assert handler(delivery, store=usage) == {"recorded": 2, "already_recorded": 0}
    assert handler(delivery, store=usage) == {"recorded": 0, "already_recorded": 2}, "a redelivery counts nothing"
    records = [usage.record_of(request_id) for request_id in ids]
    assert [int(record["input_tokens"]) for record in records] == [30, 40]
    assert [int(record["output_tokens"]) for record in records] == [3, 5]
    key_id = records[0]["key_id"]
    today = day_of(time.time())
    [total] = [row for row in usage.aggregates(f"key#{key_id}", today, today) if row["model"] is None]
    assert (total["requests"], total["input_tokens"], total["output_tokens"]) == (2, 70, 8), "counted once"
