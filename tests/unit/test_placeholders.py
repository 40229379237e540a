"""Placeholders: stable per key and value, never a store of SSNs or secrets, and restored in an
answer however it is cut into chunks (JSON-escaped inside tool arguments)."""

from __future__ import annotations

import orjson

import parley.core.placeholders as placeholders_module
from parley.core.pii import PiiDetector, Span
from parley.core.placeholders import LABELS, PLACEHOLDER, StreamRestorer, mask, placeholder, restore
from parley.core.policy import NEVER_RESTORED, PII_ENTITIES

KEY = b"account-placeholder-key"
TEXT = "Mail jane@example.com or call (415) 555-2671; SSN 219-09-9999; key AKIAIOSFODNN7EXAMPLE."


def masked(text: str = TEXT, key: bytes = KEY) -> tuple[str, dict[str, str]]:
    restore_map: dict[str, str] = {}
    return mask(text, PiiDetector().find(text), key, restore_map), restore_map


def test_a_placeholder_is_the_label_and_10_hex_digits_of_the_keyed_hash() -> None:
    # HMAC-SHA256(KEY, b"email\0jane@example.com"): pinned, so placeholders stay the same across releases
    assert placeholder(KEY, "email", "jane@example.com") == "<EMAIL_3ea27e348b>"
    for entity in PII_ENTITIES:
        token = placeholder(KEY, entity, "value")
        assert PLACEHOLDER.fullmatch(token) and token.startswith(f"<{LABELS[entity]}_")


def test_the_same_key_and_value_give_the_same_placeholder_on_every_request() -> None:
    first, first_map = masked()
    second, second_map = masked()
    assert first == second and first_map == second_map


def test_another_key_entity_or_value_gives_another_placeholder() -> None:
    token = placeholder(KEY, "email", "jane@example.com")
    assert placeholder(b"another account", "email", "jane@example.com") != token
    assert placeholder(KEY, "email", "jane@example.org") != token
    assert placeholder(KEY, "secret", "jane@example.com")[len("<SECRET_") :] != token[len("<EMAIL_") :]
    assert masked(key=b"another account")[0] != masked()[0]


def test_mask_replaces_each_value_by_its_placeholder_and_keeps_the_rest() -> None:
    text, _ = masked()
    assert "jane@example.com" not in text and "555-2671" not in text and "9999" not in text and "AKIA" not in text
    assert PLACEHOLDER.sub("<>", text) == "Mail <> or call <>; SSN <>; key <>."


def test_ssns_and_secrets_are_never_in_the_restore_map() -> None:
    text, restore_map = masked()
    never = {LABELS[entity] for entity in NEVER_RESTORED}
    assert [token[1 : token.rindex("_")] for token in PLACEHOLDER.findall(text)] == ["EMAIL", "PHONE", "SSN", "SECRET"]
    assert restore_map == {
        placeholder(KEY, "email", "jane@example.com"): "jane@example.com",
        placeholder(KEY, "phone", "(415) 555-2671"): "(415) 555-2671",
    }
    assert not any(token[1 : token.rindex("_")] in never for token in restore_map)


def test_mask_without_a_restore_map_masks_the_same() -> None:
    text = "ip 203.0.113.7"
    assert mask(text, PiiDetector().find(text), KEY) == masked(text)[0] == f"ip {placeholder(KEY, 'ip', '203.0.113.7')}"


def test_restore_gives_back_the_text_but_its_ssns_and_secrets() -> None:
    text, restore_map = masked()
    restored = restore(text, restore_map)
    assert restored.startswith("Mail jane@example.com or call (415) 555-2671; SSN <SSN_")
    assert PLACEHOLDER.findall(restored) == PLACEHOLDER.findall(text)[2:]


def test_restore_leaves_unknown_placeholders_and_other_markup_alone() -> None:
    text = "a <EMAIL_0123456789> b <NOT_0123456789> <EMAIL_0123> <br> 1 < 2"
    assert restore(text, {"<EMAIL_9999999999>": "x@example.com"}) == text
    assert restore(text, {}) == text


def test_a_value_restored_into_a_json_string_keeps_the_json_valid() -> None:
    value = 'Jane "JD" Doe\\Admin\n<jane@example.com>'
    token = placeholder(KEY, "email", value)
    arguments = orjson.dumps({"to": f"write to {token} today"}).decode()
    restored = restore(arguments, {token: value}, json_escape=True)
    assert orjson.loads(restored) == {"to": f"write to {value} today"}


def stream(chunks: list[str], restore_map: dict[str, str], json_escape: bool = False) -> list[str]:
    restorer = StreamRestorer(restore_map, json_escape)
    return [restorer.feed(chunk) for chunk in chunks] + [restorer.flush()]


def test_placeholders_split_at_any_two_points_are_restored() -> None:
    text, restore_map = masked("<jane@example.com>, (415) 555-2671")
    assert text.count("<") == 3
    expected = restore(text, restore_map)
    for first in range(len(text) + 1):
        for second in range(first, len(text) + 1):
            chunks = [text[:first], text[first:second], text[second:]]
            assert "".join(stream(chunks, restore_map)) == expected, (first, second)


def test_placeholders_fed_a_character_at_a_time_are_restored() -> None:
    text, restore_map = masked()
    assert "".join(stream(list(text), restore_map)) == restore(text, restore_map)
    arguments = orjson.dumps({"note": text}).decode()
    restored = "".join(stream(list(arguments), restore_map, json_escape=True))
    assert orjson.loads(restored) == {"note": restore(text, restore_map)}


def test_placeholders_a_worker_wrote_as_json_escapes_are_restored_at_every_split_point() -> None:
    """Go's JSON encoder (Ollama) writes the brackets inside tool arguments as \\u003c and \\u003e."""
    text, restore_map = masked("<jane@example.com>, (415) 555-2671")
    arguments = orjson.dumps({"note": text}).decode().replace("<", "\\u003c").replace(">", "\\u003E")
    expected = {"note": restore(text, restore_map)}
    assert orjson.loads(restore(arguments, restore_map, json_escape=True)) == expected
    for first in range(len(arguments) + 1):
        for size in (1, 3, 7):
            chunks = [arguments[:first]] + [arguments[at : at + size] for at in range(first, len(arguments), size)]
            assert orjson.loads("".join(stream(chunks, restore_map, json_escape=True))) == expected, (first, size)


def test_a_chunk_is_held_back_only_from_where_a_placeholder_may_start() -> None:
    token = placeholder(KEY, "email", "jane@example.com")
    restorer = StreamRestorer({token: "jane@example.com"})
    assert restorer.feed("plain text, no markup") == "plain text, no markup"
    assert restorer.feed("if a < b then <b>bold</b>") == "if a < b then <b>bold</b>"
    assert restorer.feed("write to <EMA") == "write to "
    assert restorer.feed(token[4:9]) == ""
    assert restorer.feed(token[9:] + " now <") == "jane@example.com now "
    assert restorer.feed("EMAILS are <") == "<EMAILS are "
    assert restorer.flush() == "<"
    assert restorer.flush() == ""


def test_flush_gives_what_was_held_as_it_is() -> None:
    restorer = StreamRestorer({"<EMAIL_0123456789>": "jane@example.com"})
    assert restorer.feed("cut at <EMAIL_01234") == "cut at "
    assert restorer.flush() == "<EMAIL_01234"


def test_a_span_masked_by_hand_is_restored_from_a_stream_cut_inside_its_placeholder() -> None:
    text = "Reply to jane@example.com"
    restore_map: dict[str, str] = {}
    answer = mask(text, [Span(9, 25, "email")], KEY, restore_map)
    assert "".join(stream([answer[:15], answer[15:]], restore_map)) == text


def test_the_module_exports() -> None:
    assert set(placeholders_module.__all__) == {
        "LABELS",
        "PLACEHOLDER",
        "StreamRestorer",
        "mask",
        "placeholder",
        "restore",
    }
