"""The real-worker suite (`make test-real`): Parley in front of a real vLLM serving a tiny model
with random weights. Collected only when PARLEY_REAL_PYTHON names the inference server's Python
(make test-real installs it); `make test` leaves these files alone.

Random weights write random words: the tests check shapes, stop reasons, grammar and counts,
never words.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from parley.io.routes import Route, Timeouts, Worker
from parley.settings import Settings
from tests.stack import RunningParley, parley_stack, tables_named

from .servers import SERVED_MODEL, VllmServer

REAL_PYTHON = os.environ.get("PARLEY_REAL_PYTHON")
if not REAL_PYTHON:
    collect_ignore_glob = ["test_*.py"]

ROOT = Path(__file__).resolve().parents[2]
MODEL = "claude-real-vllm"
PATIENT = Timeouts(connect=5.0, first_byte=300.0, idle=120.0, buffered=300.0)


@pytest.fixture(scope="session")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    folder = tmp_path_factory.mktemp("vllm")
    model = folder / "tiny-qwen"
    # The server's Python has `tokenizers`; Parley's environment does not need it.
    subprocess.run([str(REAL_PYTHON), "-m", "tests.real.tiny_model", str(model)], cwd=ROOT, check=True)
    with VllmServer(Path(str(REAL_PYTHON)), model, folder / "vllm.log") as server:
        yield server


@pytest.fixture(scope="session")
def parley(dynamodb: object, vllm: VllmServer) -> Iterator[RunningParley]:
    worker = Worker(base_url=vllm.base_url, model=SERVED_MODEL, max_output_tokens=512, context_tokens=65536)
    routes = [Route(model=MODEL, workers=(worker,), timeouts=PATIENT)]
    with parley_stack(dynamodb, Settings(**tables_named("real"), ping_seconds=2.0), routes) as running:
        yield running
