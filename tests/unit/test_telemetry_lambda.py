"""In Lambda, each request is one JSON log line and CloudWatch EMF metrics on stdout."""

from __future__ import annotations

import json

from parley.telemetry import RequestOutcome, Telemetry


def test_lambda_output_is_a_json_log_line_and_emf_metrics(capsys, monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "parley-api")
    outcome = RequestOutcome("req_01abc", "POST", "/v1/messages", key_id="key_1234", account="acme")
    outcome.model, outcome.worker, outcome.stream, outcome.status = "qwen3-8b", "gpu-1:8000", True, 200
    outcome.input_tokens, outcome.output_tokens = 120, 45
    outcome.first_token_at = outcome.started + 0.05
    outcome.finished = outcome.started + 0.5

    Telemetry().record(outcome)

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    [log] = [line for line in lines if line.get("message") == "request"]
    assert log["request_id"] == "req_01abc" and log["key_id"] == "key_1234" and log["model"] == "qwen3-8b"
    assert log["input_tokens"] == 120 and log["output_tokens"] == 45 and log["latency_ms"] == 500.0
    assert log["time_to_first_token_ms"] == 50.0
    [emf] = [line for line in lines if "_aws" in line]
    metrics = {metric["Name"] for metric in emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"Requests", "Errors", "InputTokens", "OutputTokens", "Latency", "TimeToFirstToken"} <= metrics
    assert emf["model"] == "qwen3-8b" and emf["worker"] == "gpu-1:8000"
    assert emf["InputTokens"] == [120.0] and emf["Errors"] == [0.0]


def test_lambda_errors_are_also_counted_by_type(capsys, monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "parley-api")
    outcome = RequestOutcome("req_01err", "POST", "/v1/messages", status=529, error_type="overloaded_error")
    outcome.finished = outcome.started

    Telemetry().record(outcome)

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    by_type = [line for line in lines if "ErrorsByType" in line]
    assert by_type and by_type[0]["error_type"] == "overloaded_error"
