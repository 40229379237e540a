"""The real Claude Code CLI, non-interactive (`claude -p`), through Parley to the fake worker."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from tests.fakeworker import Answer, FakeWorker, ToolCall, WorkerError

BILLING_HEADER = "x-anthropic-billing-header"


def chat_requests(worker: FakeWorker) -> list[dict[str, Any]]:
    """The Chat Completions bodies the worker received, in order."""
    bodies = [request["body"] for request in worker.requests if request["path"].split("?")[0] == "/v1/chat/completions"]
    assert all(isinstance(body, dict) for body in bodies), "the worker received a non-JSON body"
    return bodies


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def test_say_hi(claude, worker, route):
    worker.enqueue(Answer(text="Hello from the worker", flavour="vllm"))

    run = claude("-p", "say hi", "--output-format", "json")

    assert run.returncode == 0, run.describe()
    result = run.json()
    assert result["is_error"] is False, run.describe()
    assert "Hello from the worker" in result["result"], run.describe()

    bodies = chat_requests(worker)
    assert len(bodies) == 1, f"expected one worker request, got {len(bodies)}"
    body = bodies[0]
    assert body["model"] == route.worker.model
    assert body["stream"] is True, "Claude Code streams, so Parley should stream from the worker"
    assert body["max_tokens"] == route.worker.max_output_tokens == 4096, (
        "Claude Code asks for 64000; the route clamps to the worker's limit"
    )
    system = [text_of(message.get("content")) for message in body["messages"] if message["role"] == "system"]
    assert system, "Claude Code's system prompt should reach the worker as a system message"
    assert all(BILLING_HEADER not in text for text in system), (
        "the per-request billing line must be dropped (it would defeat the worker's prefix cache)"
    )
    assert any("say hi" in text_of(message.get("content")) for message in body["messages"] if message["role"] == "user")


def test_write_tool_loop(claude, worker, tmp_path):
    target = tmp_path / "work" / "hello.txt"
    call = ToolCall(
        "Write",
        {"file_path": str(target), "content": "hi from parley"},
        id="chatcmpl-tool-5e1f0c2a9b7d4e3f8a6b1c0d2e4f6a8b",
    )
    worker.enqueue(Answer(tool_calls=[call], flavour="vllm"), Answer(text="Done", flavour="vllm"))

    run = claude(
        "-p", f"Create {target} containing: hi from parley", "--output-format", "json", "--allowedTools", "Write"
    )

    assert run.returncode == 0, run.describe()
    assert target.is_file(), f"Claude Code did not write {target}\n{run.describe()}"
    assert target.read_text() == "hi from parley"

    bodies = chat_requests(worker)
    assert len(bodies) == 2, (
        f"expected two worker requests (tool call, then its result), got {len(bodies)}\n{run.describe()}"
    )
    first, second = bodies
    assert "Write" in [tool["function"]["name"] for tool in first.get("tools", [])], (
        "Claude Code's tools reach the worker"
    )
    assistant = [
        message for message in second["messages"] if message["role"] == "assistant" and message.get("tool_calls")
    ]
    # Claude Code saw Parley's Anthropic-shaped id for vLLM's chatcmpl-tool-… one, and its turn
    # pairs the call with its result by that id.
    issued = assistant[-1]["tool_calls"][0]["id"] if assistant else None
    assert issued and issued.startswith("toolu_") and issued != call.id
    assert assistant[-1]["tool_calls"][0]["function"]["name"] == "Write"
    tool_messages = [message for message in second["messages"] if message["role"] == "tool"]
    assert [message["tool_call_id"] for message in tool_messages] == [issued], second["messages"][-3:]
    assert str(target) in text_of(tool_messages[0]["content"]), "the tool result is Claude Code's Write confirmation"

    result = run.json()
    assert result["is_error"] is False, run.describe()
    assert "Done" in result["result"], run.describe()


# What vLLM answers when the prompt plus max_tokens exceeds the model's context window.
CONTEXT_LENGTH_MESSAGE = (
    "This model's maximum context length is 32768 tokens. However, you requested 40000 tokens "
    "(35904 in the messages, 4096 in the completion). Please reduce the length of the messages or completion."
)
CONTEXT_LENGTH_ERROR = WorkerError(
    400, {"object": "error", "message": CONTEXT_LENGTH_MESSAGE, "type": "BadRequestError", "param": None, "code": 400}
)


def test_worker_error_reaches_the_user_json(claude, worker):
    worker.enqueue(CONTEXT_LENGTH_ERROR)

    run = claude("-p", "say hi", "--output-format", "json")

    assert run.returncode != 0, run.describe()
    result = run.json()
    # Claude Code 2.1.197 reports an API error as subtype "success" with is_error set.
    assert result["is_error"] is True, run.describe()
    assert result["api_error_status"] == 400, run.describe()
    assert result["result"] == f"API Error: 400 {CONTEXT_LENGTH_MESSAGE}", run.describe()
    assert len(chat_requests(worker)) == 1, "a 400 is the caller's error: Parley says x-should-retry: false"


def test_worker_error_reaches_the_user_text(claude, worker):
    worker.enqueue(CONTEXT_LENGTH_ERROR)

    run = claude("-p", "say hi")

    assert run.returncode != 0, run.describe()
    assert run.stdout.strip() == f"API Error: 400 {CONTEXT_LENGTH_MESSAGE}", run.describe()
    assert len(chat_requests(worker)) == 1, "a 400 is the caller's error: Parley says x-should-retry: false"


PLACEHOLDER = re.compile(r"<EMAIL_[0-9a-f]{10}>")
EMAIL = "jane.doe@example.org"


def test_personal_data_never_reaches_the_worker_and_claude_code_gets_it_back(
    claude, parley, worker, tmp_path, monkeypatch
):
    """Under a masking policy the worker sees a placeholder on every turn (the same one), while
    Claude Code's Write tool gets the real address back in the call's arguments."""
    monkeypatch.setenv("PARLEY_PII_KEY", secrets.token_hex(32))
    account = f"e2e-guarded-{secrets.token_hex(3)}"
    parley.services.policies.put(account, {"pii": {"mode": "mask"}})
    key, _ = parley.services.keys.create(account=account, name="guarded")
    target = tmp_path / "work" / "to.txt"
    prompt = f"Write the address {EMAIL} into {target}"

    worker.enqueue(Answer(text="Which file?", flavour="vllm"))
    assert claude("-p", prompt, key=key).returncode == 0
    (placeholder,) = set(PLACEHOLDER.findall(json.dumps(chat_requests(worker))))

    call = ToolCall("Write", {"file_path": str(target), "content": f"mail {placeholder}"}, id="call_1")
    worker.enqueue(Answer(tool_calls=[call], flavour="vllm"), Answer(text="Done", flavour="vllm"))
    run = claude("-p", prompt, "--output-format", "json", "--allowedTools", "Write", key=key)
    assert run.returncode == 0, run.describe()
    assert target.read_text() == f"mail {EMAIL}", run.describe()
    sent = json.dumps(chat_requests(worker))
    assert EMAIL not in sent, "the worker saw the address"
    assert set(PLACEHOLDER.findall(sent)) == {placeholder}, "one value, one placeholder, on every turn"
