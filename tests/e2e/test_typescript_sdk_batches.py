"""The official TypeScript SDK (@anthropic-ai/sdk, pinned in package.json) and message batches,
unchanged: create a batch of five (one without max_tokens), poll it until it ends, read its
results through the SDK's JSONL decoder, list, delete, judged by what the SDK handed back.

The stack has its own tables, bucket and queue, and its own process polls the queue, so the
batch runs through Parley to the fake worker, which answers each request with a text of its own.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from parley.io.routes import Route
from parley.settings import Settings
from tests.fakeworker import Answer, FakeWorker
from tests.stack import RunningParley, parley_stack, tables_named

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "e2e" / "node" / "batch_results.mjs"
SDK = ROOT / "node_modules" / "@anthropic-ai" / "sdk" / "package.json"
SDK_VERSION = "1.12.0"  # as pinned in package.json
MODEL = "claude-sonnet-4-6"  # the e2e route's claude-* alias
NAME = "e2e-ts-batches"  # this stack's tables, bucket and queue
CUSTOM_IDS = ["a", "b", "c", "d", "e"]
INVALID = "c"  # sent without max_tokens
_BATCH_ID = re.compile(r"msgbatch_[0-9A-Za-z]+")
_REQUEST = re.compile(r"request (\w+)")


def answer_to(custom_id: str) -> str:
    """What the fake worker says to `request <custom_id>`."""
    return f"the answer to request {custom_id}"


def respond(body: Any) -> Answer:
    """The fake worker's answer, from the request's last user message (text or text parts)."""
    content = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content)
    return Answer(text=answer_to(_REQUEST.search(content).group(1)))


@pytest.fixture(scope="module")
def batch_parley(dynamodb: Any, batch_store_backends: Any, route: Route) -> Iterator[RunningParley]:
    settings = Settings(**tables_named(NAME), **batch_store_backends.settings_for(NAME))
    with parley_stack(
        dynamodb, settings, [route], account="e2e-ts-batches", batch_backends=batch_store_backends
    ) as running:
        yield running


@pytest.fixture(scope="module")
def seen(batch_parley: RunningParley, worker: FakeWorker) -> dict[str, Any]:
    """What the script saw, once for the module, and the chat calls the fake worker got."""
    node = shutil.which("node")
    if node is None or not SDK.is_file():
        pytest.fail(f"node or @anthropic-ai/sdk@{SDK_VERSION} is missing: run `npm ci` in {ROOT}", pytrace=False)
    worker.reset()
    worker.responder = respond
    try:
        done = subprocess.run(
            [node, str(SCRIPT), batch_parley.url, batch_parley.key, MODEL],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        calls = [r for r in worker.requests if r["path"].startswith("/v1/chat/completions")]
    finally:
        worker.responder = None
    assert done.returncode == 0, f"exit {done.returncode}\n--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "worker_calls": calls}


def test_sdk_version_is_the_pinned_one():
    assert json.loads(SDK.read_text())["version"] == SDK_VERSION


def test_the_created_batch_is_in_progress_with_five_requests(seen):
    created = seen["created"]
    assert _BATCH_ID.fullmatch(created["id"]), created["id"]
    assert created["type"] == "message_batch"
    assert created["processing_status"] == "in_progress"
    assert created["request_counts"] == {"processing": 5, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    assert created["results_url"] is None and created["ended_at"] is None
    assert created["created_at"] and created["expires_at"]


def test_the_ended_batch_counts_four_succeeded_and_one_errored(seen):
    ended = seen["ended"]
    assert ended["id"] == seen["created"]["id"]
    assert ended["processing_status"] == "ended"
    assert ended["request_counts"] == {"processing": 0, "succeeded": 4, "errored": 1, "canceled": 0, "expired": 0}
    assert ended["ended_at"] and ended["archived_at"] is None and ended["cancel_initiated_at"] is None
    assert ended["results_url"] == f"/v1/messages/batches/{ended['id']}/results"


def test_each_result_is_its_requests_answer(seen):
    results = {entry["custom_id"]: entry["result"] for entry in seen["results"]}
    assert sorted(results) == CUSTOM_IDS and len(seen["results"]) == 5, "one entry per request"
    assert {cid: r["type"] for cid, r in results.items()} == {
        cid: "errored" if cid == INVALID else "succeeded" for cid in CUSTOM_IDS
    }
    for custom_id in CUSTOM_IDS:
        if custom_id == INVALID:
            continue
        message = results[custom_id]["message"]
        assert message["type"] == "message" and message["role"] == "assistant"
        assert message["id"].startswith("msg_")
        assert message["model"] == MODEL
        assert message["stop_reason"] == "end_turn"
        assert [block["type"] for block in message["content"]] == ["text"]
        assert message["content"][0]["text"] == answer_to(custom_id)
        assert message["usage"]["input_tokens"] > 0 and message["usage"]["output_tokens"] > 0
    # The worker answered the four valid requests, each once; the invalid one never reached it.
    asked = sorted(_REQUEST.search(json.dumps(call["body"])).group(1) for call in seen["worker_calls"])
    assert asked == [cid for cid in CUSTOM_IDS if cid != INVALID]


def test_the_request_without_max_tokens_errored_naming_the_field(seen):
    errored = next(entry["result"] for entry in seen["results"] if entry["custom_id"] == INVALID)
    error = errored["error"]
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in error["error"]["message"], error


def test_the_list_shows_the_batch(seen):
    batch_id = seen["created"]["id"]
    listed = seen["list"]
    assert listed["ids"] == [batch_id], "this stack's account has made this one batch"
    assert listed["has_more"] is False
    assert listed["first_id"] == listed["last_id"] == batch_id


def test_delete_answers_the_deleted_batch_and_it_is_gone(seen):
    batch_id = seen["created"]["id"]
    assert seen["deleted"] == {"id": batch_id, "type": "message_batch_deleted"}
    gone = seen["afterDelete"]
    assert gone["error"] == "NotFoundError" and gone["status"] == 404, gone
    assert gone["body"]["type"] == "error" and gone["body"]["error"]["type"] == "not_found_error"
