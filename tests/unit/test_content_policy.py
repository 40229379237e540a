"""Deny rules and prompt-injection heuristics: the vectors in tests/vectors/content (expectations
written by hand), and the stream's rules they cannot show: split points, what is held back, flush.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any, Literal

import pytest

from parley.core import content_policy
from parley.core.content_policy import (
    HOLD_SLACK,
    PATTERN_HOLD,
    ContentRules,
    StreamJudge,
    normalise,
    pattern_error,
)
from parley.core.policy import ContentPolicy, DenyRule
from tests.vectors.loader import VECTORS, load

CONTENT = VECTORS / "content"


def policy_of(document: dict[str, Any]) -> ContentPolicy:
    return ContentPolicy(
        deny=tuple(
            DenyRule(
                name=rule["name"],
                phrases=tuple(rule.get("phrases", ())),
                patterns=tuple(rule.get("patterns", ())),
                direction=rule.get("direction", "both"),
            )
            for rule in document["deny"]
        )
    )


def cases(pattern: str) -> list[Any]:
    params = []
    for path in sorted(CONTENT.glob(pattern)):
        for index, case in enumerate(load(path)["cases"]):
            params.append(pytest.param(path, index, id=f"{path.stem}-{case['name']}"))
    return params


def stream(
    rules: ContentRules, chunks: list[str], direction: Literal["input", "output"] = "output"
) -> tuple[str, StreamJudge]:
    """What a stream sends of `chunks`, and its judge."""
    judge = StreamJudge(rules, direction)
    sent = "".join(judge.feed(chunk) for chunk in chunks) + judge.flush()
    return sent, judge


def chunkings(text: str) -> list[list[str]]:
    """The text whole, in 1-character chunks, and split in two at every point."""
    return [[text], list(text), *([text[:at], text[at:]] for at in range(1, len(text)))]


RULES = ContentRules.compile(
    ContentPolicy(
        deny=(
            DenyRule("weapons", phrases=("make a bomb", "nerve agent")),
            DenyRule("codenames", phrases=("café", "가나", "cafe au lait")),
        )
    )
)


@pytest.mark.parametrize(("path", "index"), cases("deny_*.json"))
def test_deny_vector(path: Path, index: int) -> None:
    document = load(path)
    case = document["cases"][index]
    rules = ContentRules.compile(policy_of(case.get("policy", document["policy"])))
    assert rules.judge(case["text"], case["direction"]) == case["expect"]
    # A stream of the same text is denied exactly when the whole text is, however it is chunked.
    for chunks in ([case["text"]], list(case["text"])):
        sent, judge = stream(rules, chunks, case["direction"])
        assert (judge.rule is None) == (case["expect"] is None)
        assert case["text"].startswith(sent)
        if case["expect"] is None:
            assert sent == case["text"]


@pytest.mark.parametrize(("path", "index"), cases("injection.json"))
def test_injection_vector(path: Path, index: int) -> None:
    case = load(path)["cases"][index]
    assert ContentRules.compile(ContentPolicy()).injection(case["text"]) is case["expect"]


@pytest.mark.parametrize("phrase", ["make a bomb", "nerve agent"])
def test_a_phrase_is_caught_at_every_split_point_and_nothing_of_it_is_sent(phrase: str) -> None:
    text = f"Step one: {phrase}, then the rest."
    before = text[: text.index(phrase)]
    for chunks in chunkings(text):
        sent, judge = stream(RULES, chunks)
        assert judge.rule == "weapons", chunks
        assert sent == before, chunks
    three = [[text[:i], text[i:j], text[j:]] for i in range(1, len(text)) for j in range(i + 1, len(text))]
    assert all(stream(RULES, chunks)[0] == before for chunks in three)


def test_a_phrase_is_caught_across_chunks_of_different_widths() -> None:
    """Emoji (4-byte characters) then ASCII, and back: pyahocorasick's `iter.set()` corrupted memory
    on exactly this (core/content_policy.py, StreamJudge._phrase_matches)."""
    for _ in range(200):
        sent, judge = stream(RULES, ["Step \U0001f600 one: make a b", "omb \U0001f4a3", "then"])
        assert judge.rule == "weapons" and sent == "Step \U0001f600 one: "


@pytest.mark.parametrize("invisible", ["\u200b", "\u00ad", "\ufeff", "\u200d"])
def test_a_phrase_with_a_zero_width_character_inside_is_caught_at_every_split_point(invisible: str) -> None:
    phrase = "nerve agent"
    for at in range(1, len(phrase)):
        text = f"Ask about {phrase[:at]}{invisible}{phrase[at:]} today"
        for chunks in chunkings(text):
            sent, judge = stream(RULES, chunks)
            assert judge.rule == "weapons", (at, chunks)
            assert sent == "Ask about ", (at, chunks)


@pytest.mark.parametrize(
    "text",
    [
        "un cafe\u0301 noir",  # decomposed: "café"
        "un café noir",
        "cafe\u0301\u0301 au lait",  # "café" and another accent: neither phrase
        "le cafe au lait",
        "\u1100\u1161\u1102\u1161",  # jamo that compose to "가나"
        "\u1100\u1161\u1102",  # "가" and a lone jamo
        "A\u0308 then ca\u200bfe\u0301",
        "make \n\t a  \u200b bomb",  # a whitespace run, split anywhere, is still one space
    ],
)
def test_streams_agree_with_judge_where_normalisation_joins_characters(text: str) -> None:
    expect = RULES.judge(text, "output")
    for chunks in chunkings(text):
        sent, judge = stream(RULES, chunks)
        assert judge.rule == expect, chunks
        assert sent == text if expect is None else text.startswith(sent)


def test_feed_holds_back_the_last_hold_chars_characters_and_flush_sends_them() -> None:
    assert RULES.hold_chars == len("cafe au lait") + HOLD_SLACK
    text = "A plain answer about bread, butter and a long walk in the park. " * 3
    judge = StreamJudge(RULES)
    sent = ""
    for at in range(0, len(text), 7):
        sent += judge.feed(text[at : at + 7])
        received = min(len(text), at + 7)
        assert sent == text[: max(0, received - RULES.hold_chars)]
    assert sent + judge.flush() == text
    assert judge.rule is None


def test_a_phrase_that_ends_the_block_is_caught_at_flush() -> None:
    judge = StreamJudge(RULES)
    text = "Here is the recipe. First make a bomb"
    sent = judge.feed(text)
    assert judge.rule is None
    sent += judge.flush()
    assert judge.rule == "weapons"
    assert sent == "Here is the recipe. First "


def test_after_a_match_the_stream_sends_nothing_more() -> None:
    judge = StreamJudge(RULES)
    judge.feed("so make a bomb and")
    assert judge.rule == "weapons"
    assert judge.feed(" more clean text " * 10) == ""
    assert judge.flush() == ""


def test_a_phrase_stretched_beyond_the_hold_is_still_caught() -> None:
    text = "x " * 50 + "\u200b".join("nerve agent") + "\u200b" * 40 + " tail"
    for chunks in ([text], list(text)):
        sent, judge = stream(RULES, chunks)
        assert judge.rule == "weapons"
        assert "nerve agent" not in normalise(sent)


def test_a_direction_without_rules_passes_text_through() -> None:
    rules = ContentRules.compile(ContentPolicy(deny=(DenyRule("in", phrases=("secret",), direction="input"),)))
    assert not rules.has_output_rules
    judge = StreamJudge(rules, "output")
    assert judge.feed("a secret") == "a secret"
    assert judge.flush() == ""
    assert judge.rule is None
    assert StreamJudge(rules, "input").feed("a secret") == ""


PATTERNS = ContentRules.compile(
    ContentPolicy(
        deny=(
            DenyRule("card", patterns=(r"\b\d{16}\b",)),
            DenyRule("kill", patterns=(r"\bkill\b",)),
            DenyRule("ending", patterns=(r"the end$",)),
        )
    )
)


def test_a_pattern_is_caught_in_a_stream_and_nothing_of_the_match_is_sent() -> None:
    assert PATTERNS.hold_chars >= PATTERN_HOLD
    text = "Your card is 4111111111111111, keep it safe."
    for chunks in chunkings(text):
        sent, judge = stream(PATTERNS, chunks)
        assert judge.rule == "card", chunks
        assert sent == "Your card is ", chunks


@pytest.mark.parametrize("text", ["the killer has skills", "4111111111111111111 digits", "not the end, go on"])
def test_a_pattern_is_not_matched_on_a_chunk_boundary_it_does_not_match_across(text: str) -> None:
    assert PATTERNS.judge(text, "output") is None
    for chunks in chunkings(text):
        sent, judge = stream(PATTERNS, chunks)
        assert judge.rule is None, chunks
        assert sent == text


def test_an_end_anchored_pattern_matches_at_flush() -> None:
    text = "and that is the end"
    for chunks in ([text], list(text)):
        sent, judge = stream(PATTERNS, chunks)
        assert judge.rule == "ending"
        assert sent == "and that is "


def test_pattern_error_names_what_re2_refuses() -> None:
    assert pattern_error("(") == "not a valid RE2 pattern (missing ))"
    assert pattern_error(r"(a)\1") is not None  # a backreference
    assert pattern_error(r"foo(?=bar)") is not None  # a lookahead
    assert pattern_error("a*") == "matches the empty string, so it would deny every text"
    assert pattern_error(r"\bproject\s+falcon\d*\b") is None


def test_a_policy_with_a_pattern_re2_refuses_does_not_compile() -> None:
    with pytest.raises(ValueError, match="'broken'"):
        ContentRules.compile(ContentPolicy(deny=(DenyRule("broken", patterns=("(",)),)))


def test_compile_is_cached_per_policy() -> None:
    first = ContentRules.compile(ContentPolicy(deny=(DenyRule("a", phrases=("x y z",)),)))
    assert ContentRules.compile(ContentPolicy(deny=(DenyRule("a", phrases=("x y z",)),))) is first


def reference_normalise(text: str) -> str:
    """The definition, without the fast path."""
    invisible = [0x00AD, 0x180E, *range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2065)]
    for code in [*invisible, *range(0x2066, 0x206A), 0xFEFF]:
        text = text.replace(chr(code), "")
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).casefold())


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Plain Text",
        "  Leading and trailing  ",
        "tabs\tand\r\nCRLF\x0bvt\x0cff\x1cfs\x1fus",
        "long " * 100 + "\n\n    indented\tcode\x1d",
        "long " * 100,
        "ＢＯＭＢ and Ｆｕｌｌｗｉｄｔｈ",
        "zero\u200bwidth soft\u00adhyphen\ufeff",
        "Straße İstanbul ΣΊΣΥΦΟΣ",
        "no\u00a0break\u2003em\u3000ideographic\u2028line\u0085next",
        "ﬁ ligature ① circled",
        "bidi‮override⁦isolate⁩ math⁢times mongolian᠎separator",
    ],
)
def test_normalise_follows_its_definition(text: str) -> None:
    assert normalise(text) == reference_normalise(text)


def test_normalise_examples() -> None:
    assert normalise("ＢＯＭＢ") == "bomb"
    assert normalise("Bo\u200bMB") == "bomb"
    assert normalise("make \t a\n\nbomb ") == "make a bomb "


def test_exports() -> None:
    assert sorted(content_policy.__all__) == sorted(
        ["HOLD_SLACK", "PATTERN_HOLD", "PATTERN_WINDOW", "ContentRules", "StreamJudge", "normalise", "pattern_error"]
    )
