"""Usage events as log lines, and reading them back from a subscription delivery."""

from __future__ import annotations

import pytest

from parley.core.metering import UsageEvent
from parley.core.usage_log import subscription_messages, usage_events, usage_line
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
)


def test_a_usage_line_reads_back_as_the_same_event():
    line = usage_line(EVENT)
    assert line.startswith("PARLEY_USAGE {") and line.endswith("}\n") and line.count("\n") == 1
    assert usage_events([line.rstrip("\n")]) == [EVENT]


def test_other_log_lines_are_skipped_and_a_broken_usage_line_is_not():
    messages = ["START RequestId: 1", usage_line(EVENT), '{"level":"INFO","message":"request"}']
    assert usage_events(messages) == [EVENT]
    with pytest.raises(ValueError):
        usage_events(['PARLEY_USAGE {"request_id": "req_01abc", "surprise": 1}'])


def test_subscription_delivery_is_unpacked():
    assert subscription_messages(subscription_event(["a", usage_line(EVENT)])) == ["a", usage_line(EVENT)]
