"""llama.cpp's server on loopback (llama-cpp-python's), serving the tiny GGUF of `tiny_gguf.py`.

`LlamaCppServer(python, model_path, log)`: started as `python -m llama_cpp.server` from its own
environment (`llama-cpp-python[server]`, built from source), in a process group of its own, with
its log in a file. The chat template is the GGUF's own (`--chat_format chat_template.default`,
llama-cpp-python's name for `tokenizer.chat_template`), rendered by llama-cpp-python's Jinja.
It has no /health: the model loads before uvicorn listens, so it is ready once `GET /v1/models`
answers 200.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import IO

from .servers import SERVED_MODEL, _free_port

__all__ = ["CONTEXT_TOKENS", "LlamaCppServer"]

CONTEXT_TOKENS = 8192
READY_SECONDS = 120.0  # a safety net: ready in 2 s
STOP_SECONDS = 10.0


class LlamaCppServer:
    def __init__(self, python: Path, model_path: Path, log: Path, *extra: str) -> None:
        self.python = python
        self.model_path = model_path
        self.log = log
        self.extra = extra
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (its extras, /extras/tokenize, are on the root)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    def command(self) -> list[str]:
        return [
            str(self.python),
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--model_alias",
            SERVED_MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(CONTEXT_TOKENS),
            "--chat_format",
            "chat_template.default",
            "--n_threads",
            "1",
            "--n_threads_batch",
            "1",
            *self.extra,
        ]

    def start(self) -> "LlamaCppServer":
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            self.command(),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + READY_SECONDS
        while not self._ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp exited with {self.process.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"llama.cpp was not ready after {READY_SECONDS:g} s; see {self.log}")
            time.sleep(0.5)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                # uvicorn waits for open connections to close, and a generation goes on to its end
                # even when its client has left: a stuck one is killed.
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        if self._log_file is not None:
            self._log_file.close()

    def __enter__(self) -> "LlamaCppServer":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
