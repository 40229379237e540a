"""Hostile worker answers for property-based tests, and the properties Parley's answer to each must have.

Shared by tests/unit/test_worker_fuzz.py (the core translators) and tests/integration/test_worker_fuzz.py
(the running app). Hypothesis draws (and shrinks) an answer's structure; the damage to it comes from a
Random seeded by a drawn integer, which is fast, and the damaged bytes are in a failure's report
(`record`). Settings as tests/integration/fuzzing.py's: derandomized, no example database.

Generation:
- `worker_answers`: structurally valid answers, rendered by the fake worker's renderers per flavour
  (vLLM, SGLang, llama.cpp, Ollama): text, reasoning, tool calls (parallel, interleaved), every usage
  placement, finish reasons including abort, error and unknown ones.
- `mutate_chunks` / `mutate_completion` / `mutate_anthropic_events`: any field of the wrong type or
  deleted, tool arguments that are no JSON, no object or a truncated prefix, hostile usage, error
  chunks, chunks duplicated, dropped or reordered.
- `frame`: the SSE around them: `[DONE]` missing, early or twice, non-JSON data lines, `data:` without
  its space, CRLF or CR line ends, comments and other fields, tiny events; `damage` cuts the bytes or
  puts invalid UTF-8 in them; `pieces` splits them at arbitrary offsets.
- `raw_worker_answers`: what a worker can put on the wire for the app (the fake worker's RawAnswer):
  any status with any content type, error bodies of every kind, hostile headers (a retry-after of
  `5😀` or `1e309`), bodies framed by a lying content-length, chunked or not, closed early.

Properties:
- `check_message`: a strict Anthropic message (every field's type, the blocks' shapes, tool_use input
  an object, tool ids in Anthropic's pattern, usage non-negative ints, a stop_reason Anthropic has).
- `check_events`: a well-formed Anthropic stream (tests/anthropic_stream.py's grammar, with tool input
  that must parse to an object, its fragments concatenated), ending with message_stop or exactly one
  error event of a known type, usage non-negative ints wherever it appears.
- `check_envelope`: an Anthropic error envelope whose type matches its status.

`WORKER_ANSWERS` counts the generated answers per part ("core", "app") and per test; the session's
terminal summary prints it (tests/conftest.py).
"""

from __future__ import annotations

import functools
import gzip
import json
import random
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from parley.core.response import AnswerContext
from tests.anthropic_stream import StreamResult, accumulate, assert_well_formed
from tests.fakeworker.anthropic import render_anthropic_buffered, render_anthropic_stream
from tests.fakeworker.scripts import (
    DONE_EVENT,
    FLAVOURS,
    USAGE_PLACEMENTS,
    Answer,
    RawAnswer,
    ToolCall,
    render_buffered,
    render_stream,
)
from tests.fuzz_common import FUZZ_SCALE, fuzz, json_paths

__all__ = [
    "ERROR_TYPES",
    "FUZZ_SCALE",
    "MODEL_NAME",
    "STOP_REASONS",
    "WORKER_ANSWERS",
    "CONTEXTS",
    "Case",
    "Rendered",
    "accumulate",
    "anthropic_events_of",
    "anthropic_message",
    "anthropic_stream",
    "check_chat_stream",
    "check_envelope",
    "check_events",
    "check_message",
    "check_openai_envelope",
    "check_usage",
    "contexts",
    "damage",
    "frame",
    "fuzz",
    "mutate_anthropic_events",
    "mutate_chunks",
    "mutate_completion",
    "openai_completion",
    "openai_stream",
    "normalized",
    "pieces",
    "raw_worker_answers",
    "record",
    "render_chunks",
    "seeds",
    "stream_request",
    "translate",
    "worker_answers",
]

MODEL_NAME = "claude-fuzz-model"
WORKER_MODEL = "fake-model"

# A Random per example from a drawn seed: the damage is fast to make (a hypothesis-backed Random
# costs a draw per call); the worker answer it makes is in the failure's report (`record`).
seeds = st.integers(0, 2**32 - 1).map(random.Random)


class AnswerCounter:
    """Worker answers generated and checked, per part ("core", "app") and per test."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_test: Counter[tuple[str, str]] = Counter()

    def add(self, part: str, test: str, count: int = 1) -> None:
        with self._lock:
            self.by_test[(part, test)] += count

    def part(self, name: str) -> int:
        return sum(count for (part, _), count in self.by_test.items() if part == name)

    def tests(self, part: str) -> set[str]:
        return {test for (name, test) in self.by_test if name == part}

    @property
    def total(self) -> int:
        return sum(self.by_test.values())

    def summary(self) -> str:
        parts = ", ".join(f"{name} {self.part(name):,}" for name in ("core", "app") if self.part(name))
        return f"worker fuzzer: {self.total:,} generated worker answers ({parts})"


WORKER_ANSWERS = AnswerCounter()
LAST_ANSWER: list[Any] = [None]
"""The worker answer being checked: (what it is, its bytes), for a failure's report."""


def record(kind: str, data: Any) -> None:
    """The worker answer about to be checked: in the report of a failing example (hypothesis' note)."""
    LAST_ANSWER[0] = (kind, data)
    if currently_in_test_context():
        text = repr(data)
        note(f"worker answer ({kind}): {text if len(text) < 4000 else text[:4000] + '...'}")


# -- the properties --------------------------------------------------------------------------------

STOP_REASONS = {"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_USAGE_COUNTS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
# Server-side tool blocks an Anthropic-native worker may relay: only their type is checked.
_SERVER_BLOCKS = {
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "mcp_tool_use",
    "mcp_tool_result",
    "container_upload",
}


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def check_usage(usage: Any, where: str, required: tuple[str, ...] = _USAGE_COUNTS) -> None:
    """Every token figure a non-negative int (the required ones present); nested figures too."""
    assert isinstance(usage, dict), f"{where}: usage is not an object: {usage!r}"
    for name in required:
        assert _is_count(usage.get(name)), f"{where}: usage.{name} is not a non-negative int: {usage!r}"
    for name, value in usage.items():
        if name in _USAGE_COUNTS:
            assert value is None or _is_count(value), f"{where}: usage.{name} = {value!r}"
        elif name == "cache_creation" and value is not None:
            assert isinstance(value, dict), f"{where}: usage.cache_creation = {value!r}"
            for inner, count in value.items():
                assert _is_count(count), f"{where}: usage.cache_creation.{inner} = {count!r}"
        elif name == "service_tier":
            assert value is None or isinstance(value, str), f"{where}: usage.service_tier = {value!r}"


def _check_block(block: Any, where: str, streamed_start: bool = False) -> None:
    assert isinstance(block, dict), f"{where}: a content block that is not an object: {block!r}"
    kind = block.get("type")
    if kind == "text":
        assert isinstance(block.get("text"), str), f"{where}: text is not a string: {block!r}"
        if not streamed_start:
            assert block["text"], f"{where}: an empty text block"
        assert block.get("citations") is None or isinstance(block["citations"], list), f"{where}: {block!r}"
    elif kind == "thinking":
        assert isinstance(block.get("thinking"), str), f"{where}: thinking is not a string: {block!r}"
        assert isinstance(block.get("signature"), str), f"{where}: signature is not a string: {block!r}"
    elif kind == "redacted_thinking":
        assert isinstance(block.get("data"), str), f"{where}: redacted data is not a string: {block!r}"
    elif kind == "tool_use":
        tool_id, name = block.get("id"), block.get("name")
        assert isinstance(tool_id, str) and _TOOL_ID.match(tool_id), f"{where}: tool_use id {tool_id!r}"
        assert isinstance(name, str) and name, f"{where}: tool_use name {name!r}"
        assert isinstance(block.get("input"), dict), f"{where}: tool_use input is not an object: {block!r}"
        if streamed_start:
            assert block["input"] == {}, f"{where}: a streamed tool_use must start with input {{}}: {block!r}"
    else:
        assert isinstance(kind, str) and kind in _SERVER_BLOCKS, f"{where}: a content block of unknown type: {block!r}"


def _check_stop(stop_reason: Any, stop_sequence: Any, where: str) -> None:
    assert isinstance(stop_reason, str) and stop_reason in STOP_REASONS, f"{where}: stop_reason {stop_reason!r}"
    assert stop_sequence is None or isinstance(stop_sequence, str), f"{where}: stop_sequence {stop_sequence!r}"
    assert (stop_reason == "stop_sequence") == isinstance(stop_sequence, str), (
        f"{where}: stop_reason {stop_reason!r} with stop_sequence {stop_sequence!r}"
    )


def check_message(message: Any, model: str | None = MODEL_NAME, where: str = "message", start: bool = False) -> None:
    """A strict Anthropic message (or, `start`, the shell a message_start carries)."""
    assert isinstance(message, dict), f"{where}: not an object: {message!r}"
    orjson.dumps(message)  # the app sends it with orjson: anything it cannot encode is a 500
    assert message.get("type") == "message", f"{where}: type {message.get('type')!r}"
    assert message.get("role") == "assistant", f"{where}: role {message.get('role')!r}"
    assert isinstance(message.get("id"), str) and message["id"].startswith("msg_"), f"{where}: id {message.get('id')!r}"
    assert isinstance(message.get("model"), str), f"{where}: model {message.get('model')!r}"
    if model is not None:
        assert message["model"] == model, f"{where}: model {message['model']!r}, the client asked for {model!r}"
    content = message.get("content")
    assert isinstance(content, list), f"{where}: content is not a list: {content!r}"
    if start:
        assert content == [], f"{where}: message_start content {content!r}"
        assert message.get("stop_reason") is None, f"{where}: message_start stop_reason {message.get('stop_reason')!r}"
    else:
        for position, block in enumerate(content):
            _check_block(block, f"{where}.content[{position}]")
        _check_stop(message.get("stop_reason"), message.get("stop_sequence"), where)
    check_usage(message.get("usage"), f"{where}.usage", ("input_tokens", "output_tokens"))


def _check_error(error: Any, where: str) -> None:
    assert isinstance(error, dict), f"{where}: error is not an object: {error!r}"
    assert isinstance(error.get("type"), str) and error["type"] in ERROR_TYPES.values(), f"{where}: error {error!r}"
    assert isinstance(error.get("message"), str) and error["message"], f"{where}: error message {error!r}"


def check_events(
    events: Any, model: str | None = MODEL_NAME, snapshot: bool = False
) -> tuple[StreamResult, dict[str, Any] | None]:
    """A well-formed Anthropic stream, ending with message_stop or exactly one error event.

    Returns what the stream said and, with `snapshot` and a stream that did not fail, the message
    the official SDK's accumulator makes of it (itself checked with `check_message`).
    """
    assert isinstance(events, list) and events, f"no events: {events!r}"
    for position, item in enumerate(events):
        assert isinstance(item, tuple) and len(item) == 2, f"event {position}: {item!r}"
        name, data = item
        assert isinstance(name, str) and isinstance(data, dict), f"event {position}: {item!r}"
        orjson.dumps(data)  # the app encodes each event with orjson
    errors = [position for position, (name, _) in enumerate(events) if name == "error"]
    assert len(errors) <= 1, f"{len(errors)} error events"
    failed = bool(errors)
    result = assert_well_formed(events, expect_error=failed, tool_input_must_parse=True)
    check_message(events[0][1]["message"], model, "message_start.message", start=True)
    for position, (name, data) in enumerate(events):
        where = f"event {position} ({name})"
        if name == "content_block_start":
            _check_block(data["content_block"], where, streamed_start=True)
        elif name == "content_block_delta":
            delta = data["delta"]
            field = {
                "text_delta": "text",
                "thinking_delta": "thinking",
                "signature_delta": "signature",
                "input_json_delta": "partial_json",
            }[delta["type"]]
            assert isinstance(delta.get(field), str), f"{where}: {delta!r}"
        elif name == "message_delta":
            _check_stop(data["delta"].get("stop_reason"), data["delta"].get("stop_sequence"), where)
            check_usage(data.get("usage"), f"{where}.usage", ("output_tokens",))
        elif name == "error":
            _check_error(data.get("error"), where)
    for position, block in enumerate(result.content):
        if block["type"] == "tool_use":
            assert isinstance(block["input"], dict), f"block {position}: tool input {block['input']!r}"
    message = None
    if snapshot and not failed:
        message = accumulate(events)
        check_message(message, model, "the SDK's accumulated message")
    return result, message


def check_envelope(status: int, headers: Any, body: bytes) -> dict[str, Any]:
    """Anthropic's error envelope, its type matching its status; a retry-after, if any, in seconds."""
    assert status in ERROR_TYPES, f"HTTP {status}, which no Anthropic error has: {body[:500]!r}"
    content_type = headers.get("content-type", "")
    assert content_type.startswith("application/json"), f"HTTP {status} with content-type {content_type!r}"
    envelope = json.loads(body)
    assert isinstance(envelope, dict) and envelope.get("type") == "error", envelope
    assert set(envelope) == {"type", "error", "request_id"}, envelope
    assert set(envelope["error"]) == {"type", "message"}, envelope
    assert envelope["error"]["type"] == ERROR_TYPES[status], f"HTTP {status} with {envelope['error']!r}"
    assert isinstance(envelope["error"]["message"], str) and envelope["error"]["message"], envelope
    assert envelope["request_id"] == headers.get("request-id"), envelope
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        assert re.fullmatch(r"[0-9]{1,9}", retry_after), f"retry-after {retry_after!r} is no number of seconds"
    return envelope


def check_chat_stream(out: bytes, model: str, pings: bool = False) -> None:
    """What an OpenAI client of /v1/chat/completions gets streamed: `data:` events of JSON objects
    (and, `pings`, comment lines), `[DONE]` once and last; the model the client asked for; usage counts;
    chunks whose choices an OpenAI SDK reads (delta objects, text content, tool calls with string
    names and arguments), or one OpenAI error chunk, last before [DONE]."""
    blocks = [block for block in out.replace(b"\r\n", b"\n").split(b"\n\n") if block]
    if pings:
        blocks = [block for block in blocks if not block.startswith(b":")]
    assert blocks and blocks[-1] == b"data: [DONE]", f"the stream does not end with [DONE]: {out[-300:]!r}"
    for block in blocks[:-1]:
        assert block.startswith(b"data: ") and b"\n" not in block, f"not one data line: {block[:300]!r}"
        chunk = orjson.loads(block[len(b"data: ") :])
        assert isinstance(chunk, dict), f"a chunk that is not an object: {block[:300]!r}"
        if "error" in chunk:
            _check_openai_error(chunk, "an error chunk")
            assert block is blocks[-2], f"chunks after an error chunk: {out[-300:]!r}"
            continue
        if "model" in chunk:
            assert chunk["model"] == model, chunk
        choices = chunk.get("choices", [])
        assert isinstance(choices, list), chunk
        for choice in choices:
            delta = choice.get("delta", {}) if isinstance(choice, dict) else None
            assert isinstance(delta, dict), f"a choice without a delta object: {choice!r}"[:300]
            assert isinstance(delta.get("content", ""), (str, list, type(None))), delta
            for call in delta.get("tool_calls") or ():
                function = call.get("function") or {}
                assert isinstance(function.get("name", ""), (str, type(None))), call
                assert isinstance(function.get("arguments", ""), (str, type(None))), call
        usage = chunk.get("usage")
        if usage is not None:
            check_usage(usage, "chunk usage", ("prompt_tokens", "completion_tokens", "total_tokens"))


def _check_openai_error(body: Any, where: str) -> None:
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"{where}: {body!r}"
    assert isinstance(error.get("message"), str) and error["message"], f"{where}: {body!r}"
    assert isinstance(error.get("type"), str) and error["type"] in ERROR_TYPES.values(), f"{where}: {body!r}"


def check_openai_envelope(status: int, headers: Any, body: bytes) -> None:
    """OpenAI's error envelope, for /v1/chat/completions clients: its type the Anthropic one of its status."""
    assert status in ERROR_TYPES, f"HTTP {status}, which no Anthropic error has: {body[:500]!r}"
    content_type = headers.get("content-type", "")
    assert content_type.startswith("application/json"), f"HTTP {status} with content-type {content_type!r}"
    envelope = json.loads(body)
    _check_openai_error(envelope, f"HTTP {status}")
    assert envelope["error"]["type"] == ERROR_TYPES[status], f"HTTP {status} with {envelope!r}"


# -- translating, as the app does ------------------------------------------------------------------


def pieces(rng: random.Random, data: bytes, max_cuts: int = 12) -> list[bytes]:
    """`data` cut at arbitrary offsets: a few random ones, or (small data) every few bytes."""
    if rng.random() < 0.05 and len(data) < 4000:  # (test_stream_vectors cuts real captures at every byte)
        step = rng.choice([1 if len(data) < 600 else 2, 5, 17, 64])
        return [data[i : i + step] for i in range(0, len(data), step)]
    cuts = sorted(rng.randint(0, len(data)) for _ in range(rng.randint(1, max_cuts)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def translate(relay: Any, chunks: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    """Feed a relay (WorkerSSETranslator, AnthropicStreamRelay) the chunks, then end it."""
    events: list[tuple[str, dict[str, Any]]] = []
    for chunk in chunks:
        events += relay.feed(chunk)
    events += relay.end()
    return events


def normalized(events: list[tuple[str, dict[str, Any]]]) -> list[list[Any]]:
    """Events as JSON, with the tool ids Parley makes up (random) replaced by their order."""
    plain = orjson.loads(orjson.dumps(events))
    made_up: dict[str, str] = {}
    for _, data in plain:
        block = data.get("content_block") if isinstance(data, dict) else None
        if isinstance(block, dict) and isinstance(block.get("id"), str) and block["id"].startswith("toolu_01"):
            block["id"] = made_up.setdefault(block["id"], f"toolu_made_up_{len(made_up)}")
    return plain


# -- values of the wrong type ----------------------------------------------------------------------

HOSTILE_STRINGS = [
    "",
    " ",
    "\x00",
    "\ufeff",
    "\u2028",
    "\U0001f600",
    "e\u0301",
    "null",
    "[]",
    "{}",
    "[DONE]",
    "data: x",
    "\n\n",
    "\r\n",
    "stop",
    "length",
    "tool_calls",
    "text",
    "tool_use",
    "message_stop",
    "error",
]
WRONG_VALUES: list[Any] = [
    "",
    "x",
    "7",
    "-1",
    0,
    -1,
    1,
    7,
    2**31,
    2**53 + 1,
    2**63,
    2**64,
    10**30,
    -(2**63) - 1,
    1e308,
    -1e308,
    0.5,
    -0.0,
    1.5,
    True,
    False,
    None,
    [],
    [1],
    [None],
    {},
    {"a": 1},
    {"text": "x"},
    "💥" * 30,
    "x" * 5000,
    *HOSTILE_STRINGS,
]


def random_text(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(HOSTILE_STRINGS)
    low, high = rng.choice([(0x20, 0x7E), (0, 0x1F), (0x80, 0x2FF), (0x4E00, 0x4E80), (0x1F600, 0x1F64F)])
    return "".join(chr(rng.randint(low, high)) for _ in range(rng.randint(0, 12)))


def random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth >= 3 or roll < 0.7:
        return rng.choice([rng.choice(WRONG_VALUES), rng.randint(-(2**66), 2**66), random_text(rng)])
    if roll < 0.85:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {random_text(rng): random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def wrong_value(rng: random.Random) -> Any:
    """A value of any type (a fresh copy: the caller may change it)."""
    value = rng.choice(WRONG_VALUES) if rng.random() < 0.7 else random_json(rng)
    return json.loads(json.dumps(value)) if isinstance(value, (list, dict)) else value


def _parent_of(root: Any, path: tuple[Any, ...]) -> Any:
    parent = root
    for part in path[:-1]:
        parent = parent[part]
    return parent


def _retype_or_delete(rng: random.Random, root: Any) -> None:
    """One value anywhere in `root` replaced by a value of another type, or deleted."""
    paths = json_paths(root)
    if not paths:
        return
    path = rng.choice(paths)
    parent = _parent_of(root, path)
    if rng.random() < 0.25:
        del parent[path[-1]]
    else:
        parent[path[-1]] = wrong_value(rng)


# -- valid answers ---------------------------------------------------------------------------------

TOOL_NAMES = ["get_weather", "Write", "Bash", "mcp__files__read", "tool.with.dots", "名前", "long_" + "n" * 59]
WORKER_TOOL_IDS = ["call_abc123", "chatcmpl-tool-0a1b2c", "toolu_01ABCdef", "fc_1", "0"]
TEXTS = [
    "Hello, world.",
    "  leading and trailing  ",
    "line\nbreak\n\n",
    "data: not an event\n\n",
    "😀 emoji and e\u0301",
    "\u2028\u2029",
    "<script>&amp;</script>",
    'quote " and backslash \\',
]
STOP_SEQUENCES = ("END", "\n\nHuman:", "###")
FINISH_REASONS = [None, None, "stop", "length", "tool_calls", "function_call", "content_filter", "abort", "error"]

texts = st.one_of(st.just(""), st.text(max_size=40), st.sampled_from(TEXTS))
json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.sampled_from([0.5, -1e300, 3.25]), st.sampled_from(TEXTS)
)
json_objects = st.dictionaries(
    st.sampled_from(["city", "path", "command", "", "é", "a b"]),
    json_leaves | st.lists(json_leaves, max_size=2),
    max_size=3,
)
tool_calls = st.builds(
    ToolCall,
    name=st.sampled_from(TOOL_NAMES),
    arguments=json_objects | st.sampled_from(["", "{}", ' {"a": 1} ']),
    id=st.none() | st.sampled_from(WORKER_TOOL_IDS),
)


@st.composite
def worker_answers(draw: st.DrawFn, twin: bool = False) -> Answer:
    """A structurally valid answer in one of the four flavours. `twin`: one whose buffered and
    streamed renderings describe the same generation (explicit tool ids, object arguments)."""
    calls = draw(st.lists(tool_calls, max_size=3))
    if twin:
        calls = [
            ToolCall(call.name, call.arguments if isinstance(call.arguments, dict) else {}, f"call_{n}")
            for n, call in enumerate(calls)
        ]
    reasoning = draw(st.none() | texts)
    finish = draw(st.sampled_from(FINISH_REASONS) | st.text(max_size=10))
    flavour = draw(st.sampled_from(FLAVOURS))
    usage = draw(st.sampled_from([None, *USAGE_PLACEMENTS]))
    if usage == "continuous" and flavour not in ("vllm", "sglang"):
        usage = "last"  # only vLLM and SGLang have continuous usage stats
    return Answer(
        flavour=flavour,
        text=draw(texts),
        reasoning=reasoning,
        reasoning_field=draw(st.sampled_from([None, "reasoning_content", "reasoning"])),
        tool_calls=calls,
        interleave=draw(st.booleans()),
        finish_reason=finish,
        matched_stop=draw(st.sampled_from([None, None, *STOP_SEQUENCES, 151645, "unlisted"])),
        prompt_tokens=draw(st.integers(0, 200_000)),
        completion_tokens=draw(st.none() | st.integers(0, 100_000)),
        cached_tokens=draw(st.none() | st.integers(0, 5_000)),
        usage=usage,
        done=twin or draw(st.booleans() | st.just(True)),
    )


CONTEXTS = [
    AnswerContext(
        model=MODEL_NAME,
        message_id="msg_01FuzzFuzzFuzzFuzzFuzzFu",
        input_tokens_estimate=estimate,
        thinking=thinking,
        stop_sequences=stop_sequences,
    )
    for estimate, thinking, stop_sequences in [
        (12, False, ()),
        (12, True, ()),
        (0, False, STOP_SEQUENCES),
        (3000, True, STOP_SEQUENCES[:1]),
        (1, True, STOP_SEQUENCES),
        (10**8, False, ("END",)),
    ]
]
contexts = st.sampled_from(CONTEXTS)
"""What the translation knows of the request: thinking on or off, stop sequences, the prompt's estimate."""


def stream_request(answer: Answer) -> dict[str, Any]:
    """The body Parley sends the worker for a streamed request (usage asked for)."""
    options = {"include_usage": True, "continuous_usage_stats": answer.usage == "continuous"}
    return {"model": WORKER_MODEL, "stream": True, "stream_options": options}


def render_chunks(answer: Answer) -> list[dict[str, Any]]:
    """The answer's stream chunks as JSON objects ([DONE] left out)."""
    return [
        json.loads(event[len(b"data: ") :])
        for event in render_stream(answer, stream_request(answer))
        if event != DONE_EVENT
    ]


def render_completion(answer: Answer) -> dict[str, Any]:
    return json.loads(render_buffered(answer, {"model": WORKER_MODEL}))


# -- mutations of OpenAI answers -------------------------------------------------------------------


def _tool_deltas(chunks: list[Any]) -> list[dict[str, Any]]:
    """Every tool call delta (with a function object) in the chunks, wherever mutations left them."""
    found = []
    for chunk in chunks:
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        for choice in choices if isinstance(choices, list) else ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            calls = delta.get("tool_calls") if isinstance(delta, dict) else None
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    found.append(call)
    return found


def hostile_arguments(rng: random.Random, arguments: str) -> Any:
    """Tool arguments that are no JSON, no object, a truncated prefix, or not a string at all."""
    return rng.choice(
        [
            arguments[: rng.randint(0, max(0, len(arguments) - 1))],
            "{'a': 1}",
            '{"a":',
            "not json",
            "}{",
            '{"a": 1}}',
            '{"a": 1} {"b": 2}',
            "[1, 2]",
            "null",
            '"a string"',
            "7",
            "true",
            '{"a": NaN}',
            '{"a": 1e999}',
            '{"\\ud800": 1}',
            {"already": "an object"},
            ["a", "list"],
            7,
            None,
            "",
        ]
    )


def hostile_usage(rng: random.Random) -> Any:
    if rng.random() < 0.2:
        return wrong_value(rng)
    usage = {name: wrong_value(rng) for name in ("prompt_tokens", "completion_tokens", "total_tokens")}
    if rng.random() < 0.5:
        usage["prompt_tokens_details"] = rng.choice([{"cached_tokens": wrong_value(rng)}, wrong_value(rng)])
    if rng.random() < 0.3:
        usage["completion_tokens_details"] = {"reasoning_tokens": wrong_value(rng)}
    return usage


def error_chunk(rng: random.Random) -> Any:
    code = rng.choice([400, 429, 500, 503, "503", "abc", -1, 10**30, None, 99, 600, 1.5])
    return rng.choice(
        [
            {"error": {"message": random_text(rng) or "boom", "type": "InternalServerError", "code": code}},
            {"object": "error", "message": "bad", "type": "BadRequestError", "param": None, "code": code},
            {"error": random_text(rng)},
            {"error": None},
            {"error": wrong_value(rng), "choices": []},
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        ]
    )


_CHUNK_OPERATIONS = (
    ["retype"] * 5
    + ["arguments"] * 3
    + ["order"] * 2
    + [
        "usage",
        "finish",
        "error",
        "choices",
        "tool-shape",
        "content-parts",
    ]
)


def mutate_chunks(rng: random.Random, chunks: list[dict[str, Any]]) -> list[Any]:
    """One to three mutations of a stream's chunks (a deep copy is changed)."""
    chunks = json.loads(json.dumps(chunks))
    for _ in range(rng.randint(1, 3)):
        if not chunks:
            chunks.append(error_chunk(rng))
            continue
        operation = rng.choice(_CHUNK_OPERATIONS)
        position = rng.randrange(len(chunks))
        chunk = chunks[position]
        if operation == "retype":
            _retype_or_delete(rng, chunk if rng.random() < 0.9 else chunks)
        elif operation == "arguments":
            calls = _tool_deltas(chunks)
            if calls:
                call = rng.choice(calls)
                whole = "".join(
                    c["function"].get("arguments") or ""
                    for c in calls
                    if isinstance(c["function"].get("arguments"), str)
                )
                call["function"]["arguments"] = hostile_arguments(rng, whole)
                if rng.random() < 0.3:  # the rest of the arguments never comes
                    for later in calls[calls.index(call) + 1 :]:
                        later["function"]["arguments"] = ""
        elif operation == "order":
            kind = rng.choice(["duplicate", "drop", "swap", "move"])
            if kind == "duplicate":
                chunks.insert(position, json.loads(json.dumps(chunk)))
            elif kind == "drop":
                chunks.pop(position)
            else:
                other = rng.randrange(len(chunks))
                if kind == "swap":
                    chunks[position], chunks[other] = chunks[other], chunks[position]
                else:
                    chunks.insert(other, chunks.pop(position))
        elif not isinstance(chunk, dict):
            continue
        elif operation == "usage":
            chunk["usage"] = hostile_usage(rng)
        elif operation == "finish":
            choices = chunk.get("choices")
            for choice in choices if isinstance(choices, list) else ():
                if isinstance(choice, dict):
                    choice["finish_reason"] = rng.choice(["length", "tool_calls", "stop", "abort", "", *WRONG_VALUES])
        elif operation == "error":
            chunks.insert(position, error_chunk(rng))
        elif operation == "choices":
            choices = chunk.get("choices")
            first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
            chunk["choices"] = rng.choice(
                [[], [7], [None], [{}, {}], {"0": first}, None, "x", [first, first], [{**first, "index": 1}, first]]
            )
        elif operation == "tool-shape":
            calls = _tool_deltas(chunks)
            if calls:
                call = rng.choice(calls)
                key = rng.choice(["index", "id", "name", "function", "type"])
                if key == "name":
                    call["function"]["name"] = rng.choice([None, "", 7, [], {"x": 1}, "other_tool", " "])
                elif key == "index":
                    call["index"] = rng.choice(["0", -1, 2**64, None, 1.5, 99, [], 0])
                else:
                    call[key] = wrong_value(rng)
        elif operation == "content-parts":
            choices = chunk.get("choices")
            for choice in choices if isinstance(choices, list) else ():
                if isinstance(choice, dict) and isinstance(choice.get("delta"), dict):
                    choice["delta"][rng.choice(["content", "reasoning_content", "reasoning"])] = rng.choice(
                        [[{"type": "text", "text": "part"}], [{"text": 5}], [7], {"text": "x"}, 7, True, None]
                    )
    return chunks


def mutate_completion(rng: random.Random, completion: dict[str, Any]) -> dict[str, Any]:
    """One to three mutations of a buffered answer: a field retyped or deleted, hostile tool arguments
    or usage, the message or its content replaced by something else."""
    completion = json.loads(json.dumps(completion))
    for _ in range(rng.randint(1, 3)):
        operation = rng.choice(["retype"] * 5 + ["arguments", "arguments", "usage", "message", "content", "choices"])
        choices = completion.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        message = choice.get("message") if isinstance(choice.get("message"), dict) else None
        if operation == "retype":
            _retype_or_delete(rng, completion)
        elif operation == "arguments" and message and isinstance(message.get("tool_calls"), list):
            calls = [c for c in message["tool_calls"] if isinstance(c, dict) and isinstance(c.get("function"), dict)]
            if calls:
                function = rng.choice(calls)["function"]
                text = function.get("arguments") if isinstance(function.get("arguments"), str) else ""
                function["arguments"] = hostile_arguments(rng, text)
        elif operation == "usage":
            completion["usage"] = hostile_usage(rng)
        elif operation == "message" and choice:
            choice["message"] = wrong_value(rng)
        elif operation == "content" and message:
            message["content"] = rng.choice(
                [[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], [{"text": 5}], [7, None], {"t": 1}]
                + [wrong_value(rng)]
            )
        elif operation == "choices":
            completion["choices"] = rng.choice([[], [choice, choice], [None, choice], wrong_value(rng)])
    return completion


# -- the SSE around the chunks ---------------------------------------------------------------------

_STRAY_LINES = [
    b"data: {not json",
    b"data: ",
    b"data:",
    b"data: null",
    b"data: 5",
    b'data: "a string"',
    b"data: []",
    b"data: [DONE]x",
    b"data: {}",
    b'data: {"choices": []}',
    b"garbage without a colon",
    b"event: error",
    b"retry: abc",
    b"id: 7",
    b": keep-alive",
    b":",
    b"",
]
BAD_BYTES = [
    b"\xff",
    b"\xfe\xff",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc0\xaf",
    b"\x00",
    b"\xef\xbb\xbf",
]


def _payload(rng: random.Random, chunk: Any) -> bytes:
    if rng.random() < 0.5:
        return json.dumps(chunk, ensure_ascii=rng.random() < 0.5).encode()
    return json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode()


def frame(rng: random.Random, payloads: list[bytes], done: bool, events: list[str] | None = None) -> bytes:
    """Payloads as SSE events, the framing sometimes hostile. `events`: each payload's `event:` name."""
    newline = rng.choice([b"\n"] * 8 + [b"\r\n"] * 3 + [b"\r"])
    hostile = rng.random() < 0.5
    blocks: list[list[bytes]] = []
    for position, payload in enumerate(payloads):
        lines = []
        if events is not None and (not hostile or rng.random() < 0.8):
            lines.append(b"event: " + events[position].encode())
        if hostile and rng.random() < 0.1:
            lines.append(rng.choice([b"id: 1", b": comment", b"retry: 5", b"event: message"]))
        prefix = b"data:" if hostile and rng.random() < 0.2 else b"data: "
        if hostile and rng.random() < 0.05 and b"," in payload:
            cut = payload.index(b",") + 1  # one event, its data on two lines (joined with a newline)
            lines += [prefix + payload[:cut], prefix + payload[cut:]]
        else:
            lines.append(prefix + payload)
        blocks.append(lines)
    if done:
        blocks.append([b"data: [DONE]"])
    if hostile:
        for _ in range(rng.randint(1, 3)):
            where = rng.randint(0, len(blocks))
            kind = rng.random()
            if kind < 0.15:
                blocks.insert(where, [b"data: [DONE]"])  # early, or twice
            elif kind < 0.25 and done:
                blocks.pop()  # [DONE] missing after all
                done = False
            else:
                blocks.insert(where, [rng.choice(_STRAY_LINES)])
    out = b"".join(newline.join(lines) + newline + newline for lines in blocks)
    if hostile and rng.random() < 0.2:
        out = out.rstrip(b"\r\n")  # the last event without its blank line
    return out


def damage(rng: random.Random, data: bytes) -> bytes:
    """Bytes cut short, or invalid UTF-8 (or a BOM) in them; most often left as they are."""
    roll = rng.random()
    if roll < 0.7 or not data:
        return data
    position = rng.randint(0, len(data))
    if roll < 0.85:
        return data[:position]
    if roll < 0.9:
        return b"\xef\xbb\xbf" + data
    bad = rng.choice(BAD_BYTES) if rng.random() < 0.8 else rng.randbytes(rng.randint(1, 6))
    return data[:position] + bad + data[position + (len(bad) if rng.random() < 0.5 else 0) :]


class Rendered:
    """One answer rendered once in each shape the workers send; every variant starts from these."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    @functools.cached_property
    def chunks(self) -> list[dict[str, Any]]:
        return render_chunks(self.answer)

    @functools.cached_property
    def completion(self) -> dict[str, Any]:
        return render_completion(self.answer)

    @functools.cached_property
    def native_events(self) -> list[dict[str, Any]]:
        return anthropic_events_of(_native(self.answer))

    @functools.cached_property
    def native_message(self) -> dict[str, Any]:
        return anthropic_message_of(_native(self.answer))


def openai_stream(rng: random.Random, rendered: Rendered, mutate: bool = True) -> bytes:
    """The answer's stream as the worker sends it, mutated and framed (or, `mutate` false, as rendered)."""
    chunks: list[Any] = rendered.chunks
    if not mutate:
        done = DONE_EVENT if rendered.answer.done else b""
        return b"".join(b"data: " + _payload(rng, chunk) + b"\n\n" for chunk in chunks) + done
    if rng.random() < 0.85:
        chunks = mutate_chunks(rng, chunks)
    return damage(rng, frame(rng, [_payload(rng, chunk) for chunk in chunks], rendered.answer.done))


def openai_completion(rng: random.Random, rendered: Rendered, mutate: bool = True) -> bytes:
    completion = rendered.completion
    if not mutate:
        return _payload(rng, completion)
    if rng.random() < 0.9:
        completion = mutate_completion(rng, completion)
    return damage(rng, _payload(rng, completion))


# -- Anthropic-native answers ----------------------------------------------------------------------


def anthropic_events_of(answer: Answer) -> list[dict[str, Any]]:
    body = {"model": WORKER_MODEL, "stream": True}
    return [json.loads(event.split(b"\ndata: ", 1)[1]) for event in render_anthropic_stream(answer, body)]


def anthropic_message_of(answer: Answer) -> dict[str, Any]:
    return json.loads(render_anthropic_buffered(answer, {"model": WORKER_MODEL}))


def _native(answer: Answer) -> Answer:
    """The Anthropic renderer needs tool arguments that are JSON objects."""
    calls = [ToolCall(c.name, c.arguments if isinstance(c.arguments, dict) else {}, c.id) for c in answer.tool_calls]
    return Answer(
        text=answer.text,
        reasoning=answer.reasoning,
        tool_calls=calls,
        finish_reason=answer.finish_reason,
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
        cached_tokens=answer.cached_tokens,
    )


def mutate_anthropic_events(rng: random.Random, events: list[dict[str, Any]]) -> list[Any]:
    events = json.loads(json.dumps(events))
    for _ in range(rng.randint(1, 3)):
        operation = rng.choice(["retype"] * 4 + ["order"] * 2 + ["index", "usage", "error", "stray", "arguments"])
        position = rng.randrange(len(events)) if events else 0
        if operation == "retype" and events:
            _retype_or_delete(rng, events[position])
        elif operation == "order" and events:
            kind = rng.choice(["duplicate", "drop", "swap"])
            if kind == "duplicate":
                events.insert(position, json.loads(json.dumps(events[position])))
            elif kind == "drop":
                events.pop(position)
            else:
                other = rng.randrange(len(events))
                events[position], events[other] = events[other], events[position]
        elif operation == "index" and events and isinstance(events[position], dict):
            events[position]["index"] = rng.choice([-1, 99, "0", None, 2**64, 1.5])
        elif operation == "usage":
            for event in events:
                if isinstance(event, dict) and event.get("type") in ("message_start", "message_delta"):
                    usage = {name: wrong_value(rng) for name in _USAGE_COUNTS if rng.random() < 0.6}
                    target = event.get("message") if event["type"] == "message_start" else event
                    if isinstance(target, dict):
                        target["usage"] = usage if rng.random() < 0.8 else wrong_value(rng)
        elif operation == "error":
            events.insert(
                position,
                rng.choice(
                    [
                        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
                        {"type": "error", "error": {"type": rng.choice(["hologram", 7, None]), "message": 7}},
                        {"type": "error", "error": wrong_value(rng)},
                        {"type": "error"},
                    ]
                ),
            )
        elif operation == "stray":
            events.insert(
                position,
                rng.choice(
                    [{"type": "ping"}, {"type": "hologram"}, {"type": 7}, {}, [], "x", {"type": "message_start"}]
                ),
            )
        elif operation == "arguments":
            for event in events:
                delta = event.get("delta") if isinstance(event, dict) else None
                if isinstance(delta, dict) and delta.get("type") == "input_json_delta":
                    text = delta.get("partial_json")
                    delta["partial_json"] = hostile_arguments(rng, text if isinstance(text, str) else "")
                    break
    return events


def anthropic_stream(rng: random.Random, rendered: Rendered, mutate: bool = True) -> bytes:
    events: list[Any] = rendered.native_events
    if not mutate:
        return b"".join(
            b"event: " + event["type"].encode() + b"\ndata: " + _payload(rng, event) + b"\n\n" for event in events
        )
    if rng.random() < 0.85:
        events = mutate_anthropic_events(rng, events)
    names = [
        event.get("type") if isinstance(event, dict) and isinstance(event.get("type"), str) else "x" for event in events
    ]
    return damage(rng, frame(rng, [_payload(rng, event) for event in events], False, names))


def anthropic_message(rng: random.Random, rendered: Rendered, mutate: bool = True) -> bytes:
    message = json.loads(json.dumps(rendered.native_message))
    if not mutate:
        return _payload(rng, message)
    if rng.random() < 0.9:
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.8:
                _retype_or_delete(rng, message)
            elif isinstance(message.get("content"), list):
                message["content"].append(
                    rng.choice(
                        [
                            {"type": "tool_use", "id": wrong_value(rng), "name": wrong_value(rng), "input": "x"},
                            {"type": "text", "text": wrong_value(rng)},
                            {"type": "hologram"},
                            wrong_value(rng),
                        ]
                    )
                )
    return damage(rng, _payload(rng, message))


# -- raw answers for the app -----------------------------------------------------------------------


_ERROR_STATUSES = [400, 401, 403, 404, 405, 408, 409, 413, 422, 429, 499, 500, 501, 502, 503, 504, 507, 529, 599]
_ODD_STATUSES = [201, 202, 204, 206, 301, 302, 304, 307]
_CONTENT_TYPES = [
    b"application/json",
    b"application/json; charset=utf-8",
    b"text/event-stream",
    b"text/event-stream; charset=utf-8",
    b"text/html; charset=utf-8",
    b"text/plain",
    b"application/octet-stream",
    b"application/x-ndjson",
    b"application/json; charset=utf-16",
    b"\xff\xfe",
    b"",
]
RETRY_AFTERS = [
    b"5",
    b"0",
    b"-1",
    b"1e309",
    "5😀".encode(),
    b"99999999999999999999",
    b"NaN",
    b"inf",
    b"",
    b" 3 ",
    b"2.5",
    b"Wed, 21 Oct 2015 07:28:00 GMT",
    b"\xff\xfe",
    b"1" * 4000,
]
_ODD_HEADERS = [
    (b"x-request-id", "é😀".encode()),
    (b"x-weird", b"\xff\xfe\x00"),
    (b"server", b"vllm \xc3\x28"),
    (b"content-type", b"text/html"),  # a second one
    (b"x-empty", b""),
    (b"x-long", b"a" * 8000),
    (b"content-encoding", b"gzip"),
    (b"content-encoding", b"br"),
    (b"transfer-encoding", b"identity"),
    (b"set-cookie", b"a=b; Path=/"),
    (b"bad header", b"x"),
    (b"x-no-value", b" "),
]


def _error_bodies(rng: random.Random, status: int) -> bytes:
    message = random_text(rng) or "boom"
    return rng.choice(
        [
            json.dumps({"error": {"message": message, "type": "BadRequestError", "param": None, "code": status}}),
            json.dumps({"object": "error", "message": message, "type": "NotFoundError", "param": None, "code": 404}),
            json.dumps({"detail": message}),
            json.dumps({"detail": [{"loc": ["body", "model"], "msg": "field required", "type": "missing"}]}),
            json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            json.dumps({"error": "model 'x' not found"}),
            json.dumps({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}),
            json.dumps({"error": wrong_value(rng), "message": wrong_value(rng), "detail": wrong_value(rng)}),
            json.dumps(wrong_value(rng)),
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
            "",
            "Internal Server Error",
        ]
    ).encode() + (rng.randbytes(rng.randint(1, 20)) if rng.random() < 0.1 else b"")


def _body_pieces(rng: random.Random, body: bytes) -> list[bytes]:
    if not body or rng.random() < 0.3:
        return [body] if body else []
    return [piece for piece in pieces(rng, body, max_cuts=6) if piece]


@dataclass
class Case:
    """A worker answer for the app, as drawn: `script` renders it (in the test, not in the strategy:
    the renderers use the global random module, which hypothesis wants left alone while drawing)."""

    kind: str
    stream: bool
    native: bool
    answer: Answer
    seed: int
    status: int
    content_type: bytes | None
    retry_after: bytes | None
    odd_headers: list[tuple[bytes, bytes]]
    compress: bool
    framing: str
    shuffle: bool
    early_close: float | None
    terminate: bool

    @property
    def description(self) -> str:
        api = "anthropic" if self.native else "openai"
        return f"{api}/{self.kind}/{self.framing}/{'stream' if self.stream else 'buffered'}"

    def __repr__(self) -> str:
        return f"Case({self.description!r}, {self.script!r})"

    @functools.cached_property
    def script(self) -> RawAnswer:
        rng = random.Random(self.seed)
        rendered = Rendered(self.answer)
        if self.kind == "error":
            body = _error_bodies(rng, self.status)
        elif self.kind == "garbage":
            body = rng.choice([b"", rng.randbytes(rng.randint(1, 300)), b"<html>oops</html>", b"\x1f\x8b\x08\x00junk"])
        else:
            mutate = self.kind != "valid"
            as_stream = self.stream if self.kind != "mismatch" else not self.stream
            if self.kind == "mismatch" and rng.random() < 0.4:  # a 200 whose body is an error, on a stream
                body = _error_bodies(rng, 500)
            elif self.native and as_stream:
                body = anthropic_stream(rng, rendered, mutate)
            elif self.native:
                body = anthropic_message(rng, rendered, mutate)
            elif as_stream:
                body = openai_stream(rng, rendered, mutate)
            else:
                body = openai_completion(rng, rendered, mutate)
        headers: list[tuple[bytes, bytes]] = []
        if self.content_type is not None:
            headers.append((b"content-type", self.content_type))
        if self.retry_after is not None:
            headers.append((b"retry-after", self.retry_after))
        headers += self.odd_headers
        if self.compress:
            body = gzip.compress(body)
        chunks = _body_pieces(rng, body)
        if self.framing in ("length", "short", "long"):
            error = {"length": 0, "short": -min(len(body), rng.randint(1, 9)), "long": rng.randint(1, 9)}[self.framing]
            headers.append((b"content-length", str(len(body) + error).encode()))
        elif self.framing == "chunked":
            headers.append((b"transfer-encoding", b"chunked"))
        if self.shuffle:
            rng.shuffle(headers)
        close_after = None
        if chunks and self.early_close is not None:
            close_after = int(self.early_close * len(chunks))
        return RawAnswer(
            status=self.status,
            headers=headers,
            chunks=chunks,
            chunked=self.framing == "chunked",
            terminate=self.terminate,
            close_after=close_after,
        )


@st.composite
def raw_worker_answers(draw: st.DrawFn, stream: bool, native: bool = False) -> Case:
    """What a worker may answer a (streamed or buffered) request with, on the wire: a Chat Completions
    worker, or (`native`) one that speaks the Anthropic Messages API."""
    kind = draw(st.sampled_from(["valid"] * 3 + ["mutated"] * 4 + ["error"] * 3 + ["mismatch"] * 2 + ["garbage"]))
    status, content_type = 200, b"text/event-stream; charset=utf-8" if stream else b"application/json"
    if kind == "error":
        status = draw(st.sampled_from(_ERROR_STATUSES))
        content_type = draw(st.sampled_from([b"application/json"] * 3 + _CONTENT_TYPES))
    elif kind == "garbage":
        status = draw(st.sampled_from([200, 200, *_ODD_STATUSES, *_ERROR_STATUSES]))
        content_type = draw(st.sampled_from(_CONTENT_TYPES))
    elif kind == "mismatch":
        content_type = draw(st.sampled_from(_CONTENT_TYPES))
    odd_headers = draw(st.lists(st.sampled_from(_ODD_HEADERS), max_size=2)) if draw(st.integers(0, 3)) == 0 else []
    framing = draw(st.sampled_from(["length", "length", "chunked", "chunked", "close", "short", "long"]))
    if stream and kind in ("valid", "mutated") and draw(st.booleans()):
        framing = "chunked"
    retry_after = None
    if status in (429, 503, 529) or draw(st.integers(0, 9)) == 0:
        retry_after = draw(st.sampled_from(RETRY_AFTERS))
    return Case(
        kind=kind,
        stream=stream,
        native=native,
        answer=draw(worker_answers()),
        seed=draw(st.integers(0, 2**32 - 1)),
        status=status,
        content_type=content_type if content_type or draw(st.booleans()) else None,
        retry_after=retry_after,
        odd_headers=odd_headers,
        compress=(b"content-encoding", b"gzip") in odd_headers and draw(st.booleans()),
        framing=framing,
        shuffle=draw(st.booleans()),
        early_close=draw(st.floats(0, 0.99)) if draw(st.integers(0, 7)) == 0 else None,
        terminate=framing != "chunked" or draw(st.integers(0, 5)) > 0,
    )
