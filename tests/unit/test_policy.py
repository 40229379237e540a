"""Policy documents in → the Policy they describe (as its complete document), or the exact refusal."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

import parley.core.policy as policy_module
from parley.core.errors import InvalidRequestError
from parley.core.policy import NO_POLICY, DenyRule, PolicyError, parse_policy, policy_document
from tests.vectors.loader import VECTORS, check_expected, load

POLICIES = VECTORS / "policies"
VALID = [pytest.param(path, id=path.stem) for path in sorted(POLICIES.glob("*.json")) if "document" in load(path)]


def invalid_cases() -> list[Any]:
    cases = load(POLICIES / "errors.json")["cases"]
    return [pytest.param(case["document"], case["error"], id=case["error"].partition(":")[0]) for case in cases]


@pytest.mark.parametrize("path", VALID)
def test_a_valid_document_parses_to_its_expected_policy(path: Path) -> None:
    vector = load(path)
    check_expected(path, vector, "expected", policy_document(parse_policy(vector["document"])))


@pytest.mark.parametrize("path", VALID)
def test_a_policy_round_trips_through_its_document(path: Path) -> None:
    policy = parse_policy(load(path)["document"], "account#a@7")
    assert parse_policy(policy_document(policy), policy.version) == policy
    assert policy_document(parse_policy(policy_document(policy))) == policy_document(policy)


@pytest.mark.parametrize(("document", "error"), invalid_cases())
def test_an_invalid_document_is_refused_naming_the_field(document: Any, error: str) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(document)
    assert raised.value.message == error


def test_the_empty_document_is_no_policy_and_a_missing_section_takes_the_defaults() -> None:
    assert parse_policy({}) == NO_POLICY and not parse_policy({}).active
    assert parse_policy({"pii": {}, "content": {}}) == NO_POLICY
    assert parse_policy({"pii": {"mode": "mask"}}).content == NO_POLICY.content


def test_a_document_keeps_the_order_it_lists_entities_and_rules_in() -> None:
    rules = [{"name": "b", "phrases": ["x"]}, {"name": "a", "phrases": ["y"]}]
    policy = parse_policy({"pii": {"entities": ["ip", "email"]}, "content": {"deny": rules}})
    assert policy.pii.entities == ("ip", "email")
    assert [rule.name for rule in policy.content.deny] == ["b", "a"]
    assert policy.content.deny[0] == DenyRule(name="b", phrases=("x",))


def test_the_version_is_given_not_read_from_the_document() -> None:
    assert parse_policy({"pii": {"mode": "mask"}}, "key#key_1@3").version == "key#key_1@3"
    assert "version" not in policy_document(dataclasses.replace(NO_POLICY, version="account#a@1"))
    with pytest.raises(PolicyError, match="^version: unknown field"):
        parse_policy({"version": "account#a@1"})


def test_a_refused_document_is_a_400_invalid_request_error() -> None:
    assert issubclass(PolicyError, InvalidRequestError) and PolicyError("x").status == 400


def test_the_module_exports() -> None:
    assert set(policy_module.__all__) == {
        "PII_ENTITIES",
        "NEVER_RESTORED",
        "ContentPolicy",
        "DenyRule",
        "PiiPolicy",
        "CachePolicy",
        "KNOWLEDGE_BASE_NAME",
        "RagPolicy",
        "Policy",
        "NO_POLICY",
        "PolicyError",
        "parse_policy",
        "policy_document",
    }
