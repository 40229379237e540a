"""The real-worker suite (`make test-real`): Parley in front of real inference servers serving tiny
models with random weights. Collected only when PARLEY_REAL_PYTHON names vLLM's Python (make
test-real installs it); `make test` leaves these files alone.

Random weights write random words: the tests check shapes, stop reasons, grammar and counts,
never words. Where a check needs the same answer twice it asks for greedy decoding
(`temperature: 0`): vLLM's dummy weights come from a fixed seed, so the answer is repeatable.
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
"""Parley's route to vLLM's OpenAI API (/v1/chat/completions)."""
NATIVE_MODEL = "claude-real-vllm-native"
"""Parley's route to vLLM's own Anthropic API (/v1/messages): an `api: anthropic` passthrough."""
PATIENT = Timeouts(connect=5.0, first_byte=300.0, idle=120.0, buffered=300.0)
CONTEXT_TOKENS = 65536
MAX_OUTPUT_TOKENS = 512
PING_SECONDS = 2.0


def tiny_model(folder: Path, template: str = "qwen") -> Path:
    """The tiny model's directory, written by the server's Python (it has `tokenizers`; Parley's
    environment does not need it)."""
    model = folder / f"tiny-{template}"
    command = [str(REAL_PYTHON), "-m", "tests.real.tiny_model", str(model), "--template", template]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return model


def vllm_workers(server: VllmServer, **quirks: object) -> tuple[Worker, Worker]:
    """The server as Parley's OpenAI worker and as its Anthropic (passthrough) worker."""
    limits = {"max_output_tokens": MAX_OUTPUT_TOKENS, "context_tokens": CONTEXT_TOKENS}
    openai = Worker(base_url=server.base_url, model=SERVED_MODEL, **limits, **quirks)
    anthropic = Worker(base_url=server.base_url, model=SERVED_MODEL, api="anthropic", **limits)
    return openai, anthropic


@pytest.fixture(scope="session")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """vLLM serving the tiny model with the Qwen template. PARLEY_REAL_VLLM_PORT names one already
    serving it on that loopback port (for working on the suite: vLLM takes 1-2 min to start);
    the tests that stop and restart vLLM then skip."""
    folder = tmp_path_factory.mktemp("vllm")
    if os.environ.get("PARLEY_REAL_VLLM_PORT"):
        yield VllmServer.running(int(os.environ["PARLEY_REAL_VLLM_PORT"]))
        return
    with VllmServer(Path(str(REAL_PYTHON)), tiny_model(folder), folder / "vllm.log") as server:
        yield server


@pytest.fixture(scope="session")
def parley(dynamodb: object, vllm: VllmServer) -> Iterator[RunningParley]:
    openai, anthropic = vllm_workers(vllm)
    routes = [
        Route(model=MODEL, workers=(openai,), timeouts=PATIENT, aliases=("claude-*",)),
        Route(model=NATIVE_MODEL, workers=(anthropic,), timeouts=PATIENT),
    ]
    settings = Settings(**tables_named("real"), ping_seconds=PING_SECONDS)
    with parley_stack(dynamodb, settings, routes) as running:
        yield running


@pytest.fixture(scope="module")
def vllm_strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """vLLM serving the tiny model with a template that, like Mistral's and Gemma's, refuses a
    system message anywhere but first. PARLEY_REAL_VLLM_STRICT_PORT: one already serving it."""
    if os.environ.get("PARLEY_REAL_VLLM_STRICT_PORT"):
        yield VllmServer.running(int(os.environ["PARLEY_REAL_VLLM_STRICT_PORT"]))
        return
    folder = tmp_path_factory.mktemp("vllm-strict")
    with VllmServer(Path(str(REAL_PYTHON)), tiny_model(folder, "strict"), folder / "vllm.log") as server:
        yield server


CLAUDES = {
    "pinned": ROOT / "node_modules" / ".bin" / "claude",
    "newest": Path(os.environ.get("PARLEY_REAL_CLAUDE", "/nonexistent")),
}
"""The Claude Code CLIs: the one package.json pins, and the newest (make test-real installs it
into its cache and names it in PARLEY_REAL_CLAUDE)."""


@pytest.fixture(params=sorted(CLAUDES))
def claude_cli(request: pytest.FixtureRequest) -> Path:
    binary = CLAUDES[request.param]
    if not binary.is_file():
        pytest.fail(f"Claude Code ({request.param}) is not installed at {binary}: run make test-real", pytrace=False)
    return binary
