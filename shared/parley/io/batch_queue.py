"""The batch queue (SQS): one message per chunk of a batch's requests (io/batch_objects.py).

In AWS the queue triggers the batch function (functions/batch), which reports the chunks it
could not finish so that SQS hands them out again after their visibility timeout; locally
`QueuePoller` stands in for that trigger (the same messages, the same handler).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from .batch_objects import Chunk

__all__ = ["BatchQueue", "ChunkMessage", "QueuePoller", "chunk_message"]

logger = logging.getLogger("parley.batches")

_SEND_CHUNK = 10  # SendMessageBatch's most entries


@dataclass(frozen=True, slots=True)
class ChunkMessage:
    batch_id: str
    chunk: Chunk


def chunk_message(body: str) -> ChunkMessage:
    """A queue message's body as `BatchQueue.send` wrote it; ValueError when it is not one."""
    try:
        data = orjson.loads(body)
        chunk = Chunk(*(int(data[name]) for name in ("number", "first", "count", "start", "end")))
        batch_id = data["batch_id"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"not a batch chunk message: {error}") from None
    if not isinstance(batch_id, str) or chunk.count < 1 or chunk.end <= chunk.start:
        raise ValueError("not a batch chunk message")
    return ChunkMessage(batch_id, chunk)


def _body(batch_id: str, chunk: Chunk) -> str:
    return orjson.dumps(
        {
            "batch_id": batch_id,
            "number": chunk.number,
            "first": chunk.first,
            "count": chunk.count,
            "start": chunk.start,
            "end": chunk.end,
        }
    ).decode()


class BatchQueue:
    def __init__(self, sqs: Any, queue_url: str) -> None:
        self._sqs = sqs
        self.queue_url = queue_url

    def send(self, batch_id: str, chunks: Iterable[Chunk], delay_seconds: int = 0) -> None:
        """One message per chunk, handed out after `delay_seconds` (at most 900); RuntimeError
        when SQS refused some of them (after one retry)."""
        pending = [
            {"Id": str(chunk.number), "MessageBody": _body(batch_id, chunk), "DelaySeconds": delay_seconds}
            for chunk in chunks
        ]
        for start in range(0, len(pending), _SEND_CHUNK):
            entries = pending[start : start + _SEND_CHUNK]
            for _ in range(2):
                failed = self._sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries).get("Failed", [])
                refused = {entry["Id"] for entry in failed}
                entries = [entry for entry in entries if entry["Id"] in refused]
                if not entries:
                    break
            if entries:
                raise RuntimeError(f"SQS refused {len(entries)} chunk messages of {batch_id}")

    def receive(self, wait_seconds: int, visibility_seconds: int, most: int = 1) -> list[tuple[str, str, int]]:
        """Up to `most` (1 to 10) messages: (receipt handle, body, how many times it was received)."""
        answer = self._sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=most,
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_seconds,
            AttributeNames=["ApproximateReceiveCount"],
        )
        return [
            (
                message["ReceiptHandle"],
                message["Body"],
                int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            )
            for message in answer.get("Messages", [])
        ]

    def delete(self, receipt_handle: str) -> None:
        self._sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt_handle)

    def keep_hidden(self, receipt_handle: str, visibility_seconds: int) -> None:
        """Hide a message being worked on for `visibility_seconds` more, from now."""
        self._sqs.change_message_visibility(
            QueueUrl=self.queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=visibility_seconds
        )


class QueuePoller:
    """What the SQS trigger does in AWS, in a thread: receive one message at a time, hand its
    body and how many times it was received to `handle` (True: done, deleted; False or an
    exception: left to come back after `visibility_seconds`, as SQS redelivers a failed batch
    item; `handle` gives up on a message received too often, as a dead-letter queue would). While `handle` runs, the
    message is kept hidden (every half of `visibility_seconds`), so a long chunk is not handed
    out twice; a process that dies stops doing that, and its chunk comes back."""

    def __init__(
        self, queue: BatchQueue, handle: Callable[[str, int], bool], visibility_seconds: int = 60, wait_seconds: int = 1
    ) -> None:
        if visibility_seconds < 2:
            raise ValueError("visibility_seconds must be 2 or more")
        self._queue = queue
        self._handle = handle
        self._visibility = visibility_seconds
        self._wait = wait_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="parley-batch-queue", daemon=True)

    def start(self) -> "QueuePoller":
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                messages = self._queue.receive(self._wait, self._visibility)
            except Exception:  # the queue's server is gone or busy: try again shortly
                logger.exception("batch queue: receive failed")
                self._stop.wait(1.0)
                continue
            for receipt, body, receives in messages:
                if self._handle_hidden(receipt, body, receives):
                    self._queue.delete(receipt)

    def _handle_hidden(self, receipt: str, body: str, receives: int) -> bool:
        handled = threading.Event()

        def keep_hidden() -> None:
            while not handled.wait(self._visibility / 2):
                try:
                    self._queue.keep_hidden(receipt, self._visibility)
                except Exception:
                    logger.exception("batch queue: could not keep a chunk hidden; it may run twice")

        keeper = threading.Thread(target=keep_hidden, name="parley-batch-visibility", daemon=True)
        keeper.start()
        try:
            return self._handle(body, receives)
        except Exception:
            logger.exception("batch queue: a chunk failed; it comes back after %s s", self._visibility)
            return False
        finally:
            handled.set()
            keeper.join()
