"""Which workers tokenize: this instance's memory of whether a worker answers vLLM's POST /tokenize.

A worker's `tokenize` option decides when it is set (True: always ask it, False: never). When
it is not, the first count asks the worker: a count means it tokenizes (and is asked from then
on); a 404, 405 or 501, or an answer with no count, means it does not, remembered for
`forget_seconds` (an hour), during which its prompts are estimated without asking. A failure
that says nothing about the tokenizer (unreachable, a timeout, a 5xx) settles nothing: that
prompt is estimated, and the next one asks again.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ..core.errors import ParleyError
from .routes import Timeouts, Worker
from .worker import WorkerClient, WorkerFailure

__all__ = ["WorkerTokenizers"]


class WorkerTokenizers:
    def __init__(self, forget_seconds: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._forget_seconds = forget_seconds
        self._clock = clock
        self._learned: dict[tuple[str, str], tuple[bool, float]] = {}  # worker → (tokenizes, until)

    def tokenizes(self, worker: Worker) -> bool | None:
        """What this instance knows: True, False, or None (not known, or forgotten)."""
        if worker.tokenize is not None:
            return worker.tokenize
        learned = self._learned.get(worker.identity)
        if learned is None:
            return None
        if learned[1] < self._clock():
            del self._learned[worker.identity]
            return None
        return learned[0]

    def learned(self, worker: Worker, tokenizes: bool) -> None:
        self._learned[worker.identity] = (tokenizes, self._clock() + self._forget_seconds)

    def may_ask(self, worker: Worker) -> bool:
        """Whether a count should ask this worker (an OpenAI-style one not known to lack /tokenize)."""
        return worker.api == "openai" and self.tokenizes(worker) is not False

    async def count(self, client: WorkerClient, worker: Worker, body: dict[str, Any], timeouts: Timeouts) -> int | None:
        """The worker's count of the prompt in `body`, or None (estimate it)."""
        if not self.may_ask(worker):
            return None
        try:
            count = await client.tokenize(worker, body, timeouts)
        except (WorkerFailure, ParleyError):  # its key could not be read, say: nothing learned
            return None
        if worker.tokenize is None:
            self.learned(worker, count is not None)
        return count
