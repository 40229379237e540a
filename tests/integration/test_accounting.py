"""Accounting as a user or operator notices it: usage records and aggregates, cost, rate limits
(per key, per account, concurrent), spend caps, expired keys and allowed models."""

from __future__ import annotations

import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Iterator

import pytest

from parley.core.metering import Limits, Prices, UsageEvent, day_of
from parley.io.accounts import AccountRecord
from parley.io.routes import Route, Worker
from tests.fakeworker import Answer, WorkerError

from .helpers import HELLO, MODEL, WORKER_MODEL, as_int, assert_error, parse_sse, request, wait_for_record

PRICED_MODEL = "priced-model"
INPUT_PER_MTOK, OUTPUT_PER_MTOK = 3.0, 15.0


# -- helpers -----------------------------------------------------------------------------------


def fresh_account(prefix: str = "acct") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def new_key(parley: Any, account: str | None = None, **kwargs: Any) -> tuple[str, Any]:
    return parley.services.keys.create(account=account or fresh_account(), name="t", **kwargs)


@pytest.fixture
def priced(parley: Any, worker: Any) -> Iterator[str]:
    """A priced route, only for the test that asks for it (the models list is exact elsewhere)."""
    parley.services.routes.put(
        Route(
            model=PRICED_MODEL,
            workers=(Worker(base_url=worker.base_url, model=WORKER_MODEL),),
            prices=Prices(input_per_mtok=INPUT_PER_MTOK, output_per_mtok=OUTPUT_PER_MTOK),
        )
    )
    yield PRICED_MODEL
    parley.services.routes.remove(PRICED_MODEL)


def as_bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() == "true"


# -- 1. a buffered request on a priced route --------------------------------------------------


def test_buffered_request_is_recorded_once_with_its_cost(parley, worker, raw, priced):
    account = fresh_account()
    key, record = new_key(parley, account)
    worker.enqueue(Answer(text="Priced answer.", prompt_tokens=1234, completion_tokens=567))
    response = raw(key).post("/v1/messages", json=request(model=priced))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["usage"]["input_tokens"], body["usage"]["output_tokens"]) == (1234, 567)
    request_id = response.headers["request-id"]

    usage = wait_for_record(parley, request_id)
    assert usage["request_id"] == request_id
    assert usage["key_id"] == record.key_id
    assert usage["account"] == account
    assert usage["model"] == priced
    assert as_int(usage["status"]) == 200
    assert as_bool(usage["stream"]) is False
    assert (as_int(usage["input_tokens"]), as_int(usage["output_tokens"])) == (1234, 567)
    assert as_int(usage["cost_micros"]) == round(1234 * INPUT_PER_MTOK + 567 * OUTPUT_PER_MTOK)  # 12_207
    assert "error_type" not in usage
    assert as_bool(usage.get("client_disconnected", False)) is False

    day = day_of(time.time())
    rows = parley.services.usage.aggregates(f"key#{record.key_id}", day, day)
    totals = [row for row in rows if row["model"] is None]
    assert len(totals) == 1, rows
    total = totals[0]
    assert (total["requests"], total["errors"]) == (1, 0)
    assert (total["input_tokens"], total["output_tokens"]) == (1234, 567)
    assert total["cost_micros"] == 12_207
    by_model = [row for row in rows if row["model"] == priced]
    assert len(by_model) == 1 and by_model[0]["requests"] == 1, rows
    assert [row for row in parley.services.usage.aggregates(f"account#{account}", day, day) if row["model"] is None][0][
        "requests"
    ] == 1


# -- 2. streamed, failed, abandoned -------------------------------------------------------------


def test_streamed_request_is_recorded_as_a_stream(parley, worker, raw):
    key, record = new_key(parley)
    worker.enqueue(Answer(text="Streamed answer here.", prompt_tokens=21, completion_tokens=9))
    response = raw(key).post("/v1/messages", json=request(stream=True))
    assert response.status_code == 200, response.text
    assert "message_stop" in [event.event for event in parse_sse(response.content)]
    usage = wait_for_record(parley, response.headers["request-id"])
    assert as_bool(usage["stream"]) is True
    assert as_int(usage["status"]) == 200
    assert (as_int(usage["input_tokens"]), as_int(usage["output_tokens"])) == (21, 9)
    assert usage["key_id"] == record.key_id
    assert as_int(usage["cost_micros"]) == 0  # MODEL's route has no prices


def test_failed_request_is_recorded_as_an_error(parley, worker, raw):
    key, record = new_key(parley)
    worker.enqueue(WorkerError(500, {"error": {"message": "the worker fell over"}}))
    response = raw(key).post("/v1/messages", json=request())
    assert_error(response, 500, "api_error")
    usage = wait_for_record(parley, response.headers["request-id"])
    assert as_int(usage["status"]) == 500
    assert usage["error_type"] == "api_error"
    assert usage["key_id"] == record.key_id
    day = day_of(time.time())
    total = [row for row in parley.services.usage.aggregates(f"key#{record.key_id}", day, day) if row["model"] is None]
    assert total and (total[0]["requests"], total[0]["errors"]) == (1, 1)


def test_abandoned_stream_is_recorded_as_a_client_disconnect(parley, worker, raw):
    key, _ = new_key(parley)
    words = 200
    text = " ".join(f"word{i}" for i in range(words))
    worker.enqueue(Answer(text=text, prompt_tokens=15, completion_tokens=words, chunk_delay=0.05))
    client = raw(key)
    seen = 0
    with client.stream("POST", "/v1/messages", json=request(stream=True, max_tokens=2048)) as response:
        assert response.status_code == 200
        request_id = response.headers["request-id"]
        for line in response.iter_lines():
            if line.startswith("event:"):
                seen += 1
            if seen >= 4:  # message_start, content_block_start, and a couple of deltas
                break
    # leaving the block closes the connection mid-stream
    usage = wait_for_record(parley, request_id)
    assert as_bool(usage.get("client_disconnected", False)) is True, usage
    output = as_int(usage["output_tokens"])
    assert 0 < output < words, f"output_tokens {output}: expected a part of the {words}-token answer"
    assert as_bool(usage["stream"]) is True


# -- 3. requests per minute -----------------------------------------------------------------


def test_requests_per_minute_with_headers(parley, raw, one_minute):
    key, _ = new_key(parley, limits=Limits(requests_per_minute=3))
    client = raw(key)
    remaining = []
    for _ in range(3):
        response = client.post("/v1/messages", json=request())
        assert response.status_code == 200, response.text
        assert response.headers["anthropic-ratelimit-requests-limit"] == "3"
        remaining.append(response.headers["anthropic-ratelimit-requests-remaining"])
        reset = datetime.strptime(response.headers["anthropic-ratelimit-requests-reset"], "%Y-%m-%dT%H:%M:%SZ")
        reset = reset.replace(tzinfo=timezone.utc).timestamp()
        assert 0 < reset - time.time() <= 61
    assert remaining == ["2", "1", "0"]

    refused = client.post("/v1/messages", json=request())
    message = assert_error(refused, 429, "rate_limit_error")
    assert "rate limit" in message
    assert 1 <= int(refused.headers["retry-after"]) <= 60


# -- 4. concurrency ---------------------------------------------------------------------------


def test_requests_per_minute_hold_under_concurrency(parley, raw, one_minute):
    key, _ = new_key(parley, limits=Limits(requests_per_minute=20))
    client = raw(key)

    def one(_: int) -> int:
        return client.post("/v1/messages", json=request()).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(one, range(60)))
    ok, limited = statuses.count(200), statuses.count(429)
    print(f"concurrency: {ok} succeeded, {limited} rate-limited, others {sorted(set(statuses) - {200, 429})}")
    assert (ok, limited) == (20, 40), statuses


# -- 5. account limits span keys ----------------------------------------------------------------


def test_account_limits_span_its_keys(parley, raw, one_minute):
    account = fresh_account()
    parley.services.accounts.put(AccountRecord(account, Limits(requests_per_minute=2)))
    first, _ = new_key(parley, account)
    second, _ = new_key(parley, account)
    assert raw(first).post("/v1/messages", json=request()).status_code == 200
    assert raw(second).post("/v1/messages", json=request()).status_code == 200
    refused = raw(first).post("/v1/messages", json=request())
    message = assert_error(refused, 429, "rate_limit_error")
    assert "account" in message
    # a key of another account is unaffected
    other, _ = new_key(parley)
    assert raw(other).post("/v1/messages", json=request()).status_code == 200


# -- 6. spend cap -------------------------------------------------------------------------------


def test_monthly_spend_cap_refuses_with_anthropics_wording(parley, worker, raw):
    account = fresh_account()
    key, record = new_key(parley, account, limits=Limits(monthly_spend_usd=0.01))
    parley.services.usage.record(
        UsageEvent(
            request_id=f"req_seed_{secrets.token_hex(8)}",
            at=time.time(),
            key_id=record.key_id,
            account=account,
            model=MODEL,
            worker=WORKER_MODEL,
            status=200,
            stream=False,
            input_tokens=100,
            output_tokens=100,
            cost_micros=20_000,
        )
    )
    response = raw(key).post("/v1/messages", json=request())
    message = assert_error(response, 400, "invalid_request_error")
    assert message.startswith("Your credit balance is too low"), message
    assert not worker.requests, "a refused request must not reach the worker"


# -- 7. expired keys and allowed models ------------------------------------------------------


def test_expired_key_is_refused(parley, worker, raw):
    key, _ = new_key(parley, expires_at="2020-01-01T00:00:00+00:00")
    response = raw(key).post("/v1/messages", json=request())
    assert assert_error(response, 401, "authentication_error") == "This API key has expired."
    assert not worker.requests


def test_model_outside_allowed_models_is_forbidden(parley, worker, raw):
    key, _ = new_key(parley, allowed_models=("other-model",))
    response = raw(key).post("/v1/messages", json={"model": MODEL, "max_tokens": 64, "messages": HELLO})
    message = assert_error(response, 403, "permission_error")
    assert MODEL in message
    assert not worker.requests


# -- 8. tokens per minute -------------------------------------------------------------------


def test_tokens_per_minute_count_real_usage(parley, worker, raw, one_minute):
    key, _ = new_key(parley, limits=Limits(tokens_per_minute=50))
    client = raw(key)
    worker.enqueue(Answer(text="Seventy tokens, say.", prompt_tokens=40, completion_tokens=30))
    first = client.post("/v1/messages", json=request())
    assert first.status_code == 200, first.text
    assert first.headers["anthropic-ratelimit-tokens-limit"] == "50"
    refused = client.post("/v1/messages", json=request())
    message = assert_error(refused, 429, "rate_limit_error")
    assert "tokens per minute" in message
    assert 1 <= int(refused.headers["retry-after"]) <= 60


# -- reading usage -------------------------------------------------------------------------------


def test_key_holders_read_their_own_usage(parley, worker, raw):
    key, record = new_key(parley)
    other_key, _ = new_key(parley)
    worker.enqueue(Answer(text="one", prompt_tokens=10, completion_tokens=2))
    worker.enqueue(Answer(text="two", prompt_tokens=20, completion_tokens=3))
    worker.enqueue(Answer(text="not mine", prompt_tokens=500, completion_tokens=500))
    for client in (raw(key), raw(key), raw(other_key)):
        assert client.post("/v1/messages", json=request()).status_code == 200
    assert parley.services.metered()

    totals = raw(key).get("/v1/usage").json()
    assert totals["key_id"] == record.key_id and totals["account"] == record.account
    [day] = totals["data"]
    assert (day["model"], day["requests"], day["input_tokens"], day["output_tokens"]) == (None, 2, 30, 5)
    [by_model] = raw(key).get("/v1/usage", params={"by_model": "true"}).json()["data"]
    assert (by_model["model"], by_model["requests"]) == (MODEL, 2)
    assert raw(key).get("/v1/usage", params={"since": "2999-01-01"}).json()["data"] == []
    message = assert_error(raw(key).get("/v1/usage", params={"since": "yesterday"}), 400, "invalid_request_error")
    assert message.startswith("since:")


def test_operators_export_usage_as_csv_and_json(parley, worker, raw, dynamodb, capsys, monkeypatch):
    from parley.cli import main

    account = fresh_account("export")
    key, _ = new_key(parley, account)
    worker.enqueue(Answer(text="metered", prompt_tokens=7, completion_tokens=4))
    assert raw(key).post("/v1/messages", json=request()).status_code == 200
    assert parley.services.metered()
    settings = parley.services.settings
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb.meta.endpoint_url)
    for role, name in settings.table_names.items():
        monkeypatch.setenv(f"PARLEY_{role.upper()}_TABLE", name)

    assert main(["usage", "--account", account, "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0]
        == "account,day,model,requests,errors,input_tokens,cache_read_input_tokens,output_tokens,cache_hits,cost_usd"
    )
    assert lines[1].startswith(f"{account},") and lines[1].endswith(",,1,0,7,0,4,0,0.0")

    assert main(["usage", "--account", account, "--by-model", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["account"], row["model"], row["requests"], row["output_tokens"]) == (account, MODEL, 1, 4)


# -- the model a request is metered under -------------------------------------------------------


def test_usage_is_metered_under_the_routes_name_whatever_alias_the_client_sent(parley, worker, raw):
    key, record = new_key(parley)
    spellings = ["claude-sonnet-4-5", "claude-opus-4-1-20250805", "claude-" + "x" * 240]
    for spelling in spellings:
        worker.enqueue(Answer(text="aliased", prompt_tokens=10, completion_tokens=2))
        response = raw(key).post("/v1/messages", json=request(model=spelling))
        assert response.status_code == 200, response.text
        assert response.json()["model"] == spelling, "the client sees the name it asked for"
        usage = wait_for_record(parley, response.headers["request-id"])
        assert (usage["model"], usage["requested_model"]) == (MODEL, spelling)
    day = day_of(time.time())
    by_model = [row for row in parley.services.usage.aggregates(f"key#{record.key_id}", day, day) if row["model"]]
    assert [(row["model"], row["requests"]) for row in by_model] == [(MODEL, 3)], "one model, one aggregate"


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions"])
def test_a_model_name_over_the_limit_is_a_clear_400_not_an_unmetered_answer(parley, worker, raw, path):
    """A ~1,100-character name matching claude-* used to be answered 200 and never metered (the
    aggregate's sort key passed DynamoDB's 1,024-byte limit and the transaction failed)."""
    key, record = new_key(parley)
    model = "claude-" + "x" * 1_100
    body = request(model=model) if path == "/v1/messages" else {"model": model, "messages": HELLO}
    response = raw(key).post(path, json=body)
    if path == "/v1/messages":
        message = assert_error(response, 400, "invalid_request_error")
    else:  # OpenAI's error envelope on the OpenAI endpoint
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
        message = response.json()["error"]["message"]
    assert message.startswith("model:") and "256" in message
    assert not worker.requests
