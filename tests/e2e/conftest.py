"""End to end: the real Claude Code CLI → Parley (uvicorn, DynamoDB Local) → the fake worker.

The CLI is pinned in /package.json and installed with `npm ci` into node_modules/ (git-ignored).
It runs with a clean environment (`env -i` style), a scratch HOME and working directory, no
network beyond 127.0.0.1, and stdin closed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from parley.io.routes import Route, Worker
from parley.settings import Settings
from tests.claude_cli import ClaudeRun, run_claude
from tests.fakeworker import FakeWorker
from tests.stack import RunningParley, parley_stack

ROOT = Path(__file__).resolve().parents[2]
CLAUDE = ROOT / "node_modules" / ".bin" / "claude"
CLAUDE_VERSION = "2.1.197"  # as pinned in package.json

MODEL = "qwen-test"
WORKER_MODEL = "fake-model"
MAX_OUTPUT_TOKENS = 4096
CLI_TIMEOUT_SECONDS = 120


@pytest.fixture(scope="session")
def route(worker: FakeWorker) -> Route:
    """The one route: every claude-* model (Claude Code asks for claude-opus-4-8) → the fake worker."""
    return Route(
        model=MODEL,
        workers=(Worker(base_url=worker.base_url, model=WORKER_MODEL, max_output_tokens=MAX_OUTPUT_TOKENS),),
        aliases=("claude-*",),
    )


@pytest.fixture(scope="session")
def parley(dynamodb: Any, route: Route) -> Iterator[RunningParley]:
    settings = Settings(
        keys_table="e2e-keys",
        routes_table="e2e-routes",
        ping_seconds=2.0,
    )
    with parley_stack(dynamodb, settings, [route], account="e2e") as running:
        yield running


def require_claude() -> Path:
    """The CLI binary, or a failure (never a skip) that says how to install it."""
    if not (CLAUDE.is_file() and os.access(CLAUDE, os.X_OK)):
        pytest.fail(
            f"Claude Code is not installed: {CLAUDE} is missing.\n"
            f"Run `npm ci` in {ROOT} (installs @anthropic-ai/claude-code@{CLAUDE_VERSION} from package-lock.json).",
            pytrace=False,
        )
    return CLAUDE


@pytest.fixture
def claude(parley: RunningParley, tmp_path: Path) -> Callable[..., ClaudeRun]:
    """Run `claude ARGS...` against Parley in a scratch HOME and working directory (`key`: another
    API key than the stack's)."""
    home = tmp_path / "home"
    cwd = tmp_path / "work"
    home.mkdir()
    cwd.mkdir()

    def run(*args: str, timeout: float = CLI_TIMEOUT_SECONDS, key: str | None = None) -> ClaudeRun:
        return run_claude(require_claude(), parley.url, key or parley.key, home, cwd, *args, timeout=timeout)

    return run
