"""`make dev` as a user runs it (`parley dev`): Amazon DynamoDB Local as a child process with its
data in PARLEY_DATA_DIR, a dev key, the demo worker; usage metered through its journal and still
there after a restart; SIGTERM and Ctrl-C stop Parley and DynamoDB Local; no Java, a clear message."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import anthropic
import httpx
import pytest

from tests.stack import free_port, wait_until_healthy

DEV_KEY = "sk-parley-dev-stack-test-0123456789"


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        children.extend(int(child) for child in text)
    return children


def _is_dynamodb_local(pid: int) -> bool:
    return "DynamoDBLocal.jar" in Path(f"/proc/{pid}/cmdline").read_text()


class DevProcess:
    def __init__(self, data_dir: Path, port: int, extra_env: dict[str, str] | None = None) -> None:
        env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "PARLEY_"))}
        env.update({"PARLEY_DATA_DIR": str(data_dir), "PARLEY_PORT": str(port), "PARLEY_DEV_KEY": DEV_KEY})
        env.update(extra_env or {})
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", "dev"],
            env=env,
            cwd=data_dir.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def stop(self, signal_number: int = signal.SIGTERM) -> tuple[int, str]:
        self.process.send_signal(signal_number)
        output, _ = self.process.communicate(timeout=60)
        return self.process.returncode, output


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevProcess]:
    started = DevProcess(tmp_path / "data", free_port())
    try:
        wait_until_healthy(started.url, lambda: started.process.poll() is None, 120)
        yield started
    finally:
        if started.process.poll() is None:
            started.process.kill()
            started.process.wait()


def test_dev_stack_meters_into_dynamodb_local_and_keeps_its_data_across_a_restart(dev, tmp_path):
    [java] = [
        child
        for child in _children(dev.process.pid)
        if "DynamoDBLocal.jar" in Path(f"/proc/{child}/cmdline").read_text()
    ]
    client = anthropic.Anthropic(base_url=dev.url, api_key=DEV_KEY, max_retries=0)
    for number in range(3):
        message = client.messages.create(
            model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": f"hello {number}"}]
        )
        assert message.content[0].text
    with client.messages.stream(model="parley-demo", max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as s:
        s.get_final_message()

    returncode, output = dev.stop()
    assert returncode == 0, output
    assert "Parley is running on" in output and DEV_KEY in output
    assert not Path(f"/proc/{java}").exists(), "DynamoDB Local stopped with make dev"
    assert (tmp_path / "data" / "dynamodb" / "shared-local-instance.db").is_file()

    again = DevProcess(tmp_path / "data", free_port())
    try:
        wait_until_healthy(again.url, lambda: again.process.poll() is None, 120)
        [java] = [child for child in _children(again.process.pid) if _is_dynamodb_local(child)]
        usage = httpx.get(f"{again.url}/v1/usage", headers={"x-api-key": DEV_KEY}, timeout=30).json()
        [today] = usage["data"]
        assert today["requests"] == 4, "the usage of the first run survived the restart"
    finally:
        returncode, output = again.stop(signal.SIGINT)  # Ctrl-C in the terminal
    assert returncode == 0, output
    assert not Path(f"/proc/{java}").exists(), "DynamoDB Local stopped with make dev on Ctrl-C"


def test_without_java_make_dev_says_what_to_install(tmp_path):
    no_java = DevProcess(tmp_path / "data", free_port(), {"PATH": "/nonexistent", "JAVA_HOME": "/nonexistent"})
    output, _ = no_java.process.communicate(timeout=60)
    assert no_java.process.returncode != 0
    assert "Java 17 or newer" in output and "openjdk-17-jre-headless" in output, output


def test_dev_stack_serves_message_batches_end_to_end(dev):
    """`make dev` runs batches itself: its own S3 and SQS (moto's server, a child that stops with
    it), its own poller, the demo worker answering each request."""
    client = anthropic.Anthropic(base_url=dev.url, api_key=DEV_KEY, max_retries=0)
    batch = client.messages.batches.create(
        requests=[
            {
                "custom_id": f"q{number}",
                "params": {
                    "model": "claude-sonnet-4-5",
                    "max_tokens": 64,
                    "messages": [{"role": "user", "content": f"question {number}"}],
                },
            }
            for number in range(3)
        ]
    )
    deadline = time.monotonic() + 120
    while client.messages.batches.retrieve(batch.id).processing_status != "ended":
        assert time.monotonic() < deadline, "the batch did not end"
        time.sleep(0.2)
    results = {entry.custom_id: entry.result for entry in client.messages.batches.results(batch.id)}
    assert sorted(results) == ["q0", "q1", "q2"]
    for number in range(3):
        assert results[f"q{number}"].type == "succeeded"
        assert f"question {number}" in results[f"q{number}"].message.content[0].text, "the demo worker echoes"
    [moto] = [
        child for child in _children(dev.process.pid) if "moto.server" in Path(f"/proc/{child}/cmdline").read_text()
    ]
    returncode, output = dev.stop()
    assert returncode == 0, output
    assert not Path(f"/proc/{moto}").exists(), "the batch store stopped with make dev"
