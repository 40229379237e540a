"""Which workers' chat templates refuse a system message after the first turn: this instance's
memory, for the workers whose `fold_system` option is not set.

Mistral's and Gemma's templates raise on any system message that is not first ("Conversation
roles must alternate user/assistant/..."); Claude Code sends its reminders as system messages
after the first user turn, so every request it makes would be refused. A worker's `fold_system`
decides when it is set (True: always fold them into the neighbouring user turn, False: never).
When it is not, a worker's first refusal teaches it: a 400 (or a 500: llama.cpp's server answers
every failure so) whose message speaks of roles or the system message, for a prompt with a
later system message, is tried again folded, and if that answer is accepted, this worker's
prompts are folded from then on. Folding changes nothing
a lenient template needs, so what is learned is kept for the instance's life.
"""

from __future__ import annotations

import re

from .routes import Worker
from .worker import WorkerFailure

__all__ = ["ChatTemplates"]

_REFUSAL = re.compile(r"\broles?\b|\bsystem message", re.IGNORECASE)
_REFUSAL_STATUSES = (400, 500)


class ChatTemplates:
    def __init__(self) -> None:
        self._folding: set[tuple[str, str]] = set()

    def folds(self, worker: Worker) -> bool:
        if worker.fold_system is not None:
            return worker.fold_system
        return worker.identity in self._folding

    def may_fold_after(self, worker: Worker, failure: WorkerFailure, later_system_message: bool) -> bool:
        """Whether `failure` is the template refusing a later system message: worth one try folded."""
        return (
            later_system_message
            and worker.fold_system is None
            and worker.identity not in self._folding
            and failure.error.status in _REFUSAL_STATUSES
            and _REFUSAL.search(failure.error.message) is not None
        )

    def learned(self, worker: Worker) -> None:
        """The folded prompt was accepted: fold this worker's prompts from now on."""
        self._folding.add(worker.identity)
