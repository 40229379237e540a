"""Hostile Messages requests for property-based tests, and the one property every answer must have.

Strategies (hypothesis): structured requests whose every field may have the wrong type or value,
mutations of the real request vectors in tests/vectors/requests/ (a field deleted, replaced,
wrapped, nested deeply or blown up), byte-level damage to a serialized body (truncation, invalid
UTF-8, stray bytes), and hostile header sets.

The property (`check_answer`): a 4xx Anthropic error envelope whose type matches its status, or a
valid answer (a message, a well-formed event stream, a token count); never a 5xx, never a key.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from hypothesis import strategies as st

from tests.anthropic_stream import assert_well_formed
from tests.fuzz_common import FUZZ_SCALE, FUZZ_SETTINGS, fuzz, json_paths

from .helpers import ALIAS, MODEL, parse_sse

__all__ = [
    "CASES",
    "FUZZ_SETTINGS",
    "VALID_REQUESTS",
    "check_answer",
    "count_tokens_requests",
    "FUZZ_SCALE",
    "damage",
    "dumps",
    "fuzz",
    "header_sets",
    "messages_requests",
    "mutate",
    "random_json",
    "seeds",
    "vector_indexes",
]

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "requests"


class CaseCounter:
    """Requests sent by the fuzz tests, per test; printed in the session summary."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_test: Counter[str] = Counter()

    def add(self, test: str) -> None:
        with self._lock:
            self.by_test[test] += 1

    @property
    def total(self) -> int:
        return sum(self.by_test.values())


CASES = CaseCounter()


def _valid_vectors() -> list[tuple[str, dict[str, Any]]]:
    vectors = []
    for path in sorted(VECTORS.glob("*.json")):
        vector = json.loads(path.read_text())
        if "error" not in vector and isinstance(vector["request"], dict):
            vectors.append((path.stem, vector["request"]))
    return vectors


VALID_REQUESTS = _valid_vectors()

# -- values of every JSON type, hostile ones included ----------------------------------------------

HOSTILE_STRINGS = [
    "",
    " ",
    "\x00",
    "\u0000\u001f\u007f",
    "\ufeff",
    "\u202e",
    "\U0001f600" * 3,
    "e\u0301",
    "💥" * 50,
    "null",
    "[]",
    "{}",
    "x-anthropic-billing-header: cc_version=1",
    "claude-*",
    "*",
    "../../etc/passwd",
    "%s%n%x",
    "<script>alert(1)</script>",
    "data:image/png;base64,AAAA",
    "file:///etc/passwd",
    "http://169.254.169.254/latest/meta-data/",
    "text",
    "tool_use",
    "image",
    "document",
    "base64",
    "url",
    "file",
    "content",
    "user",
    "assistant",
    "system",
    "enabled",
    "adaptive",
    "auto",
    "any",
    "none",
    "tool",
    "custom",
    "json_schema",
]
BIG_NUMBERS = [
    0,
    -1,
    1,
    1023,
    1024,
    2**31 - 1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63),
    -(2**63) - 1,
    10**30,
    1e308,
    -1e308,
    5e-324,
    0.5,
    -0.0,
    1.0000001,
]

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(BIG_NUMBERS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(HOSTILE_STRINGS),
)
json_values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=12) | st.sampled_from(HOSTILE_STRINGS), children, max_size=4)
    ),
    max_leaves=5,
)


def sometimes_wrong(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value, sometimes any JSON value at all."""
    return st.one_of(valid, valid, valid, json_values)


# -- structured requests ---------------------------------------------------------------------------

texts = st.one_of(st.text(max_size=60), st.sampled_from(HOSTILE_STRINGS))
text_block = st.fixed_dictionaries(
    {"type": st.just("text"), "text": sometimes_wrong(texts)},
    optional={"cache_control": sometimes_wrong(st.just({"type": "ephemeral"})), "citations": json_values},
)
image_source = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("base64"),
            "media_type": st.sampled_from(["image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", ""]),
            "data": sometimes_wrong(st.sampled_from(["iVBORw0KGgo=", "", "not base64!"])),
        }
    ),
    st.fixed_dictionaries({"type": st.just("url"), "url": sometimes_wrong(texts)}),
    st.fixed_dictionaries({"type": st.just("file"), "file_id": sometimes_wrong(texts)}),
    json_values,
)
image_block = st.fixed_dictionaries({"type": st.just("image"), "source": image_source})
document_source = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("base64"),
            "media_type": sometimes_wrong(st.just("application/pdf")),
            "data": sometimes_wrong(st.sampled_from(["JVBERi0xLjQK", "", "%%%", "AAAA"])),
        }
    ),
    st.fixed_dictionaries(
        {"type": st.just("text"), "media_type": sometimes_wrong(st.just("text/plain")), "data": sometimes_wrong(texts)}
    ),
    st.fixed_dictionaries(
        {"type": st.just("content"), "content": sometimes_wrong(texts | st.lists(text_block | image_block, max_size=2))}
    ),
    st.fixed_dictionaries({"type": st.just("url"), "url": texts}),
    json_values,
)
document_block = st.fixed_dictionaries(
    {"type": st.just("document"), "source": document_source},
    optional={"title": sometimes_wrong(texts), "context": sometimes_wrong(texts)},
)
tool_use_block = st.fixed_dictionaries(
    {
        "type": st.just("tool_use"),
        "id": sometimes_wrong(st.sampled_from(["toolu_01A", "call_1", ""])),
        "name": sometimes_wrong(st.sampled_from(["get_weather", "Write", ""])),
        "input": sometimes_wrong(st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
    }
)
tool_result_block = st.fixed_dictionaries(
    {"type": st.just("tool_result"), "tool_use_id": sometimes_wrong(st.sampled_from(["toolu_01A", ""]))},
    optional={
        "content": sometimes_wrong(texts | st.lists(text_block | image_block | document_block, max_size=3)),
        "is_error": sometimes_wrong(st.booleans()),
    },
)
thinking_block = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("thinking"), "thinking": sometimes_wrong(texts)},
        optional={"signature": sometimes_wrong(texts)},
    ),
    st.fixed_dictionaries({"type": st.just("redacted_thinking"), "data": sometimes_wrong(texts)}),
)
unknown_block = st.fixed_dictionaries(
    {"type": st.text(max_size=20) | st.sampled_from(["server_tool_use", "web_search_tool_result", "hologram"])},
    optional={"text": json_values, "content": json_values},
)
blocks = st.one_of(
    text_block,
    text_block,
    image_block,
    document_block,
    tool_use_block,
    tool_result_block,
    thinking_block,
    unknown_block,
    json_values,
)
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": sometimes_wrong(st.sampled_from(["user", "assistant", "system", "robot"])),
            "content": sometimes_wrong(texts | st.lists(blocks, max_size=4)),
        }
    ),
    max_size=4,
)
tool_schema = st.one_of(
    st.just({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    json_values,
)
tools = st.lists(
    st.fixed_dictionaries(
        {
            "name": sometimes_wrong(st.sampled_from(["get_weather", "Write", "a" * 129, "bad name!", ""])),
            "input_schema": tool_schema,
        },
        optional={
            "type": st.sampled_from(["custom", "web_search_20250305", "bash_20250124", "text_editor", ""]),
            "description": sometimes_wrong(texts),
            "cache_control": json_values,
        },
    ),
    max_size=3,
)
tool_choice = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["auto", "any", "none", "tool", "function", ""])},
        optional={
            "name": sometimes_wrong(st.sampled_from(["get_weather", "missing"])),
            "disable_parallel_tool_use": sometimes_wrong(st.booleans()),
        },
    ),
    json_values,
)
thinking = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["enabled", "disabled", "adaptive", "on"])},
        optional={"budget_tokens": sometimes_wrong(st.sampled_from(BIG_NUMBERS) | st.integers(0, 5000))},
    ),
    json_values,
)
output_format = sometimes_wrong(
    st.fixed_dictionaries({"type": st.just("json_schema"), "schema": sometimes_wrong(st.just({"type": "object"}))})
)
models = sometimes_wrong(st.sampled_from([MODEL, ALIAS, "claude-opus-4-8", "no-such-model", "", "CLAUDE-*"]))
system = sometimes_wrong(texts | st.lists(text_block | json_values, max_size=3))
max_tokens = sometimes_wrong(st.integers(-2, 100_000) | st.sampled_from(BIG_NUMBERS))
unit_interval = sometimes_wrong(st.floats(-0.5, 1.5) | st.sampled_from(BIG_NUMBERS))

_COMMON_OPTIONAL = {
    "system": system,
    "tools": sometimes_wrong(tools),
    "tool_choice": tool_choice,
    "thinking": thinking,
    "cache_control": json_values,
    "context_management": json_values,
    "mcp_servers": json_values,
}
_MESSAGES_OPTIONAL = {
    **_COMMON_OPTIONAL,
    "stream": sometimes_wrong(st.booleans()),
    "temperature": unit_interval,
    "top_p": unit_interval,
    "top_k": sometimes_wrong(st.integers(-2, 1000) | st.sampled_from(BIG_NUMBERS)),
    "stop_sequences": sometimes_wrong(st.lists(texts, max_size=3)),
    "metadata": sometimes_wrong(st.fixed_dictionaries({}, optional={"user_id": sometimes_wrong(texts)})),
    "output_config": sometimes_wrong(
        st.fixed_dictionaries({}, optional={"effort": sometimes_wrong(texts), "format": output_format})
    ),
    "output_format": output_format,
    "service_tier": json_values,
}


@st.composite
def _drop_keys(draw: st.DrawFn, strategy: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    body = draw(strategy)
    if body and draw(st.integers(0, 9)) == 0:  # one in ten misses a field
        for key in draw(st.sets(st.sampled_from(sorted(body)), min_size=1)):
            body.pop(key)
    return body


messages_requests = _drop_keys(
    st.fixed_dictionaries(
        {"model": models, "max_tokens": max_tokens, "messages": sometimes_wrong(messages)},
        optional=_MESSAGES_OPTIONAL,
    )
)
count_tokens_requests = _drop_keys(
    st.fixed_dictionaries({"model": models, "messages": sometimes_wrong(messages)}, optional=_COMMON_OPTIONAL)
)

# -- mutations of the real request vectors (fast: a seeded Random, drawn by hypothesis) -----------

FIELD_NAMES = ["type", "text", "content", "role", "model", "input", "source", "data", "name", "id", "messages"]
BAD_BYTES = [
    b"\xff",
    b"\xfe\xff",
    b"\xc3\x28",  # an invalid two-byte sequence
    b"\xed\xa0\x80",  # a UTF-8 encoded surrogate
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    b"\xc0\xaf",  # an overlong slash
    b"\x00",
    b"\xef\xbb\xbf",  # a BOM
    b'\\ud800"',
    b"\\u0000",
    b"NaN",
    b"Infinity",
    b"1e999",
    b"-",
    b",",
    b"}",
    b"]]]]",
]
_DEEP_MARK = "\u2063deep\u2063"
_CHAR_RANGES = [(0x20, 0x7E), (0, 0x1F), (0x80, 0x2FF), (0x4E00, 0x4E80), (0x1F600, 0x1F64F), (0xFFF0, 0xFFFF)]


def random_text(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(HOSTILE_STRINGS)
    low, high = rng.choice(_CHAR_RANGES)
    return "".join(chr(rng.randint(low, high)) for _ in range(rng.randint(0, 12)))


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON value, hostile ones favoured (as hypothesis's json_values, at a fraction of the cost)."""
    roll = rng.random()
    if depth >= 3 or roll < 0.65:
        return rng.choice(
            [
                None,
                rng.random() < 0.5,
                rng.choice(BIG_NUMBERS),
                rng.randint(-(2**66), 2**66),
                rng.uniform(-1e6, 1e6),
                random_text(rng),
                random_text(rng),
            ]
        )
    if roll < 0.8:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice([*FIELD_NAMES, random_text(rng)]): random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _deep(depth: int, kind: str) -> str:
    """JSON text nested `depth` levels deep (built as text: no recursion here)."""
    if kind == "list":
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def mutate(rng: random.Random, original: dict[str, Any]) -> bytes:
    """A request with one to three of its values deleted, replaced, wrapped, nested deeply, blown up
    or retyped, then (one time in three) damaged as bytes."""
    body = json.loads(json.dumps(original))  # a deep copy
    paths = json_paths(body)
    deep = ""
    for _ in range(rng.randint(1, 3)):
        if not paths:
            break
        path = rng.choice(paths)
        parent: Any = body
        try:
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced it
        if not isinstance(parent, (dict, list)):
            continue
        key = path[-1]
        operation = rng.choice(["delete", "replace", "replace", "wrap", "deep", "huge", "type"])
        if operation == "delete":
            del parent[key]
        elif operation == "replace":
            parent[key] = random_json(rng)
        elif operation == "wrap":
            parent[key] = rng.choice([[parent[key]], {"value": parent[key]}, [[parent[key]]]])
        elif operation == "deep" and not deep:
            deep = _deep(rng.choice([rng.randint(1, 300), rng.randint(1, 1200)]), rng.choice(["list", "object"]))
            parent[key] = _DEEP_MARK
        elif operation == "huge":
            size = rng.choice([1000, 65_536, 200_000, 300_000])
            parent[key] = rng.choice(["x", "é", "\U0001f600", "\\", '"']) * size
        elif operation == "type":
            parent[key] = rng.choice(["text", "image", "tool_use", "tool_result", "document", "hologram", None, 7])
    text = json.dumps(body, ensure_ascii=rng.random() < 0.5)
    if deep:
        text = text.replace(json.dumps(_DEEP_MARK), deep, 1)
    data = text.encode()
    return damage(rng, data) if rng.random() < 0.33 else data


def damage(rng: random.Random, data: bytes) -> bytes:
    """Byte-level damage: truncation, invalid UTF-8, stray bytes, a BOM, a duplicate key."""
    position = rng.randint(0, len(data))
    operation = rng.choice(["truncate", "truncate", "insert", "replace", "bom", "duplicate-key"])
    if operation == "truncate":
        return data[:position]
    if operation == "bom":
        return b"\xef\xbb\xbf" + data
    if operation == "duplicate-key" and data.startswith(b"{"):
        return b'{"model": ' + rng.choice([b"7", b"null", b'"x"', b"[]"]) + b", " + data[1:]
    chunk = rng.choice(BAD_BYTES) if rng.random() < 0.7 else rng.randbytes(rng.randint(1, 8))
    if operation == "insert":
        return data[:position] + chunk + data[position:]
    return data[:position] + chunk + data[position + len(chunk) :]


vector_indexes = st.integers(0, len(VALID_REQUESTS) - 1)
seeds = st.randoms(use_true_random=False)


def dumps(body: Any) -> bytes:
    return json.dumps(body).encode()


# -- headers ---------------------------------------------------------------------------------------

_TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_!#$%&'*+.^`|~"
header_values = st.one_of(
    st.binary(max_size=40),
    st.text(st.characters(max_codepoint=255), max_size=40).map(lambda text: text.encode("latin-1")),
    st.sampled_from([b"", b" ", b"\t", b"x" * 9000, "é".encode(), "\u2603".encode(), b"\x00", b"\xff" * 4]),
)


@st.composite
def header_sets(draw: st.DrawFn, key: str) -> dict[bytes, bytes]:
    """Auth, version, beta and content headers, each valid, hostile or missing, plus stray headers."""
    headers: dict[bytes, bytes] = {}
    good = key.encode()
    choice = draw(st.sampled_from(["x-api-key", "bearer", "both", "none", "x-api-key", "bearer"]))
    if choice in ("x-api-key", "both"):
        headers[b"x-api-key"] = draw(
            st.sampled_from([good, b" " + good + b" ", good[:-1], good + b"x", good.upper()]) | header_values
        )
    if choice in ("bearer", "both"):
        headers[b"authorization"] = draw(
            st.sampled_from([b"Bearer " + good, b"bearer " + good, b"Bearer", b"Bearer  ", b"Basic " + good])
            | header_values.map(lambda value: b"Bearer " + value)
            | header_values
        )
    for name, valid in (
        (b"anthropic-version", b"2023-06-01"),
        (b"anthropic-beta", b"interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"),
        (b"content-type", b"application/json"),
        (b"accept", b"application/json"),
        (b"anthropic-dangerous-direct-browser-access", b"true"),
        (b"x-stainless-retry-count", b"0"),
    ):
        presence = draw(st.integers(0, 3))
        if presence == 1:
            headers[name] = valid
        elif presence == 2:
            headers[name] = draw(header_values)
    for _ in range(draw(st.integers(0, 3))):
        headers[draw(st.text(_TOKEN_CHARS, min_size=1, max_size=30)).encode()] = draw(header_values)
    return headers


def presents(headers: dict[bytes, bytes], key: str) -> bool:
    """Whether any auth header carries the key at all (it may still be refused, e.g. 'Basic')."""
    good = key.encode()
    return any(good in value for value in headers.values())


# -- the property ----------------------------------------------------------------------------------

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
}


def check_answer(response: httpx.Response, path: str, key: str, answer: str = "ok") -> None:
    """A 4xx Anthropic error envelope or a valid answer; never a 5xx, never the key."""
    status = response.status_code
    assert status < 500, f"HTTP {status}: {response.text[:2000]}"
    assert key not in response.text, "the API key came back in a response"
    assert response.headers.get("request-id"), "no request-id header"
    if status != 200:
        assert status in ERROR_TYPES, f"unexpected status {status}: {response.text[:500]}"
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert set(body) == {"type", "error", "request_id"}, body
        assert body["type"] == "error"
        assert set(body["error"]) == {"type", "message"}, body
        assert body["error"]["type"] == ERROR_TYPES[status], body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
        assert body["request_id"] == response.headers["request-id"]
        return
    if path.startswith("/v1/messages/count_tokens"):
        body = response.json()
        assert set(body) == {"input_tokens"} and isinstance(body["input_tokens"], int) and body["input_tokens"] >= 1
        return
    if response.headers["content-type"].startswith("text/event-stream"):
        events = [(event.event or "", event.json()) for event in parse_sse(response.content)]
        result = assert_well_formed(events)
        assert result.text == answer, result
        return
    message = response.json()
    assert message["type"] == "message" and message["role"] == "assistant", message
    assert message["id"].startswith("msg_")
    assert message["content"] == [{"type": "text", "text": answer}], message
    assert message["stop_reason"] == "end_turn"
    assert all(isinstance(message["usage"][name], int) for name in ("input_tokens", "output_tokens"))
