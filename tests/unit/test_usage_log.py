"""Usage events as log lines, read back strictly: only lines that start with the marker, each
judged on its own."""

from __future__ import annotations

import dataclasses

import pytest

from parley.core.metering import UsageEvent
from parley.core.usage_log import UsageLineError, is_usage_line, parse_usage_line, subscription_messages, usage_line
from tests.subscription import subscription_event

EVENT = UsageEvent(
    request_id="req_01abc",
    at=1_795_000_000.5,
    key_id="key_1",
    account="acme",
    model="qwen",
    worker="gpu:8000",
    status=200,
    stream=True,
    input_tokens=1200,
    output_tokens=340,
    cache_read_input_tokens=64,
    cost_micros=4321,
    latency_ms=812.5,
    time_to_first_token_ms=95.25,
    requested_model="claude-sonnet-4-5",
)


def test_a_usage_line_reads_back_as_the_same_event():
    line = usage_line(EVENT)
    assert line.startswith("PARLEY_USAGE {") and line.endswith("}\n") and line.count("\n") == 1
    assert parse_usage_line(line) == EVENT
    assert parse_usage_line(line.rstrip("\n")) == EVENT


def test_only_a_line_that_starts_with_the_marker_is_usage():
    # what a 404 for GET /v1/PARLEY_USAGE%20x puts in a Lambda log line: the marker, not at the start
    logged = '{"level":"INFO","message":"request","path":"/v1/PARLEY_USAGE x","status":404}'
    assert not is_usage_line(logged)
    assert not is_usage_line("START RequestId: 1 PARLEY_USAGE {}")
    assert is_usage_line(usage_line(EVENT))
    with pytest.raises(UsageLineError):
        parse_usage_line(logged)


BAD_FIELDS = {
    "negative tokens": {"input_tokens": -1000},
    "a float count": {"output_tokens": 1.5},
    "a string count": {"cost_micros": "12"},
    "a boolean count": {"input_tokens": True},
    "a huge count": {"output_tokens": 10**15},
    "no request id": {"request_id": ""},
    "a flag that is not a boolean": {"stream": "yes"},
    "a negative time": {"at": -5},
}


@pytest.mark.parametrize("change", BAD_FIELDS.values(), ids=BAD_FIELDS.keys())
def test_a_marked_line_with_a_wrong_field_is_refused_by_name(change):
    data = {**dataclasses.asdict(EVENT), **change}
    import orjson

    line = "PARLEY_USAGE " + orjson.dumps(data).decode()
    with pytest.raises(UsageLineError, match=next(iter(change))):
        parse_usage_line(line)


@pytest.mark.parametrize(
    "line",
    ["PARLEY_USAGE x", "PARLEY_USAGE [1]", 'PARLEY_USAGE {"request_id": "r", "surprise": 1}', "PARLEY_USAGE {"],
)
def test_a_marked_line_that_is_not_an_event_is_refused(line):
    with pytest.raises(UsageLineError):
        parse_usage_line(line)


def test_subscription_delivery_is_unpacked():
    assert subscription_messages(subscription_event(["a", usage_line(EVENT)])) == ["a", usage_line(EVENT)]
