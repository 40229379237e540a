"""The response cache through the official SDK and raw HTTP (docs/cache.md): a kept answer served
again without the worker, buffered or replayed as a proper event stream; what makes another key;
what is never kept; a hit's usage metered once as a hit; duplicates at once make one worker call.

Each test gets an account and key of its own under its cache policy, so entries never cross tests.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import anthropic
import httpx
import pytest

from parley.core.metering import Prices
from parley.io.routes import Route, Worker
from tests.anthropic_stream import accumulate, assert_well_formed
from tests.fakeworker import Answer, FakeWorker
from tests.fakeworker.scripts import Drop, Gate, ToolCall, WorkerError

from .conftest import SAFETY_NET
from .helpers import MODEL, WORKER_MODEL, as_int, parse_sse, wait_for_record
from .inprocess import in_process

CACHE_ALL = {"cache": {"mode": "all", "ttl_seconds": 600}}
LONG_TEXT = "The cache replays this answer in pieces, the way a model would stream it to the client. " * 4


class Cached:
    """An account of its own under `policy`: its key and clients."""

    def __init__(self, parley: Any, policy: dict[str, Any]) -> None:
        self.parley = parley
        self.account = f"cached-{secrets.token_hex(4)}"
        parley.services.policies.put(self.account, policy)
        self.key, _ = parley.services.keys.create(account=self.account, name="cached")
        self.client = anthropic.Anthropic(base_url=parley.url, api_key=self.key, max_retries=0, timeout=30)
        self.http = httpx.Client(
            base_url=parley.url, headers={"x-api-key": self.key, "anthropic-version": "2023-06-01"}, timeout=30
        )

    def post(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
        return self.http.post("/v1/messages", json=body, headers=headers)


@pytest.fixture
def cached(parley: Any) -> Iterator[Any]:
    made: list[Cached] = []

    def make(policy: dict[str, Any] = CACHE_ALL) -> Cached:
        made.append(Cached(parley, policy))
        return made[-1]

    yield make
    for one in made:
        one.http.close()


def _body(**overrides: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": "What is kept?"}], **overrides}


def _calls(worker: FakeWorker) -> list[dict[str, Any]]:
    """The worker's chat completions (not its /tokenize calls)."""
    return [request for request in worker.requests if request["path"].endswith("/chat/completions")]


def _events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    return [(event.event or "", json.loads(event.data)) for event in parse_sse(response.content)]


def _rich_answer() -> Answer:
    return Answer(
        text=LONG_TEXT,
        reasoning="First I think, then I answer.",
        tool_calls=[ToolCall("get_weather", {"city": "Paris", "days": [1, 2, 3], "note": 'é \u2028 "quoted"'})],
    )


TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


def test_a_hit_streamed_is_a_proper_event_stream_equal_to_the_buffered_answer(cached, worker):
    user = cached()
    worker.enqueue(_rich_answer())
    body = _body(tools=TOOLS, max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024})
    first = user.post(body)
    assert first.status_code == 200 and first.headers["parley-cache"] == "miss"
    buffered = first.json()
    assert [block["type"] for block in buffered["content"]] == ["thinking", "text", "tool_use"]

    replayed = user.post({**body, "stream": True})
    assert replayed.headers["parley-cache"] == "hit" and int(replayed.headers["age"]) >= 0
    assert len(_calls(worker)) == 1, "a hit must not call the worker"
    events = _events(replayed)
    result = assert_well_formed(events, signed_thinking=True)
    kinds = [data["delta"]["type"] for name, data in events if name == "content_block_delta"]
    assert kinds.count("text_delta") > 3 and kinds.count("input_json_delta") > 1, "replayed in one lump"
    assert kinds.count("signature_delta") == 1
    assert result.usage["output_tokens"] == buffered["usage"]["output_tokens"]
    again = anthropic.types.Message.model_validate(accumulate(events))
    assert again.id != buffered["id"]
    assert again.model_dump(exclude={"id"}) == anthropic.types.Message.model_validate(buffered).model_dump(
        exclude={"id"}
    )

    # The official SDK's accumulator agrees, and so does a buffered hit.
    with user.client.messages.stream(**body) as stream:
        final = stream.get_final_message()
    hit = user.client.messages.create(**body)
    assert final.model_dump(exclude={"id"}) == hit.model_dump(exclude={"id"})
    assert hit.model_dump(exclude={"id"}) == again.model_dump(exclude={"id"})
    assert len(_calls(worker)) == 1


def test_a_streamed_miss_is_kept_and_served_buffered(cached, worker):
    user = cached()
    worker.enqueue(_rich_answer())
    with user.client.messages.stream(**_body(tools=TOOLS)) as stream:
        streamed = stream.get_final_message()
    hit = user.post(_body(tools=TOOLS))
    assert hit.headers["parley-cache"] == "hit"
    assert anthropic.types.Message.model_validate(hit.json()).model_dump(exclude={"id"}) == streamed.model_dump(
        exclude={"id"}
    )
    assert len(_calls(worker)) == 1


CHANGES = {
    "temperature": {"temperature": 0.5},
    "top_p": {"top_p": 0.9},
    "top_k": {"top_k": 5},
    "max_tokens": {"max_tokens": 255},
    "stop_sequences": {"stop_sequences": ["END"]},
    "system": {"system": "Be brief."},
    "tools": {"tools": TOOLS},
    "tool_choice": {"tools": TOOLS, "tool_choice": {"type": "any"}},
    "thinking": {"max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1024}},
    "messages": {"messages": [{"role": "user", "content": "What is kept, again?"}]},
}


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_a_changed_parameter_is_a_miss(cached, worker, change):
    user = cached()
    base = _body(temperature=0, **({"tools": TOOLS} if change == "tool_choice" else {}))
    worker.enqueue(Answer(text="first"), Answer(text="second"))
    assert user.post(base).json()["content"][0]["text"] == "first"
    changed = user.post({**base, **CHANGES[change]})
    assert changed.headers["parley-cache"] == "miss"
    assert len(_calls(worker)) == 2


BILLING = "x-anthropic-billing-header: cc_version=2.1.1; cc_entrypoint=cli; cch={};"
SAME = {
    "metadata": {"metadata": {"user_id": "someone-else"}},
    "cache_control": {
        "system": [{"type": "text", "text": "Be kind.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "What is kept?", "cache_control": {"type": "ephemeral"}}],
            }
        ],
    },
    "billing_line": {
        "system": [{"type": "text", "text": BILLING.format("b2")}, {"type": "text", "text": "Be kind."}],
    },
    "alias": {"model": "claude-sonnet-4-5"},
}
SAME_BASE = {
    "metadata": {},
    "cache_control": {"system": [{"type": "text", "text": "Be kind."}]},
    "billing_line": {
        "system": [{"type": "text", "text": BILLING.format("a1")}, {"type": "text", "text": "Be kind."}],
    },
    "alias": {},
}


@pytest.mark.parametrize("change", list(SAME), ids=list(SAME))
def test_what_is_left_out_of_the_key_is_a_hit(cached, worker, change):
    user = cached()
    worker.enqueue(Answer(text="kept"))
    base = _body(**SAME_BASE[change])
    assert user.post(base).headers["parley-cache"] == "miss"
    again = user.post({**base, **SAME[change]})
    assert again.headers["parley-cache"] == "hit", again.text
    assert again.json()["content"][0]["text"] == "kept"
    assert len(_calls(worker)) == 1


def test_deterministic_mode_keeps_only_temperature_zero(cached, worker):
    user = cached({"cache": {"mode": "deterministic"}})
    worker.enqueue(Answer(text="sampled"), Answer(text="sampled again"), Answer(text="greedy"))
    assert user.post(_body()).headers["parley-cache"] == "bypass"
    assert user.post(_body()).json()["content"][0]["text"] == "sampled again"
    assert user.post(_body(temperature=0)).headers["parley-cache"] == "miss"
    hit = user.post(_body(temperature=0))
    assert hit.headers["parley-cache"] == "hit" and hit.json()["content"][0]["text"] == "greedy"
    assert len(_calls(worker)) == 3


def test_no_policy_no_cache_header(client, worker, http):
    worker.enqueue(Answer(text="plain"))
    response = http.post("/v1/messages", json=_body())
    assert response.status_code == 200 and "parley-cache" not in response.headers


def test_no_cache_reads_nothing_but_keeps_and_no_store_keeps_nothing(cached, worker):
    user = cached()
    worker.enqueue(Answer(text="one"), Answer(text="two"), Answer(text="three"))
    assert user.post(_body()).json()["content"][0]["text"] == "one"
    fresh = user.post(_body(), headers={"cache-control": "no-cache"})
    assert fresh.headers["parley-cache"] == "miss" and fresh.json()["content"][0]["text"] == "two"
    assert user.post(_body()).json()["content"][0]["text"] == "two", "no-cache must keep its fresh answer"

    other = _body(messages=[{"role": "user", "content": "Not to be kept"}])
    assert user.post(other, headers={"cache-control": "no-store"}).json()["content"][0]["text"] == "three"
    worker.enqueue(Answer(text="four"))
    assert user.post(other).json()["content"][0]["text"] == "four", "no-store kept its answer"
    assert len(_calls(worker)) == 4


def test_errors_cut_streams_and_refusals_are_never_kept(cached, worker):
    user = cached({**CACHE_ALL, "content": {"deny": [{"name": "secret", "phrases": ["launch code"]}]}})
    worker.enqueue(WorkerError(500, {"error": {"message": "boom"}}))
    assert user.post(_body()).status_code >= 500
    worker.enqueue(Drop(Answer(text=LONG_TEXT), after_events=3))
    cut = user.post({**_body(), "stream": True})
    assert _events(cut)[-1][0] == "error"
    worker.enqueue(Answer(text="Here is the launch code."))
    assert user.post(_body()).json()["stop_reason"] == "refusal"
    worker.enqueue(Answer(text="a clean answer"))
    answered = user.post(_body())
    assert answered.headers["parley-cache"] == "miss" and answered.json()["content"][0]["text"] == "a clean answer"
    calls = len(_calls(worker))
    assert user.post(_body()).headers["parley-cache"] == "hit"
    assert len(_calls(worker)) == calls


def test_an_answer_with_personal_data_restored_is_never_kept(cached, worker, monkeypatch):
    monkeypatch.setenv("PARLEY_PII_KEY", secrets.token_hex(32))
    user = cached({**CACHE_ALL, "pii": {"mode": "mask"}})
    personal = _body(messages=[{"role": "user", "content": "Write to jane.doe@example.org"}])
    worker.enqueue(Answer(text="one"), Answer(text="two"))
    assert user.post(personal).headers["parley-cache"] == "bypass"
    assert user.post(personal).json()["content"][0]["text"] == "two"
    assert len(_calls(worker)) == 2


def test_a_new_policy_version_is_a_miss(cached, worker, parley):
    user = cached()
    worker.enqueue(Answer(text="under v1"), Answer(text="under v2"))
    assert user.post(_body()).json()["content"][0]["text"] == "under v1"
    parley.services.policies.put(user.account, {"cache": {"mode": "all", "ttl_seconds": 900}})
    again = user.post(_body())
    assert again.headers["parley-cache"] == "miss" and again.json()["content"][0]["text"] == "under v2"


def test_a_hit_carries_the_original_usage_and_is_metered_once_as_a_hit(cached, worker, parley):
    priced = f"priced-{secrets.token_hex(3)}"
    parley.services.routes.put(
        Route(
            model=priced,
            workers=(Worker(base_url=worker.base_url, model=WORKER_MODEL),),
            prices=Prices(input_per_mtok=3.0, output_per_mtok=15.0, cache_hit_per_mtok=0.5),
            timeouts=SAFETY_NET,
        )
    )
    user = cached()
    worker.enqueue(Answer(text="metered", prompt_tokens=1000, completion_tokens=2000))
    miss = user.post(_body(model=priced))
    hit = user.post(_body(model=priced))
    streamed_hit = user.post({**_body(model=priced), "stream": True})
    assert miss.json()["usage"] == hit.json()["usage"]
    assert hit.json()["usage"]["input_tokens"] == 1000 and hit.json()["usage"]["output_tokens"] == 2000
    assert assert_well_formed(_events(streamed_hit)).usage["output_tokens"] == 2000

    missed = wait_for_record(parley, miss.headers["request-id"])
    kept = wait_for_record(parley, hit.headers["request-id"])
    replayed = wait_for_record(parley, streamed_hit.headers["request-id"])
    assert missed["cache_hit"] is False and as_int(missed["cost_micros"]) == 1000 * 3 + 2000 * 15
    for record in (kept, replayed):
        assert record["cache_hit"] is True and record["worker"] == "response-cache"
        assert (as_int(record["input_tokens"]), as_int(record["output_tokens"])) == (1000, 2000)
        assert as_int(record["cost_micros"]) == round(3000 * 0.5)
    assert len(_calls(worker)) == 1


def _gated(worker: FakeWorker, text: str) -> threading.Event:
    release = threading.Event()
    worker.enqueue(Gate(Answer(text=text), release))
    return release


def _wait_for(condition: Any, what: str, seconds: float = 20.0) -> None:
    done = threading.Event()
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError(f"{what} did not happen")


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_duplicates_at_once_make_one_worker_call(cached, worker, parley, stream):
    user = cached()
    release = _gated(worker, "once")
    body = {**_body(), "stream": stream}
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(user.post, body)
        assert worker.wait_for_requests(1, timeout=20)
        second = pool.submit(user.post, body)
        _wait_for(lambda: parley.services.flights.waiting == 1, "the duplicate waiting")
        release.set()
        answers = [first.result(30), second.result(30)]
    assert [answer.headers["parley-cache"] for answer in answers] == ["miss", "hit"]
    for answer in answers:
        text = accumulate(_events(answer))["content"][0]["text"] if stream else answer.json()["content"][0]["text"]
        assert text == "once"
    assert len(_calls(worker)) == 1


def test_duplicates_on_two_instances_make_one_worker_call(cached, worker, parley, dynamodb):
    """The second instance (its own process, as another Lambda's would be) waits on the table's lease."""
    user = cached()
    release = _gated(worker, "across instances")
    instances = in_process(parley.services, dynamodb, user.key)
    other = next(instances)
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(user.post, _body())
            assert worker.wait_for_requests(1, timeout=20)
            second = pool.submit(
                other.call, other.client.post("/v1/messages", json=_body(), headers={"x-api-key": user.key})
            )
            _wait_for(lambda: other.services.flights.waiting == 1, "the other instance waiting")
            release.set()
            answers = [first.result(30), second.result(30)]
    finally:
        instances.close()
    assert [answer.headers["parley-cache"] for answer in answers] == ["miss", "hit"]
    assert [answer.json()["content"][0]["text"] for answer in answers] == ["across instances"] * 2
    assert len(_calls(worker)) == 1


def test_a_duplicate_calls_the_worker_itself_when_the_first_fails(cached, worker, parley):
    user = cached()
    release = threading.Event()
    worker.enqueue(Gate(WorkerError(500, {"error": {"message": "boom"}}), release), Answer(text="second try"))
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(user.post, _body())
        assert worker.wait_for_requests(1, timeout=20)
        second = pool.submit(user.post, _body())
        _wait_for(lambda: parley.services.flights.waiting == 1, "the duplicate waiting")
        release.set()
        failed, answered = first.result(30), second.result(30)
    assert failed.status_code >= 500
    assert answered.status_code == 200 and answered.json()["content"][0]["text"] == "second try"
    assert len(_calls(worker)) == 2


def test_personal_data_restored_from_a_pdf_is_never_kept(cached, worker, monkeypatch):
    """The PDF's text is masked after the lookup (it is read only on a miss), so whether values
    were restored is known only once the answer is made: it is checked again before keeping."""
    from .test_documents import crafted_pdf, with_pdf

    monkeypatch.setenv("PARLEY_PII_KEY", secrets.token_hex(32))
    user = cached({**CACHE_ALL, "pii": {"mode": "mask"}})
    body = with_pdf(crafted_pdf(1, show=b"Contact jane.doe@example.org"), max_tokens=64)
    worker.enqueue(Answer(text="noted"), Answer(text="noted again"))
    first = user.post(body)
    assert first.status_code == 200 and first.headers["parley-cache"] == "miss"
    placeholder = re.search(r"<EMAIL_[0-9a-f]{10}>", json.dumps(_calls(worker)[-1]["body"]))
    assert placeholder is not None, "the PDF's address must reach the worker masked"
    again = user.post(body)
    assert again.headers["parley-cache"] == "miss" and again.json()["content"][0]["text"] == "noted again"


def test_a_body_nested_deeper_than_the_key_goes_is_answered_uncached(cached, worker):
    user = cached()
    deep: Any = "bottom"
    for _ in range(300):
        deep = [deep]
    worker.enqueue(Answer(text="deep"))
    response = user.post(_body(x_future_field=deep))
    assert response.status_code == 200 and response.headers["parley-cache"] == "bypass"


def test_a_route_pointed_at_another_model_is_a_miss(cached, worker, parley):
    model = f"moved-{secrets.token_hex(3)}"

    def route(worker_model: str) -> Route:
        return Route(model=model, workers=(Worker(base_url=worker.base_url, model=worker_model),), timeouts=SAFETY_NET)

    user = cached()
    parley.services.routes.put(route("model-a"))
    worker.enqueue(Answer(text="from a"), Answer(text="from b"))
    assert user.post(_body(model=model)).json()["content"][0]["text"] == "from a"
    assert user.post(_body(model=model)).headers["parley-cache"] == "hit"
    parley.services.routes.put(route("model-b"))
    moved = user.post(_body(model=model))
    assert moved.headers["parley-cache"] == "miss" and moved.json()["content"][0]["text"] == "from b"


def test_many_duplicates_of_an_answer_not_kept_all_go_at_once(cached, worker, parley):
    """The first is refused (never kept): the waiting duplicates are told, and call the worker
    together instead of taking the lease one after another."""
    user = cached({**CACHE_ALL, "content": {"deny": [{"name": "secret", "phrases": ["launch code"]}]}})
    release = threading.Event()
    worker.enqueue(Gate(Answer(text="the launch code is 1234"), release))
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(user.post, _body())
        assert worker.wait_for_requests(1, timeout=20)
        rest = [pool.submit(user.post, _body()) for _ in range(3)]
        _wait_for(lambda: parley.services.flights.waiting == 3, "three duplicates waiting")
        gates = [threading.Event() for _ in range(3)]
        worker.enqueue(*(Gate(Answer(text="fine"), gate) for gate in gates))
        release.set()
        assert worker.wait_for_requests(4, timeout=20), "the duplicates must call the worker together"
        for gate in gates:
            gate.set()
        answers = [first.result(30), *(future.result(30) for future in rest)]
    assert answers[0].json()["stop_reason"] == "refusal"
    assert [answer.json()["content"][0]["text"] for answer in answers[1:]] == ["fine"] * 3


def test_a_duplicate_whose_client_leaves_while_it_waits_stops_waiting(cached, worker, parley):
    import socket
    from urllib.parse import urlsplit

    user = cached()
    release = _gated(worker, "for the first only")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(user.post, _body())
        assert worker.wait_for_requests(1, timeout=20)
        address = urlsplit(parley.url)
        body = json.dumps(_body()).encode()
        head = (
            f"POST /v1/messages HTTP/1.1\r\nhost: {address.netloc}\r\nx-api-key: {user.key}\r\n"
            f"anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        leaving = socket.create_connection((address.hostname, address.port))
        leaving.sendall(head.encode() + body)
        _wait_for(lambda: parley.services.flights.waiting == 1, "the duplicate waiting")
        leaving.close()
        _wait_for(lambda: parley.services.flights.waiting == 0, "the duplicate to stop waiting")
        release.set()
        assert first.result(30).json()["content"][0]["text"] == "for the first only"
    assert len(_calls(worker)) == 1
