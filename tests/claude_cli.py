"""Running the real Claude Code CLI against a Parley: a clean environment (`env -i` style), a
scratch HOME and working directory, no network beyond 127.0.0.1, stdin closed."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ["ClaudeRun", "run_claude"]


@dataclass
class ClaudeRun:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    cwd: Path

    @property
    def output(self) -> str:
        return f"{self.stdout}\n{self.stderr}"

    def json(self) -> dict[str, Any]:
        """The `--output-format json` result object (the last JSON line on stdout)."""
        for line in reversed(self.stdout.strip().splitlines()):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict) and value.get("type") == "result":
                return value
        raise AssertionError(f"no JSON result on Claude Code's stdout\n{self.describe()}")

    def describe(self) -> str:
        return (
            f"claude {' '.join(self.args)}\nexit code {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


def run_claude(
    binary: Path, url: str, key: str, home: Path, cwd: Path, *args: str, timeout: float, **env: str
) -> ClaudeRun:
    """`claude ARGS...` against the Parley at `url`; a run that outlives `timeout` fails the test
    (a hang), with what the CLI printed so far. `env`: more variables for the CLI."""
    environment = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "TERM": "dumb",
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": key,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        **env,
    }
    try:
        done = subprocess.run(
            [str(binary), *args],
            cwd=cwd,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(
            f"claude {' '.join(args)} did not finish in {timeout} s\n--- stdout ---\n{out}\n--- stderr ---\n{err}"
        )
    return ClaudeRun(list(args), done.returncode, done.stdout, done.stderr, cwd)
