"""The batch function: SQS (the batch queue) → each chunk of a message batch run through the app
in-process (parley.web.batch_runner, docs/batches.md).

No request is started with less than `_SPARE_SECONDS` of the invocation left; a chunk whose
time ran short, or whose route's slots stayed busy (Settings.batch_slot_patience_seconds), is
queued again, to go on in another invocation a minute later instead of paying for one that
waits. A chunk that failed (a store did not answer, say) is reported as a batch item failure:
SQS hands it out again after its visibility timeout. Either way only its unfinished requests
run again. A chunk that failed every delivery reaches the dead-letter queue, which triggers this
function too: its unfinished requests are errored (`give_up_chunk`), so that the batch ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from parley.io.batch_queue import chunk_message
from parley.web.app import app
from parley.web.batch_runner import MAX_RECEIVES, BatchRunner

logger = logging.getLogger("parley.batches")

_SPARE_SECONDS = 660.0  # more than a route's longest buffered call (600 s by default)
_AGAIN_SECONDS = 60  # a chunk left for later (time ran short, or its route's slots were busy) comes back then
_loop = asyncio.new_event_loop()  # one loop for the function's life: the app's clients live on it
_runner = BatchRunner(app)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, list[dict[str, str]]]:
    remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else 900.0
    deadline = time.monotonic() + max(0.0, remaining - _SPARE_SECONDS)
    failures: list[dict[str, str]] = []
    dead_letters = os.environ.get("PARLEY_BATCH_DEAD_LETTER_QUEUE_ARN")
    for record in event.get("Records", []):
        try:
            message = chunk_message(record["body"])
        except ValueError:
            logger.error("batch function: dropped a message that is not a chunk (%s)", record.get("messageId"))
            continue
        if dead_letters and record.get("eventSourceARN") == dead_letters:
            _loop.run_until_complete(_runner.give_up_chunk(message, MAX_RECEIVES))  # raises: retried, then kept 14 days
            continue
        try:
            if not _loop.run_until_complete(_runner.run_chunk(message, deadline)):
                queue = _runner.services.batch_queue
                queue.send(message.batch_id, [message.chunk], delay_seconds=_AGAIN_SECONDS)  # type: ignore[union-attr]
        except Exception:
            logger.exception("batch function: chunk %s of %s failed", message.chunk.number, message.batch_id)
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
