"""Routing and resilience on loopback: failover between fake workers, timeouts, pings, cancellation,
native Anthropic workers, the worker's tokenizer, and accounts' own workers.

Each test prints a `figure:` line (run with -s to see them): the time a behaviour took.
"""

from __future__ import annotations

import time
from typing import Iterator

import anthropic
import httpx
import pytest

from parley.io.failover import WorkerHealth
from parley.io.routes import Route, Timeouts, Worker
from parley.settings import Settings
from tests.anthropic_stream import assert_well_formed
from tests.fakeworker import Answer, Drop, FakeWorker, Hang, Stall, WorkerError
from tests.stack import RunningParley, free_port, parley_stack

from .helpers import assert_error, parse_sse

FAST = Timeouts(connect=1.0, first_byte=1.0, idle=1.0, buffered=2.0)
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
    return Worker(base_url=fake.base_url, model=fake.model, weight=weight, **options)


@pytest.fixture(scope="module")
def stack(dynamodb, primary: FakeWorker, secondary: FakeWorker) -> Iterator[RunningParley]:
    dead = Worker(base_url=f"http://127.0.0.1:{free_port()}/v1", model="nobody", weight=FIRST)
    routes = [
        Route(model="pair", workers=(_worker(primary, FIRST), _worker(secondary, SECOND)), timeouts=FAST),
        Route(model="dead-then-live", workers=(dead, _worker(primary, SECOND)), timeouts=FAST),
        Route(model="solo", workers=(_worker(primary),), timeouts=FAST),
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


def ask(model: str, **overrides) -> dict:
    return {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}], **overrides}


def stream(http: httpx.Client, body: dict) -> tuple[list[tuple[str, dict]], float]:
    started = time.perf_counter()
    response = http.post("/v1/messages", json={**body, "stream": True})
    assert response.status_code == 200, response.text
    events = [(item.event or "", item.json()) for item in parse_sse(response.content)]
    return events, time.perf_counter() - started


def text_of(events: list[tuple[str, dict]]) -> str:
    return "".join(data["delta"].get("text", "") for name, data in events if name == "content_block_delta")


# -- failover before the first byte ---------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["buffered", "streamed"])
def test_worker_down_fails_over_to_the_next(client, primary, streaming):
    primary.enqueue(ANSWER)
    started = time.perf_counter()
    if streaming:
        with client.messages.stream(**ask("dead-then-live")) as answer:
            message = answer.get_final_message()
    else:
        message = client.messages.create(**ask("dead-then-live"))
    elapsed = time.perf_counter() - started
    assert message.content[0].text == ANSWER.text and len(primary.requests) == 1
    print(f"figure: failover from a refused connection ({'streamed' if streaming else 'buffered'}): {elapsed:.3f}s")
    assert elapsed < 1.0


@pytest.mark.parametrize("status", [500, 502, 503, 429])
@pytest.mark.parametrize("streaming", [False, True], ids=["buffered", "streamed"])
def test_worker_5xx_or_429_fails_over_at_once(client, primary, secondary, status, streaming):
    primary.enqueue(WorkerError(status, {"error": {"message": "busy", "type": "server_error"}}))
    secondary.enqueue(ANSWER)
    started = time.perf_counter()
    if streaming:
        with client.messages.stream(**ask("pair")) as answer:
            message = answer.get_final_message()
    else:
        message = client.messages.create(**ask("pair"))
    elapsed = time.perf_counter() - started
    assert message.content[0].text == ANSWER.text
    assert len(primary.requests) == 1 and len(secondary.requests) == 1
    print(f"figure: failover after HTTP {status}: {elapsed:.3f}s")
    assert elapsed < 1.0, "a different worker is tried without a pause"


def test_failed_worker_cools_down_and_is_tried_last(client, primary, secondary):
    primary.enqueue(WorkerError(500, "boom"))
    client.messages.create(**ask("pair"))
    secondary.reset()
    for _ in range(3):
        client.messages.create(**ask("pair"))
    assert len(secondary.requests) == 3 and len(primary.requests) == 1, "the cooling worker was not asked again"


def test_request_fault_is_not_retried(client, primary, secondary):
    primary.enqueue(WorkerError(400, {"error": {"message": "bad grammar", "type": "BadRequestError"}}))
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(**ask("pair"))
    assert len(primary.requests) == 1 and not secondary.requests, "every worker would refuse this request"


def test_single_worker_429_is_retried_after_its_retry_after(client, primary):
    primary.enqueue(WorkerError(429, {"error": {"message": "slow down"}}, {"retry-after": "1"}), ANSWER)
    started = time.perf_counter()
    message = client.messages.create(**ask("solo"))
    elapsed = time.perf_counter() - started
    assert message.content[0].text == ANSWER.text and len(primary.requests) == 2
    print(f"figure: retry of the same worker after retry-after: 1: {elapsed:.3f}s")
    assert 1.0 <= elapsed < 2.5


def test_long_retry_after_goes_to_the_client_at_once(client, primary):
    primary.enqueue(WorkerError(429, {"error": {"message": "quota"}}, {"retry-after": "60"}))
    started = time.perf_counter()
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(**ask("solo"))
    assert caught.value.response.headers["retry-after"] == "60" and len(primary.requests) == 1
    assert time.perf_counter() - started < 1.0


def test_attempts_are_bounded_and_backed_off(client, primary):
    primary.enqueue(*[WorkerError(503, "Service Unavailable")] * 5)
    started = time.perf_counter()
    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(**ask("solo"))
    elapsed = time.perf_counter() - started
    assert len(primary.requests) == 3, "three attempts, no more"
    print(f"figure: three attempts on one failing worker, with backoff: {elapsed:.3f}s")
    assert 0.25 <= elapsed < 2.0


# -- timeouts, pings ----------------------------------------------------------------------------------


def test_worker_silent_before_first_byte_fails_over_with_pings_meanwhile(http, primary, secondary):
    primary.enqueue(Hang(10))
    secondary.enqueue(ANSWER)
    events, elapsed = stream(http, ask("pair"))
    result = assert_well_formed(events)
    names = [name for name, _ in events]
    assert names.count("message_start") == 1 and names.count("ping") >= 3, names
    assert result.text == ANSWER.text
    assert primary.wait_for_disconnects(1, timeout=2), "the silent worker's request was not closed"
    print(f"figure: failover after first-byte timeout (1s): {elapsed:.3f}s, {names.count('ping')} pings meanwhile")
    assert 1.0 <= elapsed < 2.5


def test_buffered_answer_times_out_and_fails_over(client, primary, secondary):
    primary.enqueue(Hang(10))
    secondary.enqueue(ANSWER)
    started = time.perf_counter()
    message = client.messages.create(**ask("pair"))
    elapsed = time.perf_counter() - started
    assert message.content[0].text == ANSWER.text
    print(f"figure: buffered failover after its 2s timeout: {elapsed:.3f}s")
    assert 2.0 <= elapsed < 3.5


def test_every_worker_silent_ends_with_a_timeout_error_event(http, primary, secondary):
    primary.enqueue(Hang(10), Hang(10))
    secondary.enqueue(Hang(10))
    events, elapsed = stream(http, ask("pair"))
    assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "timeout_error"
    assert not any(name == "message_stop" for name, _ in events)
    print(f"figure: three silent attempts end the stream with timeout_error after {elapsed:.3f}s")
    assert elapsed < 6.0


def test_stall_mid_stream_is_a_timeout_error_with_pings_before_it(http, primary, secondary):
    primary.enqueue(Stall(ANSWER, after_events=3, seconds=10))
    events, elapsed = stream(http, ask("pair"))
    names = [name for name, _ in events]
    assert text_of(events) and events[-1][0] == "error", names
    assert events[-1][1]["error"]["type"] == "timeout_error"
    assert "message_stop" not in names and names.count("ping") >= 3
    assert not secondary.requests, "bytes had reached the client: no retry"
    assert primary.wait_for_disconnects(1, timeout=2)
    print(f"figure: a stream silent for the idle timeout (1s) ends after {elapsed:.3f}s")


def test_drop_mid_stream_is_an_error_never_end_turn(http, primary, secondary):
    primary.enqueue(Drop(ANSWER, after_events=3))
    events, _ = stream(http, ask("pair"))
    assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "api_error"
    assert not any(data.get("delta", {}).get("stop_reason") for _, data in events)
    assert not secondary.requests


def test_streams_reuse_the_worker_connection(http, primary, stack):
    # A fresh connection per stream would add a TCP (and TLS) handshake to every time to first token.
    for _ in range(2):
        stream(http, ask("solo"))
    primary.reset()
    for _ in range(3):
        events, _ = stream(http, ask("solo"))
        assert events[-1][0] == "message_stop"
    assert primary.connections == 0, "each stream opened its own worker connection"


# -- the client leaving ---------------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["buffered", "streamed"])
def test_client_leaving_closes_the_worker_request(stack, primary, streaming):
    primary.enqueue(Hang(10) if not streaming else Stall(ANSWER, after_events=2, seconds=10))
    body = ask("solo", stream=streaming)
    with httpx.Client(base_url=stack.url, headers={"x-api-key": stack.key}) as http:
        if streaming:
            with http.stream("POST", "/v1/messages", json=body) as response:
                next(response.iter_bytes())
                assert primary.wait_for_requests(1)
        else:
            with pytest.raises(httpx.ReadTimeout):
                http.post("/v1/messages", json=body, timeout=0.5)
    left = time.perf_counter()
    assert primary.wait_for_disconnects(1, timeout=1.0), "the worker request outlived the client by over 1s"
    print(f"figure: worker connection closed {time.perf_counter() - left:.3f}s after the client left ({streaming=})")


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
    events, _ = stream(http, ask("native"))
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
    events, _ = stream(http, ask("tokenizing"))
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
