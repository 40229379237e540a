"""Usage logs: where a request's usage line goes before its last byte, and the local metering loop.

- `StdoutUsageLog`: in Lambda. CloudWatch Logs keeps the line; a subscription delivers it to
  the metering function (functions/metering).
- `UsageJournal`: everywhere else (`make dev`, a container, the bench). The line is appended to
  a file (one `write`, no network: the client never waits for DynamoDB) and a metering loop in
  the same process reads the journal in batches and meters them (`io.meter.meter_lines`), so
  usage survives a crash or a restart, memory stays bounded whatever the load (the backlog is on
  disk), and a busy stack writes one DynamoDB transaction per batch instead of per request.

The journal is a folder of segments (`000000000001.usage`, …) and a checkpoint (segment and
offset of the first line not yet metered). A process appends to a new segment of its own and
the loop deletes a segment once it has metered all of it. A line metered again after a crash
between its write and the checkpoint counts once: the write is conditional on the request id.
One process owns a journal folder at a time (an flock on `slot-N/lock`); a second one takes
the next free slot, and picks up whatever an earlier process left in it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..core.metering import UsageEvent
from ..core.usage_log import usage_line
from .meter import FileDeadLetters, meter_lines
from .usage import UsageStore

__all__ = ["MeteringLoop", "StdoutUsageLog", "UsageJournal"]

logger = logging.getLogger("parley.metering")

SEGMENT_BYTES = 8 * 1024 * 1024
READ_BYTES = 512 * 1024  # one pass of the loop reads at most this much (about 1,000 lines)
BATCH_LINES = 400  # a pass with fewer lines than this waits a little for more first
_SUFFIX = ".usage"


class StdoutUsageLog:
    """Usage lines on stdout, for the metering function (Lambda)."""

    def append(self, event: UsageEvent) -> None:
        sys.stdout.write(usage_line(event))
        sys.stdout.flush()

    def flush(self, timeout: float = 30.0) -> bool:
        """The metering function meters stdout: nothing to wait for here."""
        return True

    def close(self, drain_seconds: float = 0.0) -> None:
        pass


def _take_slot(root: Path) -> tuple[Path, int]:
    for number in range(1024):
        folder = root / f"slot-{number}"
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            continue
        return folder, descriptor
    raise RuntimeError(f"every usage journal slot in {root} is taken")


def _segment_number(path: Path) -> int:
    return int(path.name[: -len(_SUFFIX)])


class UsageJournal:
    """The usage lines of this process, on disk, and the metering loop that reads them."""

    def __init__(self, root: Path | str) -> None:
        self.folder, self._lock_descriptor = _take_slot(Path(root))
        self._write_lock = threading.Lock()
        self._descriptor: int | None = None
        self._segment = 0
        self._size = 0
        self.appended = 0  # lines this process appended
        self.loop: MeteringLoop | None = None

    # -- writing (the request path) --------------------------------------------------------------

    def segments(self) -> list[Path]:
        return sorted(self.folder.glob("*" + _SUFFIX), key=_segment_number)

    def _open_segment(self) -> None:
        existing = self.segments()
        last = max(_segment_number(existing[-1]) if existing else 0, self.read_checkpoint()[0])
        self._segment = last + 1  # after every segment there is or was: the loop never skips it
        path = self.folder / f"{self._segment:012d}{_SUFFIX}"
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        if self._descriptor is not None:
            os.close(self._descriptor)
        self._descriptor, self._size = descriptor, 0

    def append(self, event: UsageEvent) -> None:
        line = usage_line(event).encode()
        with self._write_lock:
            if self._descriptor is None or self._size >= SEGMENT_BYTES:
                self._open_segment()
            os.write(self._descriptor, line)  # type: ignore[arg-type]
            self._size += len(line)
            self.appended += 1
        if self.loop is not None:
            self.loop.wake()

    def end(self) -> tuple[int, int]:
        """The position after the last line in the journal, this process's or one left before."""
        with self._write_lock:
            segments = self.segments()
            if not segments:
                return self._segment, self._size
            last = segments[-1]
            return _segment_number(last), last.stat().st_size

    @property
    def writing(self) -> int:
        return self._segment

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until the loop has metered every line in the journal (True at once without a loop)."""
        return self.loop.flush(timeout) if self.loop is not None else True

    def close(self, drain_seconds: float = 5.0) -> None:
        """Stop the loop (metering what is left for up to `drain_seconds`) and give up the slot."""
        if self._lock_descriptor < 0:
            return
        if self.loop is not None:
            self.loop.stop(drain_seconds)
        with self._write_lock:
            if self._descriptor is not None:
                os.close(self._descriptor)
                self._descriptor = None
            os.close(self._lock_descriptor)
            self._lock_descriptor = -1

    # -- reading (the metering loop) -------------------------------------------------------------

    def read_checkpoint(self) -> tuple[int, int]:
        try:
            segment, offset = (self.folder / "checkpoint").read_text().split()
            return int(segment), int(offset)
        except (FileNotFoundError, ValueError):
            return 0, 0

    def write_checkpoint(self, segment: int, offset: int) -> None:
        temporary = self.folder / "checkpoint.new"
        temporary.write_text(f"{segment} {offset}\n")
        os.replace(temporary, self.folder / "checkpoint")

    def read(self, segment: int, offset: int) -> tuple[list[str], int, int]:
        """Complete lines from (segment, offset) on, and the position after them. Segments
        wholly metered are deleted; a segment no process writes any more ends at its last byte."""
        for path in self.segments():
            number = _segment_number(path)
            if number < segment:
                path.unlink(missing_ok=True)
                continue
            if number > segment:
                segment, offset = number, 0
            with open(path, "rb") as journal:
                journal.seek(offset)
                data = journal.read(READ_BYTES)
            end = data.rfind(b"\n") + 1
            finished = number != self.writing
            if end == 0 and finished and data and len(data) < READ_BYTES:
                end = len(data)  # a partial last line of a crashed writer: metered (and rejected) alone
            if end:
                return data[:end].decode("utf-8", "replace").splitlines(), segment, offset + end
            if not finished:
                return [], segment, offset
            path.unlink(missing_ok=True)
        return [], segment, offset


class MeteringLoop:
    """A thread that meters what the journal holds, batch by batch, and checkpoints after each.

    Before a batch smaller than `BATCH_LINES` it lingers up to `linger_seconds` for more lines,
    so steady traffic is metered in large batches rather than a transaction per few requests: on
    DynamoDB Local a transaction costs ~45-60 ms of CPU whatever its size (one event: ~46 ms
    each; forty: ~1.5 ms each), and that CPU is the same two cores Parley runs on. `flush` and
    `stop` cut the linger short."""

    def __init__(
        self,
        journal: UsageJournal,
        store: UsageStore,
        after_batch: Callable[[], Any] | None = None,
        idle_seconds: float = 1.0,
        linger_seconds: float = 0.5,
    ) -> None:
        self.journal = journal
        self.store = store
        self.dead_letters = FileDeadLetters(journal.folder.parent / "dead-letters.jsonl")
        self._after_batch = after_batch
        self._idle_seconds = idle_seconds
        self._linger_seconds = linger_seconds
        self._wake = threading.Event()
        self._urgent = threading.Event()
        self._progress = threading.Condition()
        self._stopping = False
        self._drain_until = 0.0
        self._position = journal.read_checkpoint()
        self.recorded = self.already_recorded = self.dead_lettered = 0  # lines, since this loop started
        journal.loop = self
        self._thread = threading.Thread(target=self._run, name="parley-metering", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _pass(self) -> int:
        """Meter one batch; how many lines it had."""
        lines, segment, offset = self.journal.read(*self._position)
        if not lines:
            with self._progress:
                self._position = (segment, offset)
                self._progress.notify_all()
            return 0
        report = meter_lines(lines, self.store, self.dead_letters)
        if report.unavailable:
            raise ConnectionError(f"{len(report.unavailable)} usage events could not be written yet")
        self.journal.write_checkpoint(segment, offset)
        with self._progress:
            self._position = (segment, offset)
            self.recorded += report.recorded
            self.already_recorded += report.already_recorded
            self.dead_lettered += report.dead_letters
            self._progress.notify_all()
        if self._after_batch is not None:
            try:
                self._after_batch()
            except Exception:  # rate-limit token counts: kept in memory for the next try
                logger.warning("rate-limit token counts not written yet", exc_info=True)
        return len(lines)

    def _linger(self) -> None:
        """Wait a little for more lines, unless a flush or a stop is waiting."""
        if not self._stopping:
            self._urgent.wait(self._linger_seconds)

    def _run(self) -> None:
        backoff = 0.0
        while True:
            if not self._stopping:
                if backoff:  # DynamoDB failing: new lines do not cut the pause short, a flush does
                    self._urgent.wait(backoff)
                elif self._wake.wait(self._idle_seconds):
                    self._linger()
            self._wake.clear()
            self._urgent.clear()
            if self._stopping and time.monotonic() > self._drain_until:
                return
            try:
                while lines := self._pass():
                    if self._stopping and time.monotonic() > self._drain_until:
                        return
                    if lines < BATCH_LINES:
                        self._linger()
                backoff = 0.0
                if self._stopping:
                    return
            except Exception as error:  # DynamoDB unreachable: the lines stay in the journal
                backoff = min(30.0, max(0.5, backoff * 2))
                logger.warning("metering paused %.1f s: %s", backoff, error)
                if self._stopping:
                    return

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every line appended before this call is metered; False on timeout."""
        target = self.journal.end()
        self._urgent.set()
        self.wake()
        deadline = time.monotonic() + timeout
        with self._progress:
            while self._position < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._progress.wait(min(left, 0.5))
                self._urgent.set()
                self.wake()
        return True

    def stop(self, drain_seconds: float = 5.0) -> None:
        """Meter what is left for up to `drain_seconds`; the rest waits in the journal for the next start."""
        self._drain_until = time.monotonic() + drain_seconds
        self._stopping = True
        self._urgent.set()
        self.wake()
        self._thread.join(drain_seconds + 60)
        segment, offset = self._position
        left = sum(path.stat().st_size for path in self.journal.segments()) - (offset if segment else 0)
        if left > 0:
            logger.warning("%d bytes of usage left in %s: metered at the next start", left, self.journal.folder)
