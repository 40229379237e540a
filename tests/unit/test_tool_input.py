"""The checker of "this text is a prefix of one JSON object", and tool input from worker arguments.

The checker is fed the arguments of a tool call in pieces. It must agree with orjson (what Parley
parses buffered answers and clients' next requests with) on what is a complete object, accept
every prefix of one and nothing else, and give the shortest suffix that completes a valid prefix.
"""

from __future__ import annotations

import json
from typing import Any

import jiter
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from parley.core.anthropic_types import MAX_JSON_DEPTH
from parley.core.errors import ApiError
from parley.core.tool_input import ObjectPrefix, arguments_to_input


def checked(*pieces: str) -> ObjectPrefix:
    prefix = ObjectPrefix()
    for piece in pieces:
        prefix.feed(piece)
    return prefix


def completed(text: str) -> Any:
    prefix = checked(text)
    suffix = prefix.completion()
    assert suffix is not None, f"{text!r} has no completion"
    return orjson.loads(text + suffix)


# -- what is a prefix of an object -----------------------------------------------------------------

VALID_PREFIXES = [
    "",
    "  \n\t\r",
    "{",
    ' {"a"',
    '{"a": "x\\',
    '{"a": "x\\u00',
    '{"a": "\\ud83d',
    '{"a": "\\ud83d\\',
    '{"a": "\\ud83d\\u',
    '{"a": "\\ud83d\\ude',
    '{"a": "\\uD83D\\uDE00"',
    '{"a": -',
    '{"a": 0',
    '{"a": 0.',
    '{"a": 10e',
    '{"a": 10E+',
    '{"a": 1.5e-3',
    '{"a": tr',
    '{"a": [1, 2,',
    '{"a": {"b": []}, "c": fals',
    '{"a": null}',
    '{"a": null}  \n',
    '{"a": "\\"\\\\\\/\\b\\f\\n\\r\\t"',
    '{"": ""',
]

INVALID_PREFIXES = [
    "x",
    "[",  # not an object
    '"a"',
    "1",
    "null",
    "\ufeff{",  # a byte order mark is not whitespace
    "{a",
    "{'a'",
    '{"a" "b"',
    '{"a":}',
    '{"a":1,}',
    '{"a":[1,]}',
    "{,",
    '{"a": 01',
    '{"a": -a',
    '{"a": 1.e',
    '{"a": .5',
    '{"a": 1e+}',
    '{"a": 780E}',  # seen from a real vLLM
    '{"a": +1',
    '{"a": tru}',
    '{"a": True',
    '{"a": NaN',
    '{"a": Infinity',
    '{"a": "\\a',
    '{"a": "\\x41',
    '{"a": "\\u12g',
    '{"a": "\\udc',  # a low surrogate with no high one before it
    '{"a": "\\ud83dx',  # a high surrogate with no low one after it
    '{"a": "\\ud83d\\n',
    '{"a": "\\ud83d\\u00',
    '{"a": "\\ud83d\\ud83d',
    '{"a": "line\nbreak"',  # control characters must be escaped
    '{"a": "tab\t"',
    '{"a": 1}}',
    '{"a": 1} x',
    '{"a": 1}"\\")"',  # seen from a real vLLM: a string after the object
    '{"a": 1}{',
    '{"a": 1e400}',  # infinity as a double: orjson refuses it
    '{"a": ' + "9" * 400 + "}",
    '{"a": [}',
    '{"a": {]',
]


@pytest.mark.parametrize("text", VALID_PREFIXES, ids=repr)
def test_a_prefix_of_an_object_is_accepted(text):
    prefix = checked(text)
    assert not prefix.broken
    assert prefix.completion() is not None


@pytest.mark.parametrize("text", INVALID_PREFIXES, ids=repr)
def test_anything_else_is_refused(text):
    assert checked(text).broken


def test_refusal_is_final_and_names_no_completion():
    prefix = checked('{"a": 1}x')
    assert prefix.broken and prefix.feed("") is False and prefix.feed("}") is False
    assert prefix.completion() is None and not prefix.complete


def test_feed_answers_whether_the_text_is_still_a_prefix():
    prefix = ObjectPrefix()
    assert prefix.feed('{"a": 78') is True
    assert prefix.feed("0E") is True
    assert prefix.feed("}") is False


def test_empty_and_complete():
    prefix = ObjectPrefix()
    assert prefix.empty and not prefix.complete
    prefix.feed("  ")
    assert prefix.empty
    prefix.feed("{")
    assert not prefix.empty and not prefix.complete
    prefix.feed("}")
    assert prefix.complete
    prefix.feed("\n ")
    assert prefix.complete


def test_depth_is_limited_as_parleys_request_validation_limits_it():
    deepest = '{"a":' * MAX_JSON_DEPTH + "1" + "}" * MAX_JSON_DEPTH
    assert checked(deepest).complete
    too_deep = checked('{"a":' * MAX_JSON_DEPTH + "[")
    assert too_deep.broken and too_deep.too_deep
    assert not checked("{]").too_deep


# -- the shortest completion -----------------------------------------------------------------------

COMPLETIONS = [
    ("", "{}", {}),
    ("{", "}", {}),
    ('{"path": "/tmp/a", "content": "hel', '"}', {"path": "/tmp/a", "content": "hel"}),
    ('{"a": "x\\', '\\"}', {"a": "x\\"}),
    ('{"a": "x\\u', '0000"}', {"a": "x\x00"}),
    ('{"a": "x\\u00e', '0"}', {"a": "x\u00e0"}),
    ('{"a": "x\\ud8', '00\\udc00"}', {"a": "x\U00010000"}),
    ('{"a": "\\ud83d', '\\udc00"}', {"a": "\U0001f400"}),
    ('{"a": "\\ud83d\\', 'udc00"}', {"a": "\U0001f400"}),
    ('{"a": "\\ud83d\\u', 'dc00"}', {"a": "\U0001f400"}),
    ('{"a": "\\ud83d\\ude', '00"}', {"a": "\U0001f600"}),
    ('{"a": tr', "ue}", {"a": True}),
    ('{"a": f', "alse}", {"a": False}),
    ('{"a": nu', "ll}", {"a": None}),
    ('{"a": -', "0}", {"a": 0}),
    ('{"a": 1.', "0}", {"a": 1.0}),
    ('{"a": 1e', "0}", {"a": 1.0}),
    ('{"a": 2E+', "0}", {"a": 2.0}),
    ('{"a": 12', "}", {"a": 12}),
    ('{"a', '":null}', {"a": None}),
    ('{"a"', ":null}", {"a": None}),
    ('{"a":', "null}", {"a": None}),
    ('{"a": 1,', '"":null}', {"a": 1, "": None}),
    ('{"a": [', "]}", {"a": []}),
    ('{"a": [1,', "null]}", {"a": [1, None]}),
    ('{"a": [{"b": [true', "]}]}", {"a": [{"b": [True]}]}),
    ('{"a": 1} ', "", {"a": 1}),
]


@pytest.mark.parametrize("text,suffix,value", COMPLETIONS, ids=[case[0] or "empty" for case in COMPLETIONS])
def test_a_valid_prefix_is_completed_by_the_shortest_suffix(text, suffix, value):
    assert checked(text).completion() == suffix
    assert orjson.loads(text + suffix) == value


def test_a_number_that_would_be_infinite_has_no_completion():
    assert checked('{"a": 1e999').completion() is None
    assert checked('{"a": 1e-999').completion() == "}"


# -- pieces, and agreement with the parsers ---------------------------------------------------------

SAMPLE = '{"a": "x\\ud83d\\ude00y\\n", "b": [1.5e+3, -0, true, null, {"c": "\\u00e9"}], "d": {}}  '


def test_pieces_cut_anywhere_give_the_same_answers():
    for cut in range(len(SAMPLE) + 1):
        whole = checked(SAMPLE[:cut])
        for split in range(cut + 1):
            pieces = checked(SAMPLE[:split], SAMPLE[split:cut])
            assert (pieces.broken, pieces.complete, pieces.completion()) == (
                whole.broken,
                whole.complete,
                whole.completion(),
            ), (SAMPLE[:split], SAMPLE[split:cut])


def test_one_character_at_a_time():
    prefix = ObjectPrefix()
    for char in SAMPLE:
        assert prefix.feed(char)
    assert prefix.complete


def test_a_12_mib_string_value_in_64_kib_pieces():
    text = '{"content": "' + "x" * (12 * 1024 * 1024) + '"}'
    prefix = ObjectPrefix()
    for start in range(0, len(text), 64 * 1024):
        assert prefix.feed(text[start : start + 64 * 1024])
    assert prefix.complete


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    # Text with surrogate pairs (astral characters), escapes and control characters.
    | st.text(st.characters(codec="utf-8"), max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=4), json_values, max_size=5)


def serialized(value: dict, style: int) -> str:
    if style == 0:
        return orjson.dumps(value).decode()
    if style == 1:
        return json.dumps(value)  # \uXXXX escapes, surrogate pairs for astral characters
    return json.dumps(value, indent=1, ensure_ascii=False) + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_objects, st.integers(0, 2))
def test_every_prefix_of_an_object_is_accepted_and_completes_to_an_object(value, style):
    text = serialized(value, style)
    assert checked(text).complete
    for cut in range(len(text)):
        prefix = checked(text[:cut])
        assert not prefix.broken, text[:cut]
        assert isinstance(completed(text[:cut]), dict)
        if text[:cut].strip():
            # The official SDK parses the concatenated fragments after every input_json_delta.
            jiter.from_json(text[:cut].encode(), partial_mode=True)


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from('{}[]":,.-+eE01 9tfrunlsa\\u\nd8c'), max_size=24))
@example('{"a":1e400}')
@example('{"a":"\\ud800"}')
def test_the_checker_agrees_with_orjson(text):
    prefix = checked(text)
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    assert prefix.complete == isinstance(parsed, dict), text
    if not prefix.broken:
        assert isinstance(completed(text), dict), text


# -- tool input from a call's arguments -------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments,expected",
    [
        ("", {}),
        ("  \n", {}),
        (None, {}),
        ({"a": 1}, {"a": 1}),
        ('{"a": [1, {"b": null}]}', {"a": [1, {"b": None}]}),
        ('{"a": "cut', {"a": "cut"}),
        ('{"a": 1}\n', {"a": 1}),
    ],
    ids=repr,
)
def test_arguments_become_an_object(arguments, expected):
    assert arguments_to_input(arguments, "f") == expected


@pytest.mark.parametrize(
    "arguments", ["[1, 2]", '"\\")"', "780", "780E", "true", '{"a": 1} {"b": 2}', "{'a': 1}", 780, [], True, 1.5]
)
def test_arguments_that_are_no_object_are_an_error(arguments):
    with pytest.raises(ApiError) as raised:
        arguments_to_input(arguments, "Bash")
    assert raised.value.message == "The worker's tool call `Bash` has arguments that are not a JSON object."


def test_arguments_nested_too_deep_are_an_error():
    with pytest.raises(ApiError) as raised:
        arguments_to_input('{"a":' * (MAX_JSON_DEPTH + 1), "f")
    assert (
        raised.value.message
        == f"The worker's tool call `f` has arguments nested more than {MAX_JSON_DEPTH} levels deep."
    )


def test_an_object_that_cannot_be_sent_on_is_an_error():
    # A Python client of these functions may hand over what orjson cannot write.
    with pytest.raises(ApiError):
        arguments_to_input({"a": 2**70}, "f")
    nested: dict = {}
    for _ in range(MAX_JSON_DEPTH + 1):
        nested = {"a": nested}
    with pytest.raises(ApiError):
        arguments_to_input(nested, "f")
