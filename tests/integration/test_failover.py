"""Routing and resilience on loopback: failover between fake workers, timeouts, pings, cancellation,
native Anthropic workers, the worker's tokenizer, and accounts' own workers.

No test here measures how long anything took (speed figures belong in bench/). What a timing
would have shown is observed instead: which workers were asked and how often (the fake workers'
request logs), which worker requests Parley closed (their disconnect counts), the pauses the
failover chose (`pauses`), and the answer or Anthropic error the client got. A worker that is to
stay silent stays silent for FOREVER, longer than any test's safety net, so only Parley can have
ended its request; a Parley that failed to would fail the test on a safety net, never pass it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Iterator

import anthropic
import httpx
import openai
import pytest

from parley.io import failover
from parley.io.failover import WorkerHealth
from parley.io.routes import Route, Timeouts, Worker
from parley.settings import Settings
from tests.anthropic_stream import assert_well_formed
from tests.fakeworker import Answer, Drop, FakeWorker, Hang, Stall, WorkerError
from tests.stack import RunningParley, free_port, parley_stack

from .helpers import assert_error, parse_sse

FAST = Timeouts(connect=1.0, first_byte=1.0, idle=1.0, buffered=2.0)
# Longer than any test lasts: on a route with these, no timeout of Parley's ends a worker request.
PATIENT = Timeouts(connect=600.0, first_byte=600.0, idle=600.0, buffered=600.0)
# Longer than any safety net: a worker scripted to be silent this long never ends its answer itself.
FOREVER = 600.0
# How long a test waits for something that takes milliseconds before it fails: a safety net, so a
# defect fails the test instead of hanging it. It measures nothing. The clients' read timeout
# (20 s) is one too; a stream's pings defeat it, so `stream()` has this one.
SAFETY_NET = 60.0
PING_SECONDS = 0.2
# Weights this lopsided make the order certain (the other way round has odds of 1 in 10^12).
FIRST, SECOND = 1e6, 1e-6
ANSWER = Answer(text="one two three four five six")


@pytest.fixture(scope="module")
def primary() -> Iterator[FakeWorker]:
    with FakeWorker(model="primary-model") as worker:
        yield worker


@pytest.fixture(scope="module")
def secondary() -> Iterator[FakeWorker]:
    with FakeWorker(model="secondary-model") as worker:
        yield worker


def _worker(fake: FakeWorker, weight: float = 1.0, **options) -> Worker:
    # tokenize=False unless asked: the fake workers have vLLM's POST /tokenize, and these tests count
    # the requests failover made (the "tokenizing" route is the one that asks it).
    return Worker(base_url=fake.base_url, model=fake.model, weight=weight, **{"tokenize": False, **options})


@pytest.fixture(scope="module")
def dead() -> Worker:
    """A worker whose port refuses connections."""
    return Worker(base_url=f"http://127.0.0.1:{free_port()}/v1", model="nobody", weight=FIRST)


@pytest.fixture(scope="module")
def stack(dynamodb, dead: Worker, primary: FakeWorker, secondary: FakeWorker) -> Iterator[RunningParley]:
    routes = [
        Route(model="pair", workers=(_worker(primary, FIRST), _worker(secondary, SECOND)), timeouts=FAST),
        # Patient: a refused connection that Parley waited out, instead of failing over at once,
        # would outlast the test's safety net.
        Route(model="dead-then-live", workers=(dead, _worker(primary, SECOND)), timeouts=PATIENT),
        Route(model="solo", workers=(_worker(primary),), timeouts=FAST),
        Route(model="patient", workers=(_worker(primary),), timeouts=PATIENT),
        Route(
            model="native",
            workers=(Worker(base_url=primary.base_url.removesuffix("/v1"), model="native-model", api="anthropic"),),
            timeouts=FAST,
        ),
        Route(model="tokenizing", workers=(_worker(primary, tokenize=True),), timeouts=FAST),
        Route(
            model="own-worker",
            workers=(Worker(base_url=f"https://localhost:{primary.port}/v1", model="m"),),
            account="acct",
            timeouts=FAST,
        ),
        Route(
            model="own-worker-by-address",
            workers=(Worker(base_url=f"https://127.0.0.1:{primary.port}/v1", model="m"),),
            account="acct",
            timeouts=FAST,
        ),
        Route(model="others-worker", workers=(_worker(primary),), account="someone-else", timeouts=FAST),
    ]
    settings = Settings(keys_table="fo-keys", routes_table="fo-routes", ping_seconds=PING_SECONDS, worker_attempts=3)
    with parley_stack(dynamodb, settings, routes, account="acct", key_name="failover") as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(stack: RunningParley, primary: FakeWorker, secondary: FakeWorker) -> None:
    stack.services.health = WorkerHealth()
    primary.reset()
    secondary.reset()


@pytest.fixture
def client(stack: RunningParley) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key=stack.key, max_retries=0, timeout=20)


@pytest.fixture
def http(stack: RunningParley) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, headers={"x-api-key": stack.key}, timeout=20) as raw:
        yield raw


class _RecordingAsyncio:
    """`asyncio` as parley.io.failover sees it, but whose `sleep` records the pause instead of
    taking it."""

    def __init__(self, pauses: list[float]) -> None:
        self._pauses = pauses

    def __getattr__(self, name: str):
        return getattr(asyncio, name)

    async def sleep(self, delay: float, result=None):
        self._pauses.append(delay)
        return await asyncio.sleep(0, result)


@pytest.fixture
def pauses(monkeypatch) -> list[float]:
    """The pauses Parley's failover chose before asking a worker again, in order: what a test
    checks is how long Parley decided to wait, never how long anything took. They are not taken."""
    chosen: list[float] = []
    monkeypatch.setattr(failover, "asyncio", _RecordingAsyncio(chosen))
    return chosen


def ask(model: str, **overrides) -> dict:
    return {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}], **overrides}


def stream(http: httpx.Client, body: dict) -> list[tuple[str, dict]]:
    """The events of a streamed answer, which must end within SAFETY_NET (Parley's pings keep the
    client's read timeout from firing, so a timeout of Parley's that never fired would hang)."""
    deadline = time.monotonic() + SAFETY_NET
    content = bytearray()
    with http.stream("POST", "/v1/messages", json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read().decode()
        for chunk in response.iter_bytes():
            content += chunk
            if time.monotonic() > deadline:
                pytest.fail(f"the stream still had not ended after {SAFETY_NET:g} s: no timeout of Parley's ended it")
    return [(item.event or "", item.json()) for item in parse_sse(bytes(content))]


def text_of(events: list[tuple[str, dict]]) -> str:
    return "".join(data["delta"].get("text", "") for name, data in events if name == "content_block_delta")


# -- failover before the first byte ---------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["buffered", "streamed"])
def test_worker_down_fails_over_to_the_next(client, http, stack, dead, primary, pauses, streaming):
    # The route's timeouts outlast the clients' (20 s) and stream()'s safety net: had Parley waited
    # for the refused connection to time out, the answer would not have come.
    primary.enqueue(ANSWER)
    if streaming:
        text = assert_well_formed(stream(http, ask("dead-then-live"))).text
    else:
        text = client.messages.create(**ask("dead-then-live")).content[0].text
    assert text == ANSWER.text and len(primary.requests) == 1
    assert stack.services.health.cooling_until(dead), "the refusing worker was not tried (first)"
    assert pauses == [], "a different worker is tried without a pause"


@pytest.mark.parametrize("status", [500, 502, 503, 429])
@pytest.mark.parametrize("streaming", [False, True], ids=["buffered", "streamed"])
def test_worker_5xx_or_429_fails_over_at_once(client, primary, secondary, pauses, status, streaming):
    primary.enqueue(WorkerError(status, {"error": {"message": "busy", "type": "server_error"}}))
    secondary.enqueue(ANSWER)
    if streaming:
        with client.messages.stream(**ask("pair")) as answer:
            message = answer.get_final_message()
    else:
        message = client.messages.create(**ask("pair"))
    assert message.content[0].text == ANSWER.text
    assert len(primary.requests) == 1 and len(secondary.requests) == 1
    assert pauses == [], "a different worker is tried without a pause"


def test_failed_worker_cools_down_and_is_tried_last(client, primary, secondary):
    primary.enqueue(WorkerError(500, "boom"))
    client.messages.create(**ask("pair"))
    secondary.reset()
    for _ in range(3):
        client.messages.create(**ask("pair"))
    assert len(secondary.requests) == 3 and len(primary.requests) == 1, "the cooling worker was not asked again"


@pytest.mark.parametrize(
    "unusable",
    [
        {"choices": [{"index": 0, "message": "four", "finish_reason": "stop"}]},
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": [{"type": "text", "text": 4}]}}]},
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": "cut"}, "finish_reason": "abort"}]},
    ],
    ids=["message-a-string", "text-a-number", "aborted"],
)
def test_buffered_answer_parley_cannot_use_fails_over_and_cools_down(client, stack, primary, secondary, unusable):
    primary.enqueue(WorkerError(200, unusable))
    secondary.enqueue(ANSWER)
    message = client.messages.create(**ask("pair"))
    assert message.content[0].text == ANSWER.text
    assert len(primary.requests) == 1 and len(secondary.requests) == 1
    assert stack.services.health.cooling_until(_worker(primary, FIRST)), "the worker did not cool down"


def test_chat_completion_parley_cannot_use_fails_over_too(stack, primary, secondary):
    primary.enqueue(WorkerError(200, {"choices": [{"index": 0, "message": "four", "finish_reason": "stop"}]}))
    secondary.enqueue(ANSWER)
    oai = openai.OpenAI(base_url=stack.url + "/v1", api_key=stack.key, max_retries=0, timeout=20)
    completion = oai.chat.completions.create(model="pair", messages=[{"role": "user", "content": "Hi"}])
    assert completion.choices[0].message.content == ANSWER.text
    assert len(primary.requests) == 1 and len(secondary.requests) == 1
    assert stack.services.health.cooling_until(_worker(primary, FIRST)), "the worker did not cool down"


def test_request_fault_is_not_retried(client, primary, secondary):
    primary.enqueue(WorkerError(400, {"error": {"message": "bad grammar", "type": "BadRequestError"}}))
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(**ask("pair"))
    assert len(primary.requests) == 1 and not secondary.requests, "every worker would refuse this request"


def test_single_worker_429_is_retried_after_its_retry_after(client, primary, pauses):
    primary.enqueue(WorkerError(429, {"error": {"message": "slow down"}}, {"retry-after": "1"}), ANSWER)
    message = client.messages.create(**ask("solo"))
    assert message.content[0].text == ANSWER.text and len(primary.requests) == 2
    assert pauses == [1.0], "one pause before asking the worker again: the 1 s its retry-after asked for"


def test_long_retry_after_goes_to_the_client_at_once(client, primary, pauses):
    # 60 s is longer than the client's timeout too: had Parley waited, no 429 would have come.
    primary.enqueue(WorkerError(429, {"error": {"message": "quota"}}, {"retry-after": "60"}))
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(**ask("solo"))
    assert_error(caught.value.response, 429, "rate_limit_error")
    assert caught.value.response.headers["retry-after"] == "60" and len(primary.requests) == 1
    assert caught.value.response.headers["x-should-retry"] == "true"
    assert pauses == [], "Parley paused instead of passing the 429 on"


def test_attempts_are_bounded_and_backed_off(client, stack, primary, pauses):
    primary.enqueue(*[WorkerError(503, "Service Unavailable")] * 5)
    with pytest.raises(anthropic.OverloadedError) as caught:
        client.messages.create(**ask("solo"))
    assert len(primary.requests) == 3, "three attempts, no more"
    assert caught.value.response.headers["x-should-retry"] == "true"
    # Before the 2nd and the 3rd attempt, a jittered pause of between half and all of the
    # backoff step, which doubles each time.
    step = stack.services.failover.backoff_seconds
    assert len(pauses) == 2, pauses
    assert step / 2 <= pauses[0] <= step and step <= pauses[1] <= 2 * step, pauses


# -- timeouts, pings ----------------------------------------------------------------------------------


def test_worker_silent_before_first_byte_fails_over_with_pings_meanwhile(http, primary, secondary):
    primary.enqueue(Hang(FOREVER))
    secondary.enqueue(ANSWER)
    events = stream(http, ask("pair"))
    result = assert_well_formed(events)
    names = [name for name, _ in events]
    assert result.text == ANSWER.text and names.count("message_start") == 1, names
    assert "ping" in names[: names.index("content_block_start")], f"no ping while the worker was silent: {names}"
    assert len(primary.requests) == 1 and len(secondary.requests) == 1
    # Silent for FOREVER, the worker did not end its request: Parley's first-byte timeout did.
    assert primary.wait_for_disconnects(1, timeout=SAFETY_NET), "the silent worker's request was not closed"


def test_buffered_answer_times_out_and_fails_over(client, primary, secondary):
    # Had Parley waited for the silent worker, the client (20 s timeout) would have given up first.
    primary.enqueue(Hang(FOREVER))
    secondary.enqueue(ANSWER)
    message = client.messages.create(**ask("pair"))
    assert message.content[0].text == ANSWER.text
    assert len(primary.requests) == 1 and len(secondary.requests) == 1
    assert primary.wait_for_disconnects(1, timeout=SAFETY_NET), "the silent worker's request was not closed"


def test_every_worker_silent_ends_with_a_timeout_error_event(http, primary, secondary, pauses):
    primary.enqueue(Hang(FOREVER), Hang(FOREVER))
    secondary.enqueue(Hang(FOREVER))
    events = stream(http, ask("pair"))
    names = [name for name, _ in events]
    # timeout_error: Parley's own timeout ended the stream (a client's could not send this event).
    assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "timeout_error", events[-1]
    assert "message_stop" not in names
    # Three attempts, each given up by Parley: both workers, then the first again after a pause.
    assert len(primary.requests) == 2 and len(secondary.requests) == 1
    assert primary.wait_for_disconnects(2, timeout=SAFETY_NET) and secondary.wait_for_disconnects(1, timeout=SAFETY_NET)
    assert len(pauses) == 1, "a pause before asking the first worker again, none before the second"


def test_stall_mid_stream_is_a_timeout_error_with_pings_before_it(http, primary, secondary):
    primary.enqueue(Stall(ANSWER, after_events=3, seconds=FOREVER))
    events = stream(http, ask("pair"))
    names = [name for name, _ in events]
    assert text_of(events) and events[-1][0] == "error", names
    assert events[-1][1]["error"]["type"] == "timeout_error"
    assert "message_stop" not in names
    assert "ping" in names[names.index("content_block_delta") :], f"no ping while the worker was silent: {names}"
    assert not secondary.requests, "bytes had reached the client: no retry"
    assert primary.wait_for_disconnects(1, timeout=SAFETY_NET), "the stalled worker's request was not closed"


def test_drop_mid_stream_is_an_error_never_end_turn(http, primary, secondary):
    primary.enqueue(Drop(ANSWER, after_events=3))
    events = stream(http, ask("pair"))
    assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "api_error"
    assert not any(data.get("delta", {}).get("stop_reason") for _, data in events)
    assert not secondary.requests


def test_streams_reuse_the_worker_connection(http, primary, stack):
    # A fresh connection per stream would add a TCP (and TLS) handshake to every time to first token.
    for _ in range(2):
        stream(http, ask("solo"))
    primary.reset()
    for _ in range(3):
        events = stream(http, ask("solo"))
        assert events[-1][0] == "message_stop"
    assert primary.connections == 0, "each stream opened its own worker connection"


# -- the client leaving ---------------------------------------------------------------------------


def _request_and_leave(stack: RunningParley, body: dict, worker: FakeWorker) -> None:
    """Send a buffered request on a raw connection, and close it once the worker has the request."""
    payload = json.dumps(body).encode()
    head = (
        "POST /v1/messages HTTP/1.1\r\nhost: parley\r\ncontent-type: application/json\r\n"
        f"x-api-key: {stack.key}\r\ncontent-length: {len(payload)}\r\n\r\n"
    ).encode()
    host, port = stack.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=SAFETY_NET) as connection:
        connection.sendall(head + payload)
        assert worker.wait_for_requests(1, timeout=SAFETY_NET), "the request did not reach the worker"


@pytest.mark.parametrize("streaming", [False, True], ids=["buffered", "streamed"])
def test_client_leaving_closes_the_worker_request(stack, primary, streaming):
    # On the patient route no timeout of Parley's ends the worker request, and the worker is
    # silent for FOREVER: only the client leaving can have closed it.
    primary.enqueue(Stall(ANSWER, after_events=2, seconds=FOREVER) if streaming else Hang(FOREVER))
    body = ask("patient", stream=streaming)
    if streaming:
        with httpx.Client(base_url=stack.url, headers={"x-api-key": stack.key}, timeout=20) as http:
            with http.stream("POST", "/v1/messages", json=body) as response:
                next(response.iter_bytes())
                assert primary.wait_for_requests(1, timeout=SAFETY_NET)
    else:
        _request_and_leave(stack, body, primary)
    assert primary.wait_for_disconnects(1, timeout=SAFETY_NET), "the worker request outlived the client"


# -- native Anthropic workers ---------------------------------------------------------------------


def test_native_worker_is_forwarded_as_is(client, stack, primary):
    primary.enqueue(Answer(text="native hello", prompt_tokens=21))
    message = client.messages.create(**ask("native"), extra_headers={"anthropic-beta": "some-beta"})
    assert message.content[0].text == "native hello" and message.model == "native"
    assert message.usage.input_tokens == 21
    seen = primary.requests[-1]
    assert seen["path"] == "/v1/messages" and seen["body"]["model"] == "native-model"
    assert seen["body"]["messages"] == [{"role": "user", "content": "Hi"}]
    assert seen["headers"]["anthropic-beta"] == "some-beta" and seen["headers"]["anthropic-version"]


def test_native_worker_streams_through(client, primary):
    primary.enqueue(Answer(text="streamed natively", prompt_tokens=17))
    with client.messages.stream(**ask("native")) as answer:
        message = answer.get_final_message()
    assert message.content[0].text == "streamed natively" and message.model == "native"
    assert message.usage.input_tokens == 17 and message.stop_reason == "end_turn"


def test_native_stream_cut_short_ends_with_an_error_event(http, primary):
    primary.enqueue(Drop(ANSWER, after_events=3))
    events = stream(http, ask("native"))
    assert events[-1][0] == "error" and "message_stop" not in [name for name, _ in events]


# -- the worker's tokenizer ---------------------------------------------------------------------


def test_count_tokens_uses_the_workers_tokenizer(client, primary):
    primary.token_count = 4321
    counted = client.messages.count_tokens(model="tokenizing", messages=[{"role": "user", "content": "Hi"}])
    assert counted.input_tokens == 4321
    assert primary.requests[-1]["path"] == "/tokenize"
    assert primary.requests[-1]["body"]["messages"] == [{"role": "user", "content": "Hi"}]


def test_message_start_uses_the_workers_tokenizer(http, primary):
    primary.token_count = 777
    primary.enqueue(Hang(0.3, then=ANSWER))
    events = stream(http, ask("tokenizing"))
    assert events[0][1]["message"]["usage"]["input_tokens"] == 777


def test_count_tokens_falls_back_to_the_estimate(client):
    counted = client.messages.count_tokens(model="solo", messages=[{"role": "user", "content": "Hi " * 400}])
    assert 250 <= counted.input_tokens <= 350, "about 4 bytes a token"


# -- accounts' own workers ------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["own-worker", "own-worker-by-address"])
def test_own_worker_on_a_private_address_is_refused_before_connecting(client, primary, model):
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        client.messages.create(**ask(model))
    assert "non-public address" in assert_error(caught.value.response, 403, "permission_error")
    assert primary.connections == 0, "no connection was opened to the private address"


def test_another_accounts_worker_is_invisible(client):
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(**ask("others-worker"))
    assert "others-worker" not in [model.id for model in client.models.list()]
