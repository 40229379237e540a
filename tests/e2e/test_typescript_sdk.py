"""The official TypeScript SDK (@anthropic-ai/sdk, pinned in package.json): a streamed tool call
through Parley to the fake worker, judged by what the SDK's finalMessage() returns."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fakeworker import Answer, ToolCall

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "e2e" / "node" / "stream_tool_call.mjs"
SDK = ROOT / "node_modules" / "@anthropic-ai" / "sdk" / "package.json"
SDK_VERSION = "1.12.0"  # as pinned in package.json


def run_node(*args: str) -> dict:
    node = shutil.which("node")
    if node is None or not SDK.is_file():
        pytest.fail(f"node or @anthropic-ai/sdk@{SDK_VERSION} is missing: run `npm ci` in {ROOT}", pytrace=False)
    done = subprocess.run(
        [node, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, f"exit {done.returncode}\n--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_sdk_version_is_the_pinned_one():
    assert json.loads(SDK.read_text())["version"] == SDK_VERSION


@pytest.mark.parametrize("flavour", ["vllm", "llamacpp"])
def test_streamed_tool_call_final_message(parley, worker, flavour):
    call = ToolCall("get_weather", {"city": "Paris", "unit": "celsius"}, id="call_ts_sdk_0001")
    worker.enqueue(Answer(text="Let me check.", tool_calls=[call], flavour=flavour, prompt_tokens=42))

    result = run_node(parley.url, parley.key, "claude-sonnet-4-6")

    message = result["message"]
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["model"] == "claude-sonnet-4-6"
    assert message["id"].startswith("msg_")
    assert message["stop_reason"] == "tool_use"
    text, tool_use = message["content"]
    assert text == {"type": "text", "text": "Let me check.", **({"citations": None} if "citations" in text else {})}
    assert tool_use["type"] == "tool_use"
    assert tool_use["id"].startswith("toolu_"), "the worker's call_… id becomes an Anthropic-shaped one"
    assert tool_use["name"] == "get_weather"
    assert tool_use["input"] == {"city": "Paris", "unit": "celsius"}
    assert message["usage"]["input_tokens"] == 42 and message["usage"]["output_tokens"] > 0

    events = result["events"]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert events.count("content_block_start") == events.count("content_block_stop") == 2
    # The SDK saw the arguments arrive in pieces, and each snapshot parsed to a growing object.
    assert len(result["inputJson"]) > 1
    assert result["inputJson"][-1] == tool_use["input"]
