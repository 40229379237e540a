"""The batch function: SQS (the batch queue) → each chunk of a message batch run through the app
in-process (parley.web.batch_runner, docs/batches.md).

No request is started with less than `_SPARE_SECONDS` of the invocation left; a chunk whose
time ran short is queued again at once, to go on in another invocation. A chunk that failed (a
store did not answer, say) is reported as a batch item failure: SQS hands it out again after
its visibility timeout. Either way only its unfinished requests run again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from parley.io.batch_queue import chunk_message
from parley.web.app import app
from parley.web.batch_runner import BatchRunner

logger = logging.getLogger("parley.batches")

_SPARE_SECONDS = 660.0  # more than a route's longest buffered call (600 s by default)
_loop = asyncio.new_event_loop()  # one loop for the function's life: the app's clients live on it
_runner = BatchRunner(app)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, list[dict[str, str]]]:
    remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else 900.0
    deadline = time.monotonic() + max(0.0, remaining - _SPARE_SECONDS)
    failures: list[dict[str, str]] = []
    for record in event.get("Records", []):
        try:
            message = chunk_message(record["body"])
        except ValueError:
            logger.error("batch function: dropped a message that is not a chunk (%s)", record.get("messageId"))
            continue
        try:
            if not _loop.run_until_complete(_runner.run_chunk(message, deadline)):
                _runner.services.batch_queue.send(message.batch_id, [message.chunk])  # type: ignore[union-attr]
        except Exception:
            logger.exception("batch function: chunk %s of %s failed", message.chunk.number, message.batch_id)
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
