"""Fixtures shared by the integration and end-to-end suites."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.fakeworker import FakeWorker
from tests.stack import BatchBackendsForTests, batch_backends, embedded_dynamodb

WORKER_MODEL = "fake-model"


@pytest.fixture(scope="session")
def dynamodb() -> Iterator[Any]:
    """Amazon DynamoDB Local, one server for the whole run; each stack makes its own tables."""
    with embedded_dynamodb() as client:
        yield client


@pytest.fixture(scope="session")
def batch_store_backends(dynamodb: Any) -> Iterator[BatchBackendsForTests]:
    """The embedded S3 and SQS of message batches, one server for the whole run; each stack makes
    its own bucket and queue (`settings_for`)."""
    with batch_backends() as backends:
        yield backends


@pytest.fixture(scope="session")
def worker() -> Iterator[FakeWorker]:
    with FakeWorker(model=WORKER_MODEL) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh_worker(request: pytest.FixtureRequest) -> None:
    """Each test that uses the worker starts with an empty script queue and request log."""
    if "worker" in request.fixturenames:
        request.getfixturevalue("worker").reset()


class _EveryLogRecord(logging.Handler):
    """Keeps every log line the suite produces, to prove no key or key hash is ever logged."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        extra = {name: value for name, value in vars(record).items() if name not in _STANDARD_RECORD_FIELDS}
        self.lines.append(f"{record.name} {text} {extra}")


_STANDARD_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_SECRETS = re.compile(r"sk-parley-[A-Za-z0-9_-]{6,}|sk-test-[A-Za-z0-9_-]+|\b[0-9a-f]{64}\b")
_LOGS = _EveryLogRecord()


_REPO_JOURNAL = Path(__file__).resolve().parents[1] / ".parley" / "usage"


def _journal_files() -> set[Path]:
    return set(_REPO_JOURNAL.rglob("*")) if _REPO_JOURNAL.exists() else set()


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger().addHandler(_LOGS)
    logging.getLogger("parley").setLevel(logging.INFO)
    config.stash[_JOURNAL_BEFORE] = _journal_files()


def _error_bodies() -> list[str]:
    stack = sys.modules.get("tests.stack")
    return getattr(stack, "ERROR_BODIES", [])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaks = [line for line in [*_LOGS.lines, *_error_bodies()] if _SECRETS.search(line)]
    session.config.stash[_LEAKS] = leaks
    # A stack built with the default settings would journal test usage into the developer's own
    # .parley, for their next `make dev` to meter: every test stack has a journal of its own.
    strays = sorted(str(path) for path in _journal_files() - session.config.stash.get(_JOURNAL_BEFORE, set()))
    session.config.stash[_STRAYS] = strays
    if leaks or strays:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    leaks = config.stash.get(_LEAKS, [])
    terminalreporter.write_line(
        f"secret scan: {len(_LOGS.lines)} log lines and {len(_error_bodies())} error answers, "
        f"{len(leaks)} with a key or key hash"
    )
    for line in leaks[:20]:
        terminalreporter.write_line(f"LEAK: {line[:300]}", red=True)
    for path in config.stash.get(_STRAYS, [])[:20]:
        terminalreporter.write_line(f"a test wrote into the repository's usage journal: {path}", red=True)
    fuzzing = next((module for name, module in sys.modules.items() if name.endswith(".fuzzing")), None)
    if fuzzing is not None and fuzzing.CASES.total:
        parts = ", ".join(f"{name} {count}" for name, count in sorted(fuzzing.CASES.by_test.items()))
        terminalreporter.write_line(f"fuzz: {fuzzing.CASES.total} hostile requests answered correctly ({parts})")
    worker_fuzzing = sys.modules.get("tests.worker_fuzzing")
    if worker_fuzzing is not None and worker_fuzzing.WORKER_ANSWERS.total:
        terminalreporter.write_line(worker_fuzzing.WORKER_ANSWERS.summary())
    openapi = next((module for name, module in sys.modules.items() if name.endswith(".test_openapi")), None)
    if openapi is not None and openapi.CASES:
        total = sum(openapi.CASES.values())
        terminalreporter.write_line(f"schemathesis: {total} cases over {len(openapi.CASES)} operations, all conforming")
    soak = next((module for name, module in sys.modules.items() if name.endswith(".test_soak")), None)
    for line in getattr(soak, "SUMMARIES", []):
        terminalreporter.write_line(line)


_LEAKS = pytest.StashKey[list]()
_STRAYS = pytest.StashKey[list]()
_JOURNAL_BEFORE = pytest.StashKey[set]()
