"""The batch function (functions/batch/handler.py) run as Lambda runs it: imported from its file
with the environment template.yaml gives it (tables, bucket, queue, AWS_LAMBDA_FUNCTION_NAME),
handed SQS events whose records are the batch queue's own messages, as the SQS trigger hands
them over, and judged by what an operator sees: the handler's answer to the trigger, the batch
in DynamoDB, the results object in S3, the usage lines on stdout, what is left on the queue.

Batches are made as `POST /v1/messages/batches` makes them (web/batches.py `create_batch`),
without the HTTP API: the requests object in S3, the batch item, its chunks on the queue.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import parley.io.batch_objects as batch_objects_module
from parley.core.batches import BatchRecord, RequestCounts, parse_batch_create
from parley.core.ids import new_batch_id
from parley.io.batch_objects import BatchObjects, chunk_requests
from parley.io.batch_queue import BatchQueue
from parley.io.batches import BatchStore
from parley.io.keys import KeyStore
from parley.io.routes import Route, RouteStore, Timeouts, Worker
from parley.io.tables import create_tables
from parley.settings import Settings
from tests.fakeworker import Answer
from tests.stack import AWS_ENV, environment, tables_named

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "batchfn"
MODEL = "batch-fn-model"
ACCOUNT = "batchfn-acct"
USAGE_PREFIX = "PARLEY_USAGE "


def load_module(path: Path, name: str) -> Any:
    """The handler module imported from its file, as Lambda imports it (test_lambda_entry_points.py)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class LambdaContext:
    """What the handler reads of Lambda's context object."""

    remaining_ms: int
    aws_request_id: str = "b1946ac9-2e2f-4f68-b1e4-batch"
    function_name: str = "parley-batch"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


PLENTY = LambdaContext(remaining_ms=900_000)  # a fresh invocation of the 900 s function


@contextmanager
def powertools_undone() -> Iterator[Callable[[], None]]:
    """In Lambda, Telemetry's Powertools Logger(service="parley") gives the "parley" logger a stdout
    handler (as in Lambda: the function's log) and puts a filter on every root handler that drops
    "parley.*" records, the suite's secret scan among them (tests/conftest.py). Yields what takes
    the filters back (called once the logger exists, so the scan sees this module's logs); the
    handler is taken back at the end."""
    parley_logger = logging.getLogger("parley")
    level, handlers = parley_logger.level, list(parley_logger.handlers)
    filters = {handler: list(handler.filters) for handler in logging.root.handlers}

    def restore_filters() -> None:
        for handler in logging.root.handlers:
            if handler in filters:
                handler.filters[:] = filters[handler]

    try:
        yield restore_filters
    finally:
        parley_logger.handlers[:] = handlers
        parley_logger.setLevel(level)
        for name in ("init", "powertools_handler", "powertools_buffer_config", "powertools_buffer_cache"):
            if name in vars(parley_logger):
                delattr(parley_logger, name)
        restore_filters()


@dataclass(frozen=True)
class BatchFunction:
    module: Any
    s3: Any
    sqs: Any
    bucket: str
    queue_url: str
    queue_arn: str
    store: BatchStore
    key: str
    key_hash: str

    def handler(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        return self.module.handler(event, context)


@pytest.fixture(scope="module")
def batch_function(dynamodb, batch_store_backends, worker, tmp_path_factory) -> Iterator[BatchFunction]:
    tables = tables_named(PREFIX)
    create_tables(dynamodb, {role: tables[f"{role}_table"] for role in Settings().table_names})
    RouteStore(dynamodb, tables["routes_table"]).put(
        Route(
            model=MODEL,
            workers=(Worker(base_url=worker.base_url, model="fake-model"),),
            timeouts=Timeouts(connect=5.0, first_byte=20.0, idle=20.0, buffered=20.0),
        )
    )
    key, record = KeyStore(dynamodb, tables["keys_table"]).create(account=ACCOUNT, name="batch")
    s3, sqs = batch_store_backends.s3, batch_store_backends.sqs
    s3.create_bucket(Bucket=PREFIX)
    queue_url = sqs.create_queue(QueueName=PREFIX)["QueueUrl"]
    dead_letters_url = sqs.create_queue(QueueName=f"{PREFIX}-dead-letters")["QueueUrl"]
    values = {
        **AWS_ENV,
        "AWS_LAMBDA_FUNCTION_NAME": "parley-batch",
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb.meta.endpoint_url,
        "AWS_ENDPOINT_URL_S3": batch_store_backends.endpoint_url,
        "AWS_ENDPOINT_URL_SQS": batch_store_backends.endpoint_url,
        **{f"PARLEY_{name.upper()}": value for name, value in tables.items()},
        "PARLEY_BATCH_BUCKET": PREFIX,
        "PARLEY_BATCH_QUEUE_URL": queue_url,
        "PARLEY_BATCH_DEAD_LETTER_QUEUE_ARN": queue_arn(sqs, dead_letters_url),  # as the template sets it
        "PARLEY_KNOWLEDGE_BASES_URI": str(tmp_path_factory.mktemp("batchfn-knowledge")),
    }
    # No PARLEY_USAGE_LOG: in Lambda (AWS_LAMBDA_FUNCTION_NAME) usage goes to stdout by default.
    removed = ("PARLEY_USAGE_LOG", "PARLEY_BATCH_POLL")
    with environment(values, removed), powertools_undone() as restore_log_filters:
        import parley.web.app as app_module

        app = app_module.app
        saved_services = app.state.services
        app.state.services = None  # a fresh Lambda process: the app builds its services on first use
        module = load_module(ROOT / "functions" / "batch" / "handler.py", "batch_function_handler")
        # The cold start's first use, here rather than inside a test: Powertools' handler keeps the
        # sys.stdout it finds, which must not be one test's capture.
        services = module._runner.services
        restore_log_filters()
        assert services.settings.usage_log == "stdout" and services.batches_enabled
        try:
            yield BatchFunction(
                module=module,
                s3=s3,
                sqs=sqs,
                bucket=PREFIX,
                queue_url=queue_url,
                queue_arn=queue_arn(sqs, queue_url),
                store=BatchStore(dynamodb, tables["batches_table"]),
                key=key,
                key_hash=record.key_hash,
            )
        finally:
            module._loop.run_until_complete(close_clients(services))
            services.close()
            module._loop.close()
            app.state.services = saved_services


async def close_clients(services: Any) -> None:
    await asyncio.gather(services.worker.aclose(), services.account_worker.aclose())


@pytest.fixture
def answering_worker(worker) -> Any:
    """The fake worker answers each request with its own prompt."""
    worker.responder = lambda body: Answer(
        text=f"answer to {body['messages'][-1]['content']}", prompt_tokens=12, completion_tokens=3
    )
    return worker


def queue_arn(sqs: Any, queue_url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def make_batch(function: BatchFunction, tag: str, count: int, put_requests: bool = True) -> str:
    """A batch of `count` requests, its chunks sent to the queue, as create_batch makes it."""
    requests = parse_batch_create(
        {
            "requests": [
                {
                    "custom_id": f"{tag}-{n}",
                    "params": {
                        "model": MODEL,
                        "max_tokens": 32,
                        "messages": [{"role": "user", "content": f"{tag} request {n}"}],
                    },
                }
                for n in range(count)
            ]
        }
    )
    body, chunks = chunk_requests(requests)
    batch_id = new_batch_id()
    if put_requests:
        BatchObjects(function.s3, function.bucket).put_requests(batch_id, body)
    record = BatchRecord(batch_id, ACCOUNT, datetime.now(timezone.utc), RequestCounts(processing=len(requests)))
    function.store.create(record, function.key_hash, len(chunks))
    BatchQueue(function.sqs, function.queue_url).send(batch_id, chunks)
    return batch_id


def receive(function: BatchFunction, count: int, seconds: float = 10.0) -> list[dict[str, Any]]:
    """`count` messages off the queue, as the SQS trigger takes them (hidden while the function runs)."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while len(messages) < count:
        assert time.monotonic() < deadline, f"{len(messages)} of {count} messages came off the queue"
        answer = function.sqs.receive_message(
            QueueUrl=function.queue_url,
            MaxNumberOfMessages=min(10, count - len(messages)),
            WaitTimeSeconds=1,
            VisibilityTimeout=960,  # the template's BatchQueue
            AttributeNames=["All"],
        )
        messages.extend(answer.get("Messages", []))
    return messages


def sqs_event(function: BatchFunction, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The event the SQS trigger invokes the function with."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": function.queue_arn,
                "awsRegion": AWS_ENV["AWS_DEFAULT_REGION"],
            }
            for message in messages
        ]
    }


def deliver(function: BatchFunction, messages: list[dict[str, Any]], context: Any) -> dict[str, Any]:
    """Invoke the handler as the trigger does, and delete what it did not report as failed."""
    answer = function.handler(sqs_event(function, messages), context)
    failed = {failure["itemIdentifier"] for failure in answer["batchItemFailures"]}
    for message in messages:
        if message["MessageId"] not in failed:
            function.sqs.delete_message(QueueUrl=function.queue_url, ReceiptHandle=message["ReceiptHandle"])
    return answer


def usage_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line[len(USAGE_PREFIX) :]) for line in stdout.splitlines() if line.startswith(USAGE_PREFIX)]


def assert_no_secrets(function: BatchFunction, *texts: str) -> None:
    for text in texts:
        assert function.key not in text and function.key_hash not in text


def test_a_batch_in_three_chunks_ends_with_results_in_s3_and_usage_on_stdout(
    batch_function, answering_worker, capsys, monkeypatch
):
    monkeypatch.setattr(batch_objects_module, "CHUNK_REQUESTS", 2)  # 5 requests: chunks of 2, 2 and 1
    batch_id = make_batch(batch_function, "full", 5)
    messages = receive(batch_function, 3)
    capsys.readouterr()

    assert deliver(batch_function, messages, PLENTY) == {"batchItemFailures": []}

    captured = capsys.readouterr()
    stored = batch_function.store.get_any(batch_id)
    assert stored.record.processing_status == "ended"
    assert stored.record.request_counts == RequestCounts(succeeded=5)
    body = batch_function.s3.get_object(Bucket=batch_function.bucket, Key=f"results/{batch_id}.jsonl")["Body"].read()
    results = [json.loads(line) for line in body.splitlines()]
    assert [result["custom_id"] for result in results] == [f"full-{n}" for n in range(5)]
    assert all(result["result"]["type"] == "succeeded" for result in results)
    assert [result["result"]["message"]["content"][0]["text"] for result in results] == [
        f"answer to full request {n}" for n in range(5)
    ]
    assert len(answering_worker.requests) == 5

    usage = usage_lines(captured.out)
    assert sorted(line["request_id"] for line in usage) == [f"{batch_id}-{n}" for n in range(5)]
    assert all(line["batch"] is True and line["status"] == 200 and line["model"] == MODEL for line in usage)
    assert all(line["input_tokens"] == 12 and line["output_tokens"] == 3 for line in usage)
    assert_no_secrets(batch_function, captured.out, captured.err)


def test_a_message_that_is_not_a_chunk_is_dropped_and_a_chunk_without_requests_is_retried(
    batch_function, answering_worker, capsys, caplog
):
    good = make_batch(batch_function, "good", 2)
    missing = make_batch(batch_function, "missing", 3, put_requests=False)
    batch_function.sqs.send_message(QueueUrl=batch_function.queue_url, MessageBody='{"hello": "world"}')
    messages = receive(batch_function, 3)
    by_batch = {json.loads(message["Body"]).get("batch_id"): message for message in messages}
    capsys.readouterr()

    with caplog.at_level(logging.INFO, logger="parley.batches"):
        answer = deliver(batch_function, messages, PLENTY)

    assert answer == {"batchItemFailures": [{"itemIdentifier": by_batch[missing]["MessageId"]}]}
    records = {record.getMessage(): record for record in caplog.records if record.name == "parley.batches"}
    logged = list(records)
    assert f"batch function: dropped a message that is not a chunk ({by_batch[None]['MessageId']})" in records
    failure = records[f"batch function: chunk 0 of {missing} failed"]
    assert failure.exc_info is not None and "NoSuchKey" in repr(failure.exc_info[1])  # with its traceback
    assert batch_function.store.get_any(good).record.request_counts == RequestCounts(succeeded=2)
    left = batch_function.store.get_any(missing).record
    assert left.processing_status == "in_progress" and left.request_counts == RequestCounts(processing=3)
    assert "missing request" not in str(answering_worker.requests)
    captured = capsys.readouterr()
    assert sorted(line["request_id"] for line in usage_lines(captured.out)) == [f"{good}-0", f"{good}-1"]
    assert_no_secrets(batch_function, captured.out, captured.err, *logged)
    # The failed chunk stays with SQS (hidden until its visibility timeout): taken away here.
    receipt = by_batch[missing]["ReceiptHandle"]
    batch_function.sqs.delete_message(QueueUrl=batch_function.queue_url, ReceiptHandle=receipt)


def test_a_chunk_with_too_little_time_left_is_queued_again_untouched(
    batch_function, answering_worker, capsys, monkeypatch
):
    monkeypatch.setattr(batch_function.module, "_AGAIN_SECONDS", 2)  # the handler's delay (60 s), shortened
    batch_id = make_batch(batch_function, "late", 5)
    [message] = receive(batch_function, 1)
    capsys.readouterr()

    short = LambdaContext(remaining_ms=1_000)
    assert short.remaining_ms < batch_function.module._SPARE_SECONDS * 1000
    assert deliver(batch_function, [message], short) == {"batchItemFailures": []}

    assert answering_worker.requests == []
    assert usage_lines(capsys.readouterr().out) == []
    stored = batch_function.store.get_any(batch_id)
    assert stored.record.processing_status == "in_progress"
    assert stored.record.request_counts == RequestCounts(processing=5)
    attributes = batch_function.sqs.get_queue_attributes(
        QueueUrl=batch_function.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"],
    )["Attributes"]
    assert (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesDelayed"]) == ("0", "1")
    [again] = receive(batch_function, 1)
    assert again["Body"] == message["Body"] and again["MessageId"] != message["MessageId"]

    # The next invocation, with its time, goes on with it.
    assert deliver(batch_function, [again], PLENTY) == {"batchItemFailures": []}
    assert batch_function.store.get_any(batch_id).record.request_counts == RequestCounts(succeeded=5)
    assert len(usage_lines(capsys.readouterr().out)) == 5
