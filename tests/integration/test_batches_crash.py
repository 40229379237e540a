"""A batch of 1,000 requests through the official Python SDK, with failures injected into the
worker and Parley killed (SIGKILL) in the middle of it: counts, results and usage are exact.

Parley runs as its own process (uvicorn, as the streaming function and `make dev` run it), so
that the crash is a real one: the process dies with requests in flight, and a new process on
the same DynamoDB, bucket, queue and usage journal takes over once the chunks it held come back
from the queue. The fake worker answers each request by its number:

- every 10th (n % 10 == 3) fails once with a 503, then answers: retried, succeeded;
- every 100th (n % 100 == 41) always fails with a 500: errored after every attempt;
- every 125th (n % 125 == 77) sends garbage instead of a completion: errored;
- every 200th (n % 200 == 5) has no max_tokens: refused by validation, no worker call;
- every other request answers `answer <n>` with 10 + n % 7 prompt and 2 + n % 5 output tokens.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import anthropic
import pytest

from parley.core.metering import Prices
from parley.io.batches import BatchStore
from parley.io.keys import KeyStore
from parley.io.routes import Route, RouteStore, Timeouts, Worker
from parley.io.tables import create_tables
from parley.io.usage import UsageStore
from tests.fakeworker import Answer, RawAnswer, WorkerError
from tests.stack import AWS_ENV, free_port, tables_named, wait_until_healthy

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 1_000
MODEL = "batch-model"
PRICES = Prices(input_per_mtok=3.0, output_per_mtok=15.0, batch_factor=0.5)
SLOTS = 4
_NUMBER = re.compile(r"request (\d+)")


def flaky_once(n: int) -> bool:
    return n % 10 == 3


def always_failing(n: int) -> bool:
    return n % 100 == 41


def garbage(n: int) -> bool:
    return n % 125 == 77


def invalid(n: int) -> bool:
    return n % 200 == 5


def prompt_tokens(n: int) -> int:
    return 10 + n % 7


def output_tokens(n: int) -> int:
    return 2 + n % 5


class Responder:
    """The fake worker's answer to request n; counts the calls each n got."""

    def __init__(self) -> None:
        self.calls: Counter[int] = Counter()
        self._lock = threading.Lock()

    def __call__(self, body: Any) -> Any:
        n = int(_NUMBER.search(str(body["messages"][-1]["content"])).group(1))
        with self._lock:
            self.calls[n] += 1
            calls = self.calls[n]
        if always_failing(n):
            return WorkerError(500, {"error": {"message": "the GPU fell over", "type": "InternalServerError"}})
        if flaky_once(n) and calls == 1:
            return WorkerError(503, {"error": {"message": "busy", "type": "ServiceUnavailable"}})
        if garbage(n):
            body = b"<html>not a completion</html>"
            return RawAnswer(
                200, [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))], [body]
            )
        words = " ".join(["word"] * (output_tokens(n) - 1))
        return Answer(
            text=f"answer {n} {words}".strip(),
            prompt_tokens=prompt_tokens(n),
            completion_tokens=output_tokens(n),
        )


class ParleyProcess:
    """Parley under uvicorn in a process of its own, polling the batch queue."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "parley.web.app:app", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_until_healthy(self.url, lambda: self.process.poll() is None, 60)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(30)
        self._log.close()

    def stop(self) -> None:
        """A graceful stop: its usage journal is metered before it exits."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)
        self._log.close()


@pytest.fixture
def batch_env(dynamodb, batch_store_backends, worker, tmp_path) -> Iterator[dict[str, Any]]:
    tables = tables_named("crash")
    create_tables(dynamodb, {role: tables[f"{role}_table"] for role in _roles()})
    backends = batch_store_backends.settings_for("crash", visibility_seconds=3)
    RouteStore(dynamodb, tables["routes_table"]).put(
        Route(
            model=MODEL,
            workers=(Worker(base_url=worker.base_url, model="fake-model"),),
            prices=PRICES,
            batch_slots=SLOTS,
            timeouts=Timeouts(connect=5.0, first_byte=20.0, idle=20.0, buffered=20.0),
        )
    )
    key, record = KeyStore(dynamodb, tables["keys_table"]).create(account="crash-acct", name="batch")
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "PARLEY_"))}
    env.update(AWS_ENV)
    env.update({f"PARLEY_{name.upper()}": value for name, value in tables.items()})
    env.update(
        {
            "AWS_ENDPOINT_URL_DYNAMODB": dynamodb.meta.endpoint_url,
            "AWS_ENDPOINT_URL_S3": batch_store_backends.endpoint_url,
            "AWS_ENDPOINT_URL_SQS": batch_store_backends.endpoint_url,
            "PARLEY_BATCH_BUCKET": backends["batch_bucket"],
            "PARLEY_BATCH_QUEUE_URL": backends["batch_queue_url"],
            "PARLEY_BATCH_POLL": "1",
            "PARLEY_BATCH_VISIBILITY_SECONDS": "3",
            "PARLEY_USAGE_LOG": str(tmp_path / "usage"),
            "PARLEY_WORKER_ATTEMPTS": "1",  # a worker failure reaches the batch runner, which retries
            "PARLEY_KNOWLEDGE_BASES_URI": str(tmp_path / "knowledge"),
            "PYTHONPATH": str(ROOT / "shared"),
        }
    )
    yield {
        "env": env,
        "key": key,
        "key_id": record.key_id,
        "tables": tables,
        "logs": tmp_path,
    }


def _roles() -> list[str]:
    from parley.settings import Settings

    return list(Settings().table_names)


def _params(n: int) -> dict[str, Any]:
    params: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": f"request {n}"}]}
    if not invalid(n):
        params["max_tokens"] = 64
    return params


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def test_a_thousand_requests_survive_failures_and_a_crash_with_exact_counts_results_and_usage(
    dynamodb, worker, batch_env
):
    responder = Responder()
    worker.responder = responder
    env, tables = batch_env["env"], batch_env["tables"]
    port = free_port()
    first = ParleyProcess(env, port, batch_env["logs"] / "first.log")
    client = anthropic.Anthropic(base_url=first.url, api_key=batch_env["key"], max_retries=0, timeout=60)
    store = BatchStore(dynamodb, tables["batches_table"])
    try:
        batch = client.messages.batches.create(
            requests=[{"custom_id": f"req-{n:04d}", "params": _params(n)} for n in range(REQUESTS)]
        )
        assert batch.processing_status == "in_progress"
        assert batch.request_counts.processing == REQUESTS

        # The crash: once a third of the requests have reached the worker, in the middle of chunks.
        assert worker.wait_for_requests(REQUESTS // 3, timeout=300)
        first.kill()
        at_crash = store.get_any(batch.id).record
        finished_before = {index for index, _, _ in store.results(batch.id)}
        calls_before = Counter(responder.calls)
    except BaseException:
        first.stop()
        raise
    assert 0 < at_crash.request_counts.succeeded and at_crash.request_counts.processing > 0, "not mid-batch"

    second = ParleyProcess(env, port, batch_env["logs"] / "second.log")
    try:
        _wait_for(
            lambda: client.messages.batches.retrieve(batch.id).processing_status == "ended", 600, "the batch to end"
        )
        ended = client.messages.batches.retrieve(batch.id)
        results = list(client.messages.batches.results(batch.id))
    finally:
        second.stop()  # its usage journal metered

    # Counts.
    expected_errored = {n for n in range(REQUESTS) if always_failing(n) or garbage(n) or invalid(n)}
    counts = ended.request_counts
    assert (counts.succeeded, counts.errored, counts.canceled, counts.expired, counts.processing) == (
        REQUESTS - len(expected_errored),
        len(expected_errored),
        0,
        0,
        0,
    )
    assert ended.ended_at is not None and ended.results_url == f"/v1/messages/batches/{batch.id}/results"

    # Results: one per request, in order, each what its request got.
    assert [result.custom_id for result in results] == [f"req-{n:04d}" for n in range(REQUESTS)]
    for n, result in enumerate(results):
        if n in expected_errored:
            assert result.result.type == "errored", n
            error = result.result.error
            assert error.error.type == ("invalid_request_error" if invalid(n) else "api_error"), (n, error)
            if invalid(n):
                assert "max_tokens" in error.error.message
            else:
                assert error.request_id == f"{batch.id}-{n}"
        else:
            assert result.result.type == "succeeded", (n, result.result)
            message = result.result.message
            assert message.content[0].text.startswith(f"answer {n}")
            assert (message.usage.input_tokens, message.usage.output_tokens) == (prompt_tokens(n), output_tokens(n))

    # Nothing finished before the crash was asked of the worker again.
    for n in finished_before:
        assert responder.calls[n] == calls_before[n], f"request {n} finished before the crash and was run again"
    # Requests refused by validation never reached the worker; a request failing for good was tried 4 times.
    assert all(responder.calls[n] == 0 for n in range(REQUESTS) if invalid(n))
    assert all(responder.calls[n] >= 4 for n in range(REQUESTS) if always_failing(n))

    # Usage: every request that was routed metered exactly once, at the batch price; none twice.
    usage = UsageStore(dynamodb, tables["usage_table"], tables["usage_records_table"])
    metered_ids = _metered_ids(dynamodb, tables["usage_records_table"], batch.id)
    routed = [n for n in range(REQUESTS) if not invalid(n)]
    assert sorted(metered_ids) == sorted(f"{batch.id}-{n}" for n in routed)
    cost = 0
    for n in routed:
        record = usage.record_of(f"{batch.id}-{n}")
        assert record["batch"] is True and record["key_id"] == batch_env["key_id"]
        if n in expected_errored:
            assert record["error_type"] == "api_error"
            continue
        assert (int(record["input_tokens"]), int(record["output_tokens"])) == (prompt_tokens(n), output_tokens(n))
        expected = round((prompt_tokens(n) * 3.0 + output_tokens(n) * 15.0) * 0.5)
        assert int(record["cost_micros"]) == expected, n
        cost += expected
    [month] = [row for row in usage.aggregates(f"key#{batch_env['key_id']}", "0000", "9999") if row["model"] == MODEL]
    assert month["requests"] == len(routed)
    assert month["cost_micros"] == cost


def _metered_ids(dynamodb: Any, table: str, batch_id: str) -> list[str]:
    ids: list[str] = []
    for page in dynamodb.get_paginator("scan").paginate(
        TableName=table,
        FilterExpression="begins_with(request_id, :batch)",
        ExpressionAttributeValues={":batch": {"S": batch_id}},
        ProjectionExpression="request_id",
    ):
        ids.extend(item["request_id"]["S"] for item in page["Items"])
    return ids
