"""vLLM killed mid-stream (SIGKILL, as a crash or the OOM killer ends it) and started again: the
client's stream ends with an `error` event and its usage is metered, a request while it is down
gets an error envelope at once, and once it is back the next request is answered.

It stops and restarts the session's vLLM, so it runs last (file order) and skips where the
server is not this run's own (PARLEY_REAL_VLLM_PORT)."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.anthropic_stream import assert_well_formed
from tests.integration.helpers import as_int, parse_sse, wait_for_record

from .conftest import MODEL
from .prompts import HELLO
from .servers import VllmServer


@pytest.fixture
def own_vllm(vllm: VllmServer) -> VllmServer:
    if not vllm.owned:
        pytest.skip("the vLLM server is not this run's own (PARLEY_REAL_VLLM_PORT)")
    return vllm


def test_a_worker_killed_mid_stream_ends_the_stream_with_an_error_and_comes_back(parley, own_vllm):
    body = {"model": MODEL, "max_tokens": 512, "messages": HELLO, "stream": True, "temperature": 0}
    lines = []
    with httpx.Client(base_url=parley.url, headers={"x-api-key": parley.key}, timeout=300) as http:
        with http.stream("POST", "/v1/messages", json=body) as answer:
            assert answer.status_code == 200
            request_id = answer.headers["request-id"]
            for line in answer.iter_lines():
                lines.append(line)
                if line.startswith("event: content_block_delta") and own_vllm.process.poll() is None:
                    own_vllm.kill()
    events = [(item.event or "", item.json()) for item in parse_sse("\n".join(lines).encode() + b"\n\n")]
    result = assert_well_formed(events, expect_error=True)
    assert result.error["type"] in ("api_error", "overloaded_error"), result.error
    assert as_int(wait_for_record(parley, request_id)["output_tokens"]) > 0, "what was streamed is metered"

    client = anthropic.Anthropic(base_url=parley.url, api_key=parley.key, max_retries=0, timeout=120)
    with pytest.raises(anthropic.APIStatusError) as down:
        client.messages.create(model=MODEL, max_tokens=4, messages=HELLO)
    assert down.value.status_code in (502, 503, 529), down.value
    assert down.value.body["type"] == "error"

    own_vllm.restart()
    message = client.messages.create(model=MODEL, max_tokens=4, messages=HELLO)
    assert message.stop_reason in ("end_turn", "max_tokens")
