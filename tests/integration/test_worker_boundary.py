"""What a worker puts on the wire, read once at the boundary (parley.io.worker): its retry-after,
error bodies that are HTML or text, a 200 that is no event stream, an Anthropic worker's /v1 base
URL, and whether it tokenizes (vLLM's POST /tokenize, learned once per worker per instance).

Single-worker cases run on the session's stack (one attempt per request, tests/integration/conftest.py);
failover and tokenizer cases on a stack of their own with two fake workers.
"""

from __future__ import annotations

import email.utils
import os
import subprocess
import sys
import time
from typing import Iterator

import anthropic
import httpx
import orjson
import pytest

import parley.core.errors
from parley.core.tokens import estimate_prompt_tokens
from parley.io.failover import WorkerHealth
from parley.io.routes import Route, RouteStore, Timeouts, Worker
from parley.io.tables import create_tables
from parley.io.tokenizers import WorkerTokenizers
from parley.local import demo_worker
from parley.settings import Settings
from tests.anthropic_stream import assert_well_formed
from tests.fakeworker import Answer, FakeWorker, WorkerError
from tests.stack import RunningParley, free_port, parley_stack, serve

from .conftest import OneInstant
from .helpers import WEATHER_TOOL, assert_error, parse_sse, post_stream, request, sdk_stream_final

BOTH_WAYS = pytest.mark.parametrize("streaming", [False, True], ids=["buffered", "streamed"])
ANSWER = Answer(text="the second worker answered")
FAST = Timeouts(connect=2.0, first_byte=10.0, idle=10.0, buffered=10.0)
FIRST, SECOND = 1e6, 1e-6  # weights this lopsided make the order certain
LOADING = {"error": {"message": "model fake-model is loading", "type": "ServiceUnavailable"}}
HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>502 Bad <b>Gateway</b></title></head>"
    "<body><h1>502 Bad Gateway</h1><hr><center>nginx</center></body></html>"
)


def wire(header_value: str) -> str:
    """`header_value` as the fake worker must put it on the wire: it encodes its head as latin-1,
    so a str of the UTF-8 bytes' latin-1 characters goes out as those raw bytes."""
    return header_value.encode().decode("latin-1")


def call(client: anthropic.Anthropic, streaming: bool, **params):
    if streaming:
        return sdk_stream_final(client, **params)
    return client.messages.create(**params)


# -- 1. retry-after ---------------------------------------------------------------------------------


@BOTH_WAYS
@pytest.mark.parametrize(
    "sent, passed_on",
    [
        pytest.param(wire("5😀"), None, id="non-ascii"),
        pytest.param("5", "5", id="integer"),
        pytest.param("1.2", "2", id="decimal-rounded-up"),
        pytest.param("-3", None, id="negative"),
        pytest.param("86400", None, id="a-day-or-more"),
        pytest.param("soon", None, id="words"),
        pytest.param("5\x01", None, id="control-character"),
    ],
)
def test_a_workers_retry_after_is_passed_on_only_as_whole_seconds(client, worker, sent, passed_on, streaming):
    worker.enqueue(WorkerError(429, {"error": {"message": "slow down"}}, {"retry-after": sent}))
    with pytest.raises(anthropic.RateLimitError) as caught:
        call(client, streaming, **request())
    assert assert_error(caught.value.response, 429, "rate_limit_error") == "slow down"
    assert caught.value.response.headers.get("retry-after") == passed_on


def test_a_retry_after_that_is_an_http_date_becomes_seconds_from_now(client, worker, monkeypatch):
    # The clock Parley reads the date against is stopped where the date was written: exactly 120 s.
    now = float(int(time.time()))
    monkeypatch.setattr(parley.core.errors, "time", OneInstant(now))
    later = email.utils.formatdate(now + 120, usegmt=True)
    worker.enqueue(WorkerError(429, {"error": {"message": "slow down"}}, {"retry-after": later}))
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(**request())
    assert caught.value.response.headers["retry-after"] == "120"


# -- 2. a 200 that is no event stream ---------------------------------------------------------------


def test_a_json_error_instead_of_a_stream_is_the_workers_error(client, worker):
    worker.enqueue(WorkerError(200, LOADING))
    with pytest.raises(anthropic.InternalServerError) as caught:
        sdk_stream_final(client, **request())
    assert assert_error(caught.value.response, 500, "api_error") == "model fake-model is loading"


def test_a_json_error_with_a_code_instead_of_a_stream_keeps_its_status(client, worker):
    worker.enqueue(WorkerError(200, {"object": "error", "message": "engine overloaded", "code": 503}))
    with pytest.raises(anthropic.OverloadedError) as caught:
        sdk_stream_final(client, **request())
    assert assert_error(caught.value.response, 529, "overloaded_error") == "engine overloaded"


def test_a_buffered_answer_instead_of_a_stream_says_so(client, worker):
    # A server that ignored "stream": true: its answer is not passed off as a broken stream.
    worker.enqueue(WorkerError(200, {"id": "chatcmpl-1", "object": "chat.completion", "choices": []}))
    with pytest.raises(anthropic.InternalServerError) as caught:
        sdk_stream_final(client, **request())
    assert (
        assert_error(caught.value.response, 500, "api_error") == "The worker answered HTTP 200 without an event stream."
    )


def test_an_html_page_instead_of_a_stream_is_named_as_such(client, worker):
    worker.enqueue(WorkerError(200, HTML_PAGE))
    with pytest.raises(anthropic.InternalServerError) as caught:
        sdk_stream_final(client, **request())
    message = assert_error(caught.value.response, 500, "api_error")
    assert message == "The worker answered HTTP 200 with an HTML page: 502 Bad Gateway"


def test_an_event_stream_mislabelled_as_json_is_still_read(http, worker):
    # The first bytes are SSE: the content type is wrong, the stream is fine.
    worker.enqueue(WorkerError(200, ": keep-alive\n\n" + "data: {not json\n\n"))
    raw = post_stream(http, request())
    assert raw.response.status_code == 200
    result = assert_well_formed(raw.events, expect_error=True)
    # Read as the stream it is: its bad line (not its content type) is what the error names.
    assert "not valid JSON" in result.error["message"], result.error


# -- 3. HTML and text error bodies ------------------------------------------------------------------


@BOTH_WAYS
def test_an_html_error_page_is_not_the_clients_error_message(client, worker, streaming):
    worker.enqueue(WorkerError(502, HTML_PAGE))
    with pytest.raises(anthropic.InternalServerError) as caught:
        call(client, streaming, **request())
    message = assert_error(caught.value.response, 500, "api_error")
    assert message == "The worker answered HTTP 502 with an HTML page: 502 Bad Gateway"


def test_a_text_error_body_is_one_clean_line(client, worker):
    worker.enqueue(WorkerError(500, "  Internal Server Error\x1b[31m\ntraceback line 1\ntraceback line 2\n"))
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(**request())
    assert assert_error(caught.value.response, 500, "api_error") == "Internal Server Error[31m"


# -- a stack with two workers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def first() -> Iterator[FakeWorker]:
    with FakeWorker(model="first-model") as fake:
        yield fake


@pytest.fixture(scope="module")
def second() -> Iterator[FakeWorker]:
    with FakeWorker(model="second-model") as fake:
        yield fake


@pytest.fixture(scope="module")
def demo() -> Iterator[str]:
    """The demo worker of `make dev`, under uvicorn; its base URL."""
    with serve(demo_worker.app, name="demo-worker") as url:
        yield url + "/v1"


def _at(fake: FakeWorker, model: str, prefix: str = "", **options) -> Worker:
    return Worker(base_url=f"http://127.0.0.1:{fake.port}{prefix}/v1", model=model, **options)


@pytest.fixture(scope="module")
def stack(dynamodb, first: FakeWorker, second: FakeWorker) -> Iterator[RunningParley]:
    routes = [
        Route(
            model="pair",
            workers=(_at(first, "m", weight=FIRST, tokenize=False), _at(second, "m", weight=SECOND, tokenize=False)),
            timeouts=FAST,
        ),
        Route(model="solo", workers=(_at(first, "m", tokenize=False),), timeouts=FAST),
        # An Anthropic worker registered with the /v1 an OpenAI base URL ends in.
        Route(model="native-v1", workers=(_at(first, "native", api="anthropic"),), timeouts=FAST),
        Route(model="native-v1-slash", workers=(Worker(first.base_url + "/", "native", api="anthropic"),)),
        # Tokenizers: each route its own worker (model name), so each learns on its own.
        Route(model="probed", workers=(_at(first, "probed"),), timeouts=FAST),
        Route(model="no-tokenizer", workers=(_at(first, "no-tok", prefix="/nothing"),), timeouts=FAST),
        Route(model="never", workers=(_at(first, "never", tokenize=False),), timeouts=FAST),
        Route(model="always", workers=(_at(first, "always", prefix="/nothing", tokenize=True),), timeouts=FAST),
        Route(model="unreachable", workers=(Worker(f"http://127.0.0.1:{free_port()}/v1", "gone"),), timeouts=FAST),
    ]
    settings = Settings(keys_table="wb-keys", routes_table="wb-routes", ping_seconds=0.2, worker_attempts=2)
    with parley_stack(dynamodb, settings, routes, key_name="boundary") as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> None:
    if "stack" in request.fixturenames:
        stack = request.getfixturevalue("stack")
        stack.services.health = WorkerHealth()
        stack.services.tokenizers = WorkerTokenizers()
        for name in ("first", "second"):
            request.getfixturevalue(name).reset()


@pytest.fixture
def own(stack: RunningParley) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key=stack.key, max_retries=0, timeout=20)


def ask(model: str, **overrides) -> dict:
    return {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}], **overrides}


def count(client: anthropic.Anthropic, model: str, text: str = "Hi") -> int:
    return client.messages.count_tokens(model=model, messages=[{"role": "user", "content": text}]).input_tokens


def route_of(stack: RunningParley, model: str) -> Route:
    return next(route for route in stack.services.routes.load() if route.model == model)


def paths(fake: FakeWorker) -> list[str]:
    return [seen["path"] for seen in fake.requests]


def test_a_json_error_instead_of_a_stream_fails_over_to_the_next_worker(own, stack, first, second):
    first.enqueue(WorkerError(200, LOADING))
    second.enqueue(ANSWER)
    message = sdk_stream_final(own, **ask("pair"))
    assert message.content[0].text == ANSWER.text
    assert (len(first.requests), len(second.requests)) == (1, 1)
    worker = route_of(stack, "pair").workers[0]
    assert stack.services.health.cooling_until(worker), "the worker that sent no stream cools down"


def test_an_html_page_instead_of_a_stream_fails_over_to_the_next_worker(own, first, second):
    first.enqueue(WorkerError(200, HTML_PAGE))
    second.enqueue(ANSWER)
    assert sdk_stream_final(own, **ask("pair")).content[0].text == ANSWER.text
    assert (len(first.requests), len(second.requests)) == (1, 1)


# -- 4. an Anthropic worker's base URL ending in /v1 ------------------------------------------------


@pytest.mark.parametrize("model", ["native-v1", "native-v1-slash"])
@BOTH_WAYS
def test_an_anthropic_worker_whose_url_ends_in_v1_gets_v1_messages_once(own, first, model, streaming):
    first.enqueue(Answer(text="native through /v1", prompt_tokens=9))
    message = call(own, streaming, **ask(model))
    assert message.content[0].text == "native through /v1" and message.model == model
    assert paths(first) == ["/v1/messages"]


# -- 5. whether a worker tokenizes ----------------------------------------------------------------------


def test_a_worker_that_tokenizes_is_asked_for_counts(own, first):
    first.token_count = 4321
    assert count(own, "probed") == 4321
    first.token_count = 99
    assert count(own, "probed") == 99
    assert paths(first) == ["/tokenize", "/tokenize"], "counting tokens must not run the model"


def test_a_worker_without_tokenize_is_probed_once_and_estimated(own, stack, first):
    estimates = [count(own, "no-tokenizer", "Hi " * n) for n in (1, 400, 400)]
    assert estimates[0] < estimates[1] == estimates[2]
    assert 250 <= estimates[1] <= 350, "about 4 bytes a token"
    hello = {"model": "no-tokenizer", "messages": [{"role": "user", "content": "Hi"}]}
    assert own.messages.count_tokens(**hello, system="You are a meticulous assistant.").input_tokens > estimates[0]
    assert own.messages.count_tokens(**hello, tools=[WEATHER_TOOL]).input_tokens > estimates[0]
    assert paths(first) == ["/nothing/tokenize"], "a 404 is remembered: the worker is not asked again"


def test_a_count_that_is_no_count_means_the_worker_does_not_tokenize(own, first):
    first.token_count = "many"  # type: ignore[assignment]  # {"count": "many"}: no count
    try:
        count(own, "probed")
        count(own, "probed")
    finally:
        first.token_count = None
    assert paths(first) == ["/tokenize"]


def test_tokenize_false_never_asks_the_worker(own, first):
    for _ in range(2):
        assert count(own, "never") >= 1
    assert first.requests == []


def test_tokenize_true_always_asks_the_worker(own, first):
    for _ in range(2):
        assert count(own, "always") >= 1
    assert paths(first) == ["/nothing/tokenize", "/nothing/tokenize"], "the override is never settled by a 404"


def test_an_unreachable_worker_does_not_settle_whether_it_tokenizes(own, stack):
    assert count(own, "unreachable") >= 1
    [worker] = route_of(stack, "unreachable").workers
    assert stack.services.tokenizers.tokenizes(worker) is None


def test_the_memory_of_a_worker_that_does_not_tokenize_fades():
    now = [0.0]
    tokenizers = WorkerTokenizers(forget_seconds=3600, clock=lambda: now[0])
    worker = Worker("http://gpu:8000/v1", "m")
    assert tokenizers.tokenizes(worker) is None
    tokenizers.learned(worker, False)
    assert tokenizers.tokenizes(worker) is False
    now[0] = 3601
    assert tokenizers.tokenizes(worker) is None, "an hour later it is asked again"
    tokenizers.learned(worker, True)
    assert tokenizers.tokenizes(worker) is True


def test_the_demo_worker_counts_its_prompt_as_its_usage_says(stack, demo):
    body = {"model": demo_worker.DEMO_MODEL, "messages": [{"role": "user", "content": "count me " * 30}]}
    with httpx.Client(timeout=20) as raw:
        counted = raw.post(demo.removesuffix("/v1") + "/tokenize", json={**body, "add_generation_prompt": True})
        answer = raw.post(demo + "/chat/completions", json=body)
    assert counted.status_code == 200
    assert counted.json()["count"] == answer.json()["usage"]["prompt_tokens"]


def test_the_demo_route_streams_its_tokenizers_count(stack, demo):
    stack.services.routes.put(Route(model="demo", workers=(Worker(demo, demo_worker.DEMO_MODEL),), timeouts=FAST))
    body = ask("demo", messages=[{"role": "user", "content": "Hello there, how many tokens is this prompt? " * 5}])
    starts = []
    with httpx.Client(base_url=stack.url, headers={"x-api-key": stack.key}, timeout=20) as http:
        for _ in range(2):  # the first while Parley learns that the worker tokenizes, then knowing it
            events = [
                (item.event or "", item.json())
                for item in parse_sse(http.post("/v1/messages", json={**body, "stream": True}).content)
            ]
            assert assert_well_formed(events).text.startswith("[Parley demo worker")
            final = events[[name for name, _ in events].index("message_delta")][1]["usage"]["input_tokens"]
            starts.append(events[0][1]["message"]["usage"]["input_tokens"])
            counted = http.post("/v1/messages/count_tokens", json={"model": "demo", "messages": body["messages"]})
            assert final == counted.json()["input_tokens"], "the tokenizer and the usage agree"
    estimate = estimate_prompt_tokens(body["messages"])
    assert estimate != final, "a prompt whose estimate differs from the count, so that the two can be told apart"
    assert starts == [final, final], "message_start waits for the tokenizer's count (web/streaming.py)"


def test_the_tokenize_option_is_stored_as_given_and_old_routes_learn():
    for tokenize in (True, False, None):
        worker = Worker("http://gpu:8000/v1", "m", tokenize=tokenize)
        assert Worker.from_json(orjson.loads(orjson.dumps(worker.to_json()))) == worker
    # Stored before the option could be left unset: false was its default, and now means "learn".
    old = {"base_url": "http://gpu:8000/v1", "model": "m", "tokenize": False, "weight": 1.0}
    assert Worker.from_json(old).tokenize is None
    assert Worker.from_json({**old, "tokenize": True}).tokenize is True


def test_parley_routes_add_takes_tokenize_and_tokenize_false(dynamodb):
    create_tables(dynamodb, {"routes": "wb-cli-routes"})
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb.meta.endpoint_url,
        "PARLEY_ROUTES_TABLE": "wb-cli-routes",
    }
    workers = ["url=http://a:8000/v1,model=m,tokenize", "url=http://b:8000/v1,model=m,tokenize=false"]
    workers.append("url=http://c:8000/v1,model=m")
    arguments = [arg for spec in workers for arg in ("--worker", spec)]
    done = subprocess.run(
        [sys.executable, "-m", "parley.cli", "routes", "add", "tok", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    [route] = [route for route in RouteStore(dynamodb, "wb-cli-routes").load() if route.model == "tok"]
    assert [worker.tokenize for worker in route.workers] == [True, False, None]
    listed = subprocess.run(
        [sys.executable, "-m", "parley.cli", "routes", "list"], env=env, capture_output=True, text=True, timeout=60
    ).stdout
    assert "TOKENS" in listed and all(word in listed for word in ("worker", "estimate", "learn")), listed
