"""The Lambda entry points, run as Lambda runs them.

ApiFunction: the events in events/ replayed through the real Mangum handler. StreamFunction:
exactly what functions/stream/run.sh runs (uvicorn on the shared app), with the official SDK
streaming through it. BootstrapFunction: a CloudFormation custom-resource round trip.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import anthropic
import pytest

from parley.io.keys import KeyStore
from parley.io.routes import Route, RouteStore, Worker
from parley.io.tables import create_tables
from tests.anthropic_stream import assert_well_formed
from tests.fakeworker import Answer
from tests.stack import free_port, wait_until_healthy

from .helpers import parse_sse


def sse_events(body: str) -> list[tuple[str, dict]]:
    return [(item.event or "", item.json()) for item in parse_sse(body.encode())]


ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
EVENT_KEY = "sk-parley-events-0000000000000000"
TABLES = {role: f"lambda-{role}" for role in ("keys", "routes", "usage", "limits", "accounts", "policies")}
CONTEXT = SimpleNamespace(aws_request_id="b1946ac9-2e2f-4f68-b1e4-lambda", function_name="parley-api")


def load_module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lambda_environment(dynamodb, worker) -> Iterator[dict[str, str]]:
    """The environment template.yaml gives the functions, pointed at DynamoDB Local and the fake worker."""
    create_tables(dynamodb, TABLES)
    RouteStore(dynamodb, TABLES["routes"]).put(
        Route(model="parley-demo", workers=(Worker(base_url=worker.base_url, model="fake-model"),))
    )
    KeyStore(dynamodb, TABLES["keys"]).create(account="events", name="events", key=EVENT_KEY)
    environment = {
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb.meta.endpoint_url,
        **{f"PARLEY_{role.upper()}_TABLE": name for role, name in TABLES.items()},
        "PARLEY_USAGE_LOG": "stdout",  # as the template's globals: usage lines for the metering function
    }
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    yield environment
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def api_handler(lambda_environment) -> Any:
    return load_module(ROOT / "functions" / "api" / "handler.py", "api_function_handler").handler


def invoke(handler: Any, event_name: str) -> tuple[int, dict[str, str], str]:
    event = json.loads((EVENTS / f"{event_name}.json").read_text())
    response = handler(event, CONTEXT)
    headers = {name.lower(): value for name, value in (response.get("headers") or {}).items()}
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers[name.lower()] = values[0]
    return response["statusCode"], headers, response["body"]


def test_buffered_message_event(api_handler, worker):
    worker.enqueue(Answer(text="Hello from the worker", prompt_tokens=9, completion_tokens=4))
    status, headers, body = invoke(api_handler, "api-message")
    assert status == 200 and headers["request-id"].startswith("req_")
    message = json.loads(body)
    assert message["content"] == [{"type": "text", "text": "Hello from the worker"}]
    assert message["model"] == "parley-demo" and message["usage"]["output_tokens"] == 4
    assert worker.requests[-1]["body"]["messages"] == [{"role": "user", "content": "Hello from an event"}]


def test_stream_request_on_the_buffered_function_gets_a_complete_sse_body(api_handler, worker):
    worker.enqueue(Answer(text="Streamed, then buffered by Mangum"))
    status, headers, body = invoke(api_handler, "api-message-stream")
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    result = assert_well_formed(sse_events(body))
    assert result.text == "Streamed, then buffered by Mangum" and result.stop_reason == "end_turn"


def test_count_tokens_and_models_events(api_handler):
    status, _, body = invoke(api_handler, "api-count-tokens")
    assert status == 200 and json.loads(body)["input_tokens"] > 0
    status, _, body = invoke(api_handler, "api-models")
    assert status == 200 and [model["id"] for model in json.loads(body)["data"]] == ["parley-demo"]


@pytest.mark.parametrize(
    ("event_name", "status", "error_type", "message_start"),
    [
        ("api-bad-key", 401, "authentication_error", "invalid x-api-key"),
        ("api-malformed-body", 400, "invalid_request_error", "The request body is not valid JSON"),
        ("api-missing-max-tokens", 400, "invalid_request_error", "max_tokens: Field required"),
    ],
)
def test_refused_events_get_anthropic_error_envelopes(api_handler, event_name, status, error_type, message_start):
    got_status, headers, body = invoke(api_handler, event_name)
    error = json.loads(body)
    assert got_status == status and error["type"] == "error" and error["error"]["type"] == error_type
    assert error["error"]["message"].startswith(message_start)
    assert error["request_id"] == headers["request-id"]


def test_function_url_events_through_mangum(api_handler, worker):
    worker.enqueue(Answer(text="Via a Function URL event"))
    status, _, body = invoke(api_handler, "url-message-stream")
    assert status == 200 and assert_well_formed(sse_events(body)).text == "Via a Function URL event"
    status, _, body = invoke(api_handler, "url-models")
    assert status == 200 and json.loads(body)["data"][0]["id"] == "parley-demo"


@pytest.fixture(scope="module")
def stream_function(lambda_environment) -> Iterator[str]:
    """functions/stream/run.sh as the Lambda Web Adapter starts it, on a loopback port."""
    port = free_port()
    environment = {
        **os.environ,
        **lambda_environment,
        "PORT": str(port),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    process = subprocess.Popen(["sh", str(ROOT / "functions" / "stream" / "run.sh")], env=environment)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, lambda: process.poll() is None, seconds=20)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_stream_entry_point_streams_to_the_sdk(stream_function, worker):
    worker.enqueue(Answer(text="Streaming through run.sh", chunk_delay=0.01))
    client = anthropic.Anthropic(base_url=stream_function, api_key=EVENT_KEY, max_retries=0)
    texts = []
    with client.messages.stream(
        model="parley-demo", max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        texts.extend(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "Streaming through run.sh" == final.content[0].text
    assert len(texts) > 1, "the answer must arrive in pieces, not buffered"


class _CloudFormation(BaseHTTPRequestHandler):
    """Where a custom resource PUTs its answer."""

    answers: list[dict[str, Any]] = []

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        self.answers.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def cloudformation() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    server = HTTPServer(("127.0.0.1", 0), _CloudFormation)
    _CloudFormation.answers = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/response", _CloudFormation.answers
    server.shutdown()


def custom_resource_event(request_type: str, response_url: str, model: str, physical_id: str | None = None) -> dict:
    event = {
        "RequestType": request_type,
        "ResponseURL": response_url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/parley/1",
        "RequestId": f"{request_type}-1",
        "LogicalResourceId": "BootstrapRoute",
        "ResourceProperties": {
            "Model": model,
            "WorkerUrl": "http://gpu-1:8000/v1",
            "WorkerModel": "Qwen/Qwen3-8B",
            "WorkerApiKeyRef": "secretsmanager:arn:aws:secretsmanager:us-east-1:123456789012:secret:worker",
            "MaxOutputTokens": "8192",
            "Aliases": ["claude-*"],
        },
    }
    if physical_id:
        event["PhysicalResourceId"] = physical_id
    return event


def test_the_bootstrap_custom_resource_writes_renames_and_removes_the_route(
    lambda_environment, dynamodb, cloudformation
):
    response_url, answers = cloudformation
    handler = load_module(ROOT / "functions" / "bootstrap" / "handler.py", "bootstrap_handler").handler
    routes = RouteStore(dynamodb, TABLES["routes"])

    handler(custom_resource_event("Create", response_url, "qwen3-8b"), CONTEXT)
    [route] = [route for route in routes.load() if route.model == "qwen3-8b"]
    assert route.worker.model == "Qwen/Qwen3-8B" and route.worker.max_output_tokens == 8192
    assert route.worker.api_key_ref.startswith("secretsmanager:") and route.aliases == ("claude-*",)

    handler(custom_resource_event("Update", response_url, "qwen3-14b", physical_id="qwen3-8b"), CONTEXT)
    handler(custom_resource_event("Delete", response_url, "qwen3-14b", physical_id="qwen3-14b"), CONTEXT)
    assert {route.model for route in routes.load()} == {"parley-demo"}
    assert [(answer["Status"], answer["PhysicalResourceId"]) for answer in answers] == [
        ("SUCCESS", "qwen3-8b"),
        ("SUCCESS", "qwen3-14b"),
        ("SUCCESS", "qwen3-14b"),
    ]
