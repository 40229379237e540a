"""The real Claude Code CLI (`claude -p`, the pinned release and the newest) through Parley to a
real vLLM: with the Qwen template, and with a strict one that refuses Claude Code's later system
messages until Parley folds them. Random weights write anything (text, a tool call, nothing):
the CLI must end cleanly whatever comes, with an answer or an error it reports, never a hang or a
crash."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from parley.io.routes import Route
from parley.settings import Settings
from tests.claude_cli import ClaudeRun, run_claude
from tests.stack import RunningParley, parley_stack, tables_named

from .conftest import PATIENT, PING_SECONDS, vllm_workers
from .servers import VllmServer

CLI_SECONDS = 900.0  # a hang, not a slow machine: a run takes 1-3 minutes here
CRASHES = ("TypeError", "ReferenceError", "Unhandled", "SIGSEGV", "panic", "    at ")


@pytest.fixture(scope="module")
def parley_strict(dynamodb: object, vllm_strict: VllmServer) -> Iterator[RunningParley]:
    """Parley with one route for every claude-* model to the strict-template vLLM, `fold_system`
    not set: Parley learns it from the first refusal."""
    openai, _ = vllm_workers(vllm_strict)
    routes = [Route(model="claude-real-strict", workers=(openai,), timeouts=PATIENT, aliases=("claude-*",))]
    settings = Settings(**tables_named("real-strict"), ping_seconds=PING_SECONDS)
    with parley_stack(dynamodb, settings, routes) as running:
        yield running


def claude_p(binary: Path, parley: RunningParley, tmp_path: Path) -> ClaudeRun:
    home, cwd = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    cwd.mkdir()
    args = ("-p", "Say hello.", "--output-format", "json", "--max-turns", "2")
    # Two retries, not ten: an error must reach the CLI's output, not minutes of backoff.
    return run_claude(
        binary, parley.url, parley.key, home, cwd, *args, timeout=CLI_SECONDS, CLAUDE_CODE_MAX_RETRIES="2"
    )


def assert_ended_cleanly(run: ClaudeRun) -> None:
    assert not any(crash in run.stderr for crash in CRASHES), run.describe()
    result = run.json()
    if run.returncode == 0 and not result.get("is_error"):
        assert isinstance(result.get("result"), str), run.describe()
    else:
        assert run.returncode in (0, 1) and result.get("is_error"), run.describe()
        assert result.get("result") or result.get("errors") or result.get("subtype"), run.describe()


def test_claude_p_through_vllm_ends_cleanly(claude_cli, parley, tmp_path):
    run = claude_p(claude_cli, parley, tmp_path)
    assert_ended_cleanly(run)


def test_claude_p_through_a_strict_template_ends_cleanly_once_parley_folds(claude_cli, parley_strict, tmp_path):
    run = claude_p(claude_cli, parley_strict, tmp_path)
    assert_ended_cleanly(run)
    assert "roles must alternate" not in run.output, "the template's refusal reached Claude Code"
