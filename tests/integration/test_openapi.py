"""schemathesis against Parley's own OpenAPI document: generated requests for every operation, in
and out of the schema (positive and negative modes); no 5xx, and every answer conforms to the
document (status code, content type, headers, body schema).

Not checked: that every schema-valid request is accepted. Some rules are not expressible in the
document (thinking.budget_tokens below max_tokens, tool_choice naming a tool in tools, integral
floats such as 1024.0 for integers, which the strict models refuse): those get a 400 envelope.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from parley.web.app import create_app

from .inprocess import InProcessParley, in_process

EXAMPLES = 25  # per operation and mode
DOCUMENT = create_app(lambda: None).openapi()  # the document needs no services
OPERATIONS = sorted((path, method) for path, item in DOCUMENT["paths"].items() for method in item)
# Negative cases need something to get wrong: a body or a parameter.
RUNS = [
    pytest.param(path, method, mode, id=f"{method.upper()} {path} {mode}")
    for path, method in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or {"requestBody", "parameters"} & set(DOCUMENT["paths"][path][method])
]
CASES: dict[str, int] = {}


@pytest.fixture(scope="module")
def inprocess(parley, dynamodb) -> Iterator[InProcessParley]:
    yield from in_process(parley.services, dynamodb, parley.key)


@pytest.fixture(scope="module")
def served(inprocess: InProcessParley) -> Any:
    """The document as the in-process app serves it, called through schemathesis's ASGI client."""
    return schemathesis.openapi.from_asgi("/openapi.json", inprocess.app)


def test_the_served_document_is_the_one_tested(inprocess):
    response = inprocess.call(inprocess.client.get("/openapi.json"))
    assert response.status_code == 200
    assert response.json() == DOCUMENT
    assert set(OPERATIONS) >= {
        ("/v1/messages", "post"),
        ("/v1/anthropic/messages", "post"),
        ("/v1/messages/count_tokens", "post"),
        ("/v1/models", "get"),
        ("/v1/models/{model_id}", "get"),
        ("/v1/usage", "get"),
    }
    body = DOCUMENT["paths"]["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/MessagesRequest"}


@pytest.mark.parametrize("path,method,mode", RUNS)
def test_operation_conforms(served, inprocess, path, method, mode):
    operation = served[path][method.upper()]
    label = f"{method.upper()} {path}"

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        CASES[label] = CASES.get(label, 0) + 1
        case.call_and_validate(headers={"x-api-key": inprocess.key}, excluded_checks=[positive_data_acceptance])

    run()


def test_usage_by_model_must_be_a_boolean(inprocess):
    """Found by schemathesis: any value but "true" was taken as false."""
    response = inprocess.call(inprocess.client.get("/v1/usage?by_model=yes", headers={"x-api-key": inprocess.key}))
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "by_model: expected true or false"
