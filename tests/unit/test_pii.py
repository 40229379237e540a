"""Texts in → the personal data and secrets found in them (tests/vectors/pii/*.json: each case a
text, optionally the policy's entities, phone regions and allowed values, and the values expected)."""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

import pytest

import parley.core.pii as pii_module
from parley.core.pii import PiiDetector, Span, detector_for
from parley.core.policy import PII_ENTITIES, PiiPolicy
from tests.vectors.loader import VECTORS

CASES = [
    (path.stem, case) for path in sorted((VECTORS / "pii").glob("*.json")) for case in json.loads(path.read_text())
]
PROSE = (
    "The deploy finished at 10:42 and the dashboard showed 3 warnings (see src/app.py:120:4). "
    "Version 2.4.1 fixed the retry loop; commit 9f2c1e7 is on main. "
)


def detector_of(case: dict[str, Any]) -> PiiDetector:
    return detector_for(
        PiiPolicy(
            mode="mask",
            entities=tuple(case.get("entities", PII_ENTITIES)),
            phone_regions=tuple(case.get("regions", ("US",))),
            allow=tuple(case.get("allow", ())),
        )
    )


def found(detector: PiiDetector, text: str) -> list[dict[str, str]]:
    return [{"entity": span.entity, "value": text[span.start : span.end]} for span in detector.find(text)]


@pytest.mark.parametrize("case", [pytest.param(case, id=f"{stem}: {case['name']}") for stem, case in CASES])
def test_the_values_found_in_a_text(case: dict[str, Any]) -> None:
    assert found(detector_of(case), case["text"]) == case["expect"]


def test_spans_of_every_vector_text_together_are_in_order_and_never_overlap() -> None:
    text = "\n".join(case["text"] for _, case in CASES)
    spans = PiiDetector().find(text)
    assert spans == sorted(spans, key=lambda span: span.start)
    assert all(0 <= span.start < span.end <= len(text) for span in spans)
    assert all(before.end <= after.start for before, after in pairwise(spans))


@pytest.mark.parametrize("case", [pytest.param(case, id=f"{stem}: {case['name']}") for stem, case in CASES])
def test_the_same_values_are_found_wherever_the_text_sits_in_a_long_one(case: dict[str, Any]) -> None:
    detector = detector_of(case)
    for before, after in ((PROSE * 30, ""), ("", "\n" + PROSE * 30), (PROSE * 7, "\n" + PROSE * 11)):
        assert found(detector, before + case["text"] + after) == case["expect"], len(before)


def test_an_entity_left_out_of_a_policy_is_not_reported_and_the_others_still_are() -> None:
    text = "\n".join(case["text"] for _, case in CASES)
    everything = PiiDetector().find(text)
    assert {span.entity for span in everything} == set(PII_ENTITIES)
    for entity in PII_ENTITIES:
        spans = PiiDetector(other for other in PII_ENTITIES if other != entity).find(text)
        assert entity not in {span.entity for span in spans}
        assert {span for span in everything if span.entity != entity} <= set(spans), entity


def test_a_policy_with_no_entities_finds_nothing() -> None:
    assert PiiDetector(()).find("jane@example.com 4111 1111 1111 1111") == []


def test_an_unknown_entity_is_refused() -> None:
    with pytest.raises(ValueError, match="passport"):
        PiiDetector(("email", "passport"))


def test_a_span_gives_where_the_value_is() -> None:
    assert PiiDetector().find("mail: jane@example.com") == [Span(6, 22, "email")]


def test_the_module_exports() -> None:
    assert set(pii_module.__all__) == {"PiiDetector", "Span", "detector_for"}
