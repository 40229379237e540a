"""Fixtures shared by the integration and end-to-end suites."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.fakeworker import FakeWorker

WORKER_MODEL = "fake-model"


@pytest.fixture(scope="session")
def worker() -> Iterator[FakeWorker]:
    with FakeWorker(model=WORKER_MODEL) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh_worker(request: pytest.FixtureRequest) -> None:
    """Each test that uses the worker starts with an empty script queue and request log."""
    if "worker" in request.fixturenames:
        request.getfixturevalue("worker").reset()
