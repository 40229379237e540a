"""vLLM's own Anthropic API and Parley in front of the same vLLM, side by side, on the same requests.

Every request goes to three sides, buffered and streamed (raw httpx, so what each sends is seen as it is):
vLLM's POST /v1/messages itself (model `tiny`), Parley's translating route (MODEL: to vLLM's
/v1/chat/completions) and Parley's passthrough route (NATIVE_MODEL: an `api: anthropic` worker relaying
vLLM's /v1/messages, checked by core/passthrough.py). Each test pins one aspect where the sides differ, or
agree, as the table "Parley and vLLM's own /v1/messages" at the end of docs/translation.md records it: when
vLLM or Parley changes, a test here fails and the table is due a change. The Parley sides are also held to
Parley's own guarantees (its ids and model name, usage, error envelopes and headers, a stream the SDK can
parse), which is what the passthrough adds over vLLM's route.

Random weights write random words: shapes, fields, stop reasons, counts and grammar are compared, never
words. Answers are greedy (`temperature: 0`) except the complete forced tool call (greedy decoding writes
whitespace inside the call's JSON until max_tokens); the stop sequence is a piece of vLLM's own greedy answer.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any, Iterator

import httpx
import pytest

from parley.core.anthropic_types import parse_count_tokens_request
from parley.core.request import prompt_to_chat_messages, tools_to_chat
from parley.core.tokens import estimate_prompt_tokens
from tests.anthropic_stream import StreamResult, assert_well_formed
from tests.integration.helpers import RawStream, as_int, assert_error, post_stream, wait_for_record
from tests.stack import RunningParley

from .conftest import CONTEXT_TOKENS, MAX_OUTPUT_TOKENS, MODEL, NATIVE_MODEL
from .prompts import GREEDY, HELLO, PARIS, WEATHER
from .servers import SERVED_MODEL, VllmServer

VLLM = "vllm"
"""vLLM's own /v1/messages."""
TRANSLATED = "translated"
"""Parley's MODEL route: Anthropic translated to vLLM's /v1/chat/completions."""
PASSTHROUGH = "passthrough"
"""Parley's NATIVE_MODEL route: vLLM's /v1/messages relayed, checked."""
SIDES = (VLLM, TRANSLATED, PASSTHROUGH)
PARLEY_SIDES = (TRANSLATED, PASSTHROUGH)

SUNNY = {
    "name": "is_sunny",
    "description": "Whether it is sunny in Paris",
    "input_schema": {"type": "object", "properties": {"sunny": {"type": "boolean"}}, "required": ["sunny"]},
}
"""A call whose input is short: sampled, it ends in about a hundred tokens (a string can run for hundreds)."""
TOOL_RESULT_TURN = [
    *PARIS,
    {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_01Paris", "name": "get_weather", "input": {"city": "Paris"}}],
    },
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01Paris", "content": "Sunny, 21 C"}]},
]
PARLEY_USAGE = {
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cache_creation",
    "output_tokens",
    "service_tier",
}
"""The usage of a translated message (and message_start): today's API's shape."""
PARLEY_DELTA_USAGE = {"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens"}
VLLM_USAGE = {"input_tokens", "output_tokens"}
"""vLLM's usage everywhere (its cache fields come only with --enable-prompt-tokens-details)."""
ANTHROPIC_STOP_REASONS = {"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"}


# -- the sides ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """A server answering Anthropic requests: its client (base URL and key) and the model name it serves."""

    http: httpx.Client
    model: str

    def post(self, body: dict[str, Any], path: str = "/v1/messages") -> httpx.Response:
        return self.http.post(path, json={"model": self.model, **body})

    def stream(self, body: dict[str, Any]) -> RawStream:
        return post_stream(self.http, {"model": self.model, **body})


@dataclass(frozen=True)
class Answers:
    """One request's answers on every side: the buffered responses and the streams."""

    responses: dict[str, httpx.Response]
    streams: dict[str, RawStream]

    def message(self, side: str) -> dict[str, Any]:
        response = self.responses[side]
        assert response.status_code == 200, f"{side}: {response.status_code} {response.text[:500]}"
        assert response.headers["content-type"] == "application/json", side
        return response.json()

    def events(self, side: str) -> list[tuple[str, dict[str, Any]]]:
        stream = self.streams[side]
        assert stream.response.status_code == 200, f"{side}: {stream.response.status_code} {stream.response.text}"
        assert stream.response.headers["content-type"] == "text/event-stream; charset=utf-8", side
        return stream.events


def ask(sides: dict[str, Side], body: dict[str, Any], streamed: bool = True) -> Answers:
    responses = {name: side.post(body) for name, side in sides.items()}
    streams = {name: side.stream(body) for name, side in sides.items()} if streamed else {}
    return Answers(responses, streams)


@pytest.fixture(scope="module")
def sides(parley: RunningParley, vllm: VllmServer) -> Iterator[dict[str, Side]]:
    root = vllm.base_url.removesuffix("/v1")
    with (
        httpx.Client(base_url=root, timeout=300) as direct,
        httpx.Client(base_url=parley.url, headers={"x-api-key": parley.key}, timeout=300) as gateway,
    ):
        yield {
            VLLM: Side(direct, SERVED_MODEL),
            TRANSLATED: Side(gateway, MODEL),
            PASSTHROUGH: Side(gateway, NATIVE_MODEL),
        }


@pytest.fixture(scope="module")
def greedy_pieces(sides: dict[str, Side]) -> list[str]:
    """The text deltas of vLLM's greedy answer to HELLO: what the stop sequences are taken from."""
    events = sides[VLLM].stream({"max_tokens": 6, "messages": HELLO, **GREEDY}).events
    pieces = [data["delta"]["text"] for name, data in events if name == "content_block_delta"]
    assert len(pieces) >= 3 and pieces[2] not in pieces[0] + pieces[1], pieces
    return pieces


# -- the requests, asked once each -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hello(sides: dict[str, Side]) -> Answers:
    """Plain text, cut by max_tokens (greedy random weights never stop on their own)."""
    return ask(sides, {"max_tokens": 16, "messages": HELLO, **GREEDY})


@pytest.fixture(scope="module")
def with_system(sides: dict[str, Side]) -> Answers:
    return ask(sides, {"max_tokens": 16, "system": "You are terse.", "messages": HELLO, **GREEDY})


@pytest.fixture(scope="module")
def cut_short(sides: dict[str, Side]) -> Answers:
    return ask(sides, {"max_tokens": 3, "messages": HELLO, **GREEDY})


@pytest.fixture(scope="module")
def stopped(sides: dict[str, Side], greedy_pieces: list[str]) -> Answers:
    """Stopped by the third piece of the greedy answer: the text is the first two."""
    return ask(sides, {"max_tokens": 16, "messages": HELLO, "stop_sequences": [greedy_pieces[2]], **GREEDY})


@pytest.fixture(scope="module")
def stopped_at_once(sides: dict[str, Side], greedy_pieces: list[str]) -> Answers:
    """Stopped by the first piece of the greedy answer: an empty answer."""
    return ask(sides, {"max_tokens": 16, "messages": HELLO, "stop_sequences": [greedy_pieces[0]], **GREEDY})


@pytest.fixture(scope="module")
def forced_call(sides: dict[str, Side]) -> Answers:
    """A forced named call, sampled (greedy never closes the JSON), buffered: room to finish it."""
    body = {"max_tokens": MAX_OUTPUT_TOKENS, "messages": PARIS, "tools": [SUNNY]}
    return ask(sides, {**body, "tool_choice": {"type": "tool", "name": "is_sunny"}}, streamed=False)


@pytest.fixture(scope="module")
def forced_call_cut(sides: dict[str, Side]) -> Answers:
    """A forced named call, greedy: it writes `{"city":` then whitespace until max_tokens."""
    body = {"max_tokens": 48, "messages": PARIS, "tools": [WEATHER], **GREEDY}
    return ask(sides, {**body, "tool_choice": {"type": "tool", "name": "get_weather"}})


@pytest.fixture(scope="module")
def auto_tool(sides: dict[str, Side]) -> Answers:
    body = {"max_tokens": 16, "messages": PARIS, "tools": [WEATHER], "tool_choice": {"type": "auto"}, **GREEDY}
    return ask(sides, body)


@pytest.fixture(scope="module")
def after_tool_result(sides: dict[str, Side]) -> Answers:
    return ask(sides, {"max_tokens": 16, "messages": TOOL_RESULT_TURN, "tools": [WEATHER], **GREEDY})


TEXT_ANSWERS = ("hello", "with_system", "cut_short", "stopped", "stopped_at_once", "auto_tool", "after_tool_result")
STREAMED_ANSWERS = (*TEXT_ANSWERS, "forced_call_cut")


# -- reading answers ---------------------------------------------------------------------------------------


def block_types(message: dict[str, Any]) -> list[str]:
    return [block["type"] for block in message["content"]]


def event_runs(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The stream's event names, pings left out and each run of one name as one (deltas are chunked
    differently on each side)."""
    return [name for name, _ in itertools.groupby(name for name, _ in events if name != "ping")]


def tool_input_json(events: list[tuple[str, dict[str, Any]]]) -> str:
    """The input_json_delta fragments of a stream, joined."""
    return "".join(
        data["delta"]["partial_json"]
        for name, data in events
        if name == "content_block_delta" and data["delta"]["type"] == "input_json_delta"
    )


def event_of(events: list[tuple[str, dict[str, Any]]], wanted: str) -> dict[str, Any]:
    return next(data for name, data in events if name == wanted)


def assert_parley_message(message: dict[str, Any], model: str) -> None:
    """What Parley guarantees of a message, whichever worker answered."""
    assert message["id"].startswith("msg_") and message["model"] == model
    assert (message["type"], message["role"]) == ("message", "assistant")
    assert message["stop_reason"] in ANTHROPIC_STOP_REASONS and "stop_sequence" in message
    assert (message["stop_reason"] == "stop_sequence") == isinstance(message["stop_sequence"], str)
    assert all(isinstance(message["usage"][name], int) for name in ("input_tokens", "output_tokens"))
    for block in message["content"]:
        assert block["type"] in ("text", "tool_use"), block
        assert block["type"] != "text" or block["text"], "no empty text block"
        assert block["type"] != "tool_use" or (block["id"].startswith("toolu_") and isinstance(block["input"], dict))


def assert_parley_stream(events: list[tuple[str, dict[str, Any]]], model: str) -> StreamResult:
    """What Parley guarantees of a stream: Anthropic's grammar, tool input that parses, its ids and model
    name, usage in message_start and message_delta."""
    result = assert_well_formed(events)
    assert result.message["id"].startswith("msg_") and result.message["model"] == model
    assert all(isinstance(result.message["usage"][name], int) for name in ("input_tokens", "output_tokens"))
    assert isinstance(event_of(events, "message_delta")["usage"]["output_tokens"], int)
    assert all(block["id"].startswith("toolu_") for block in result.content if block["type"] == "tool_use")
    return result


def parley_estimate(body: dict[str, Any]) -> int:
    """Parley's estimate of a count_tokens request's prompt (UTF-8 bytes / 4 of the translated prompt)."""
    request = parse_count_tokens_request(json.dumps(body).encode())
    return estimate_prompt_tokens(prompt_to_chat_messages(request), tools_to_chat(request))


# -- Parley's guarantees, on both its routes ---------------------------------------------------------------


@pytest.mark.parametrize("side", PARLEY_SIDES)
@pytest.mark.parametrize("answers", [*TEXT_ANSWERS, "forced_call", "forced_call_cut"])
def test_parleys_messages_keep_its_guarantees(request, sides, side, answers):
    assert_parley_message(request.getfixturevalue(answers).message(side), sides[side].model)


@pytest.mark.parametrize("side", PARLEY_SIDES)
@pytest.mark.parametrize("answers", STREAMED_ANSWERS)
def test_parleys_streams_keep_its_guarantees(request, sides, side, answers):
    assert_parley_stream(request.getfixturevalue(answers).events(side), sides[side].model)


@pytest.mark.parametrize("side", PARLEY_SIDES)
def test_parleys_usage_is_metered_as_the_client_was_told(parley, hello, side):
    """The usage the client got, from vLLM's own counts, is what Parley meters (none of it lost)."""
    answers = [(hello.responses[side], hello.message(side)["usage"])]
    stream = hello.streams[side]
    answers.append((stream.response, event_of(hello.events(side), "message_delta")["usage"]))
    for response, usage in answers:
        record = wait_for_record(parley, response.headers["request-id"])
        assert (as_int(record["input_tokens"]), as_int(record["output_tokens"])) == (
            usage["input_tokens"],
            usage["output_tokens"],
        )


# -- ids, model, headers -----------------------------------------------------------------------------------


def test_message_ids_are_chat_completion_ids_on_vllm_and_msg_ids_on_parley(hello):
    assert hello.message(VLLM)["id"].startswith("chatcmpl-")
    assert event_of(hello.events(VLLM), "message_start")["message"]["id"].startswith("chatcmpl-")
    for side in PARLEY_SIDES:
        assert hello.message(side)["id"].startswith("msg_01")
        assert event_of(hello.events(side), "message_start")["message"]["id"].startswith("msg_01")


def test_model_is_the_served_name_on_vllm_and_the_name_asked_for_on_parley(sides, hello):
    for side in SIDES:
        assert hello.message(side)["model"] == sides[side].model
        assert event_of(hello.events(side), "message_start")["message"]["model"] == sides[side].model
    assert sides[VLLM].model == SERVED_MODEL


def test_only_parley_sends_request_ids(hello):
    assert "request-id" not in hello.responses[VLLM].headers
    assert "request-id" not in hello.streams[VLLM].response.headers
    for side in PARLEY_SIDES:
        for response in (hello.responses[side], hello.streams[side].response):
            assert response.headers["request-id"].startswith("req_")
            assert response.headers["x-request-id"] == response.headers["request-id"]


def test_tool_use_ids_are_chat_completion_tool_ids_on_vllm_and_toolu_on_parley(forced_call, forced_call_cut):
    for side in SIDES:
        message = forced_call.message(side)
        assert message["stop_reason"] == "tool_use", f"{side}: {message}"
        calls = [block for block in message["content"] if block["type"] == "tool_use"]
        assert calls and all(call["name"] == "is_sunny" for call in calls), f"{side}: {message}"
        assert all(isinstance(call["input"].get("sunny"), bool) for call in calls), "the schema holds"
        prefix = "chatcmpl-tool-" if side == VLLM else "toolu_01"
        assert all(call["id"].startswith(prefix) for call in calls), f"{side}: {calls}"
        start = event_of(forced_call_cut.events(side), "content_block_start")["content_block"]
        assert start["type"] == "tool_use" and start["id"].startswith(prefix), f"{side}: {start}"


# -- usage and prompt tokens -------------------------------------------------------------------------------


def test_usage_fields_vllm_sends_and_parley_adds(hello):
    messages = {side: hello.message(side)["usage"] for side in SIDES}
    starts = {side: event_of(hello.events(side), "message_start")["message"]["usage"] for side in SIDES}
    deltas = {side: event_of(hello.events(side), "message_delta")["usage"] for side in SIDES}
    assert set(messages[VLLM]) == set(starts[VLLM]) == set(deltas[VLLM]) == VLLM_USAGE
    assert set(messages[TRANSLATED]) == set(starts[TRANSLATED]) == PARLEY_USAGE
    assert set(deltas[TRANSLATED]) == PARLEY_DELTA_USAGE
    assert messages[TRANSLATED]["service_tier"] == "standard"
    assert messages[TRANSLATED]["cache_creation"] == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}
    assert messages[TRANSLATED]["cache_read_input_tokens"] == messages[TRANSLATED]["cache_creation_input_tokens"] == 0
    # The passthrough relays vLLM's usage objects as they came (their figures checked): no field added.
    assert set(messages[PASSTHROUGH]) == set(starts[PASSTHROUGH]) == set(deltas[PASSTHROUGH]) == VLLM_USAGE
    assert starts[VLLM]["output_tokens"] == starts[PASSTHROUGH]["output_tokens"] == 0
    figures = {side: (messages[side]["input_tokens"], messages[side]["output_tokens"]) for side in SIDES}
    assert len(set(figures.values())) == 1 and figures[VLLM][1] == 16, figures


@pytest.mark.parametrize("answers", ["hello", "with_system", "auto_tool", "after_tool_result"])
def test_every_side_renders_the_same_prompt(request, answers):
    """vLLM's translation of an Anthropic request and Parley's give the chat template the same prompt."""
    answered = request.getfixturevalue(answers)
    counts = {side: answered.message(side)["usage"]["input_tokens"] for side in SIDES}
    counts |= {
        f"{side} stream": event_of(answered.events(side), "message_delta")["usage"]["input_tokens"] for side in SIDES
    }
    assert len(set(counts.values())) == 1, counts


def test_a_system_prompt_counts_on_every_side(hello, with_system):
    for side in SIDES:
        assert with_system.message(side)["usage"]["input_tokens"] > hello.message(side)["usage"]["input_tokens"]


def test_count_tokens_is_vllms_count_translated_and_an_estimate_passed_through(sides):
    body = {"messages": HELLO, "tools": [WEATHER]}
    counted = {side: sides[side].post(body, "/v1/messages/count_tokens") for side in SIDES}
    for side, response in counted.items():
        assert response.status_code == 200 and response.headers["content-type"] == "application/json", side
    by_vllm = counted[VLLM].json()
    assert by_vllm == {
        "input_tokens": by_vllm["input_tokens"],
        "context_management": {"original_input_tokens": by_vllm["input_tokens"]},
    }
    assert counted[TRANSLATED].json() == {"input_tokens": by_vllm["input_tokens"]}, "vLLM's /tokenize count"
    # The passthrough does not ask vLLM's /v1/messages/count_tokens: Parley estimates the prompt.
    estimate = parley_estimate({"model": NATIVE_MODEL, **body})
    assert counted[PASSTHROUGH].json() == {"input_tokens": estimate} and estimate != by_vllm["input_tokens"]


# -- stop reasons ------------------------------------------------------------------------------------------


def test_vllm_leaves_out_a_null_stop_sequence_parley_sends_it(hello):
    assert "stop_sequence" not in hello.message(VLLM)
    for side in PARLEY_SIDES:
        assert hello.message(side)["stop_sequence"] is None
    for side in SIDES:
        assert event_of(hello.events(side), "message_delta")["delta"] == {
            "stop_reason": "max_tokens",
            "stop_sequence": None,
        }


def test_max_tokens_stops_every_side_alike(cut_short):
    for side in SIDES:
        message = cut_short.message(side)
        assert message["stop_reason"] == "max_tokens" and message["usage"]["output_tokens"] == 3, side
        delta = event_of(cut_short.events(side), "message_delta")
        assert delta["delta"]["stop_reason"] == "max_tokens" and delta["usage"]["output_tokens"] == 3, side


def test_a_stop_sequence_stops_every_side_alike(stopped, greedy_pieces):
    stop = greedy_pieces[2]
    for side in SIDES:
        message = stopped.message(side)
        assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", stop), side
        assert block_types(message) == ["text"] and stop not in message["content"][0]["text"], side
        delta = event_of(stopped.events(side), "message_delta")["delta"]
        assert delta == {"stop_reason": "stop_sequence", "stop_sequence": stop}, side


def test_an_empty_answer_is_one_empty_text_block_on_vllm_and_no_block_on_parley(stopped_at_once, greedy_pieces):
    assert stopped_at_once.message(VLLM)["content"] == [{"type": "text", "text": ""}]
    for side in PARLEY_SIDES:
        assert stopped_at_once.message(side)["content"] == []
    for side in SIDES:
        assert stopped_at_once.message(side)["stop_sequence"] == greedy_pieces[0]
        assert event_runs(stopped_at_once.events(side)) == ["message_start", "message_delta", "message_stop"], side


def test_max_tokens_past_the_window_is_refused_by_vllm_and_clamped_by_parley(sides, greedy_pieces):
    body = {"max_tokens": CONTEXT_TOKENS * 2, "messages": HELLO, "stop_sequences": [greedy_pieces[2]], **GREEDY}
    refused = sides[VLLM].post(body)
    assert refused.status_code == 400 and refused.json()["error"]["type"] == "BadRequestError", refused.text
    for side in PARLEY_SIDES:
        answer = sides[side].post(body)
        assert answer.status_code == 200 and answer.json()["stop_reason"] == "stop_sequence", answer.text


# -- tool calls --------------------------------------------------------------------------------------------


def test_a_forced_call_cut_short_buffered_is_markup_relayed_and_a_call_translated(forced_call_cut):
    """Buffered, vLLM answers an unfinished call as the model's raw hermes markup, in its chat API and so in
    its Anthropic API; the passthrough relays that text, the translation reads the call out of it."""
    for side in (VLLM, PASSTHROUGH):
        message = forced_call_cut.message(side)
        assert message["stop_reason"] == "max_tokens" and block_types(message) == ["text"], side
        assert message["content"][0]["text"].startswith('<tool_call>{"name": "get_weather"'), side
    message = forced_call_cut.message(TRANSLATED)
    assert message["stop_reason"] == "max_tokens" and block_types(message) == ["tool_use"], message
    call = message["content"][0]
    assert call["name"] == "get_weather" and call["id"].startswith("toolu_01")
    streamed = assert_well_formed(forced_call_cut.events(TRANSLATED)).content[0]
    assert call["input"] == streamed["input"], "completed as the streamed call is"


def test_a_forced_call_cut_short_streams_input_only_parley_completes(forced_call_cut):
    """Streamed, the same call is a tool_use block: vLLM's fragments never make a JSON object, Parley's
    are the same fragments and the completing suffix, sent before content_block_stop."""
    by_vllm = forced_call_cut.events(VLLM)
    with pytest.raises(AssertionError, match="tool input is not JSON"):
        assert_well_formed(by_vllm)
    with pytest.raises(ValueError):
        json.loads(tool_input_json(by_vllm))
    assert event_of(by_vllm, "message_delta")["delta"]["stop_reason"] == "max_tokens"
    for side in PARLEY_SIDES:
        events = forced_call_cut.events(side)
        result = assert_well_formed(events)
        assert [block["type"] for block in result.content] == ["tool_use"] and result.stop_reason == "max_tokens"
        assert tool_input_json(events).startswith(tool_input_json(by_vllm)), side
        assert isinstance(result.content[0]["input"], dict)


def test_tool_choice_auto_and_a_tool_result_turn_answer_alike(auto_tool, after_tool_result):
    for answered in (auto_tool, after_tool_result):
        shapes = {side: (block_types(answered.message(side)), answered.message(side)["stop_reason"]) for side in SIDES}
        assert len(set(map(str, shapes.values()))) == 1, shapes


# -- event grammar -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("answers", TEXT_ANSWERS)
def test_vllms_streams_have_anthropics_grammar_and_no_pings(request, answers):
    events = request.getfixturevalue(answers).events(VLLM)
    assert_well_formed(events)
    assert "ping" not in [name for name, _ in events]


@pytest.mark.parametrize("answers", STREAMED_ANSWERS)
def test_every_side_sends_the_same_events_but_parleys_pings(request, answers):
    answered = request.getfixturevalue(answers)
    runs = {side: event_runs(answered.events(side)) for side in SIDES}
    assert runs[VLLM] == runs[TRANSLATED] == runs[PASSTHROUGH], runs
    assert runs[VLLM][0] == "message_start" and runs[VLLM][-2:] == ["message_delta", "message_stop"]


# -- errors ------------------------------------------------------------------------------------------------


def vllm_anthropic_error(response: httpx.Response, status: int, error_type: str) -> str:
    """vLLM's Anthropic envelope, with vLLM's own type (an exception's name), no request id; its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error", body
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] == error_type, body
    assert "request-id" not in response.headers
    return body["error"]["message"]


def vllm_validation_error(response: httpx.Response, param: str) -> None:
    """FastAPI's validation error as vLLM sends it on /v1/messages: OpenAI's envelope, not Anthropic's."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["type"] == "Bad Request" and body["error"]["code"] == 400, body
    assert body["error"]["param"] == param and "validation error" in body["error"]["message"], body


def error_requests(side: Side) -> dict[str, dict[str, Any]]:
    """httpx.post arguments of each faulty request, for one side."""
    model = side.model
    return {
        "prompt over the window": {
            "json": {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "word " * 70_000}]}
        },
        "unknown model": {"json": {"model": "no-such-model", "max_tokens": 8, "messages": HELLO}},
        "max_tokens missing": {"json": {"model": model, "messages": HELLO}},
        "invalid JSON": {"content": b"{not json", "headers": {"content-type": "application/json"}},
        "bad role": {"json": {"model": model, "max_tokens": 8, "messages": [{"role": "robot", "content": "Hello"}]}},
    }


def errors(side: Side, case: str) -> list[httpx.Response]:
    """The faulty request's answers, buffered and (for a JSON body) with `stream: true`."""
    arguments = error_requests(side)[case]
    answers = [side.http.post("/v1/messages", **arguments)]
    if "json" in arguments:
        answers.append(side.http.post("/v1/messages", json={**arguments["json"], "stream": True}))
    return answers


def test_a_prompt_over_the_window_is_a_400_with_vllms_message_on_every_side(sides):
    case = "prompt over the window"
    messages = [vllm_anthropic_error(answer, 400, "BadRequestError") for answer in errors(sides[VLLM], case)]
    assert f"maximum context length is {CONTEXT_TOKENS} tokens" in messages[0]
    for side in PARLEY_SIDES:
        for answer in errors(sides[side], case):
            assert assert_error(answer, 400, "invalid_request_error") == messages[0], side


def test_an_unknown_model_is_a_404_on_every_side(sides):
    for answer in errors(sides[VLLM], "unknown model"):
        assert vllm_anthropic_error(answer, 404, "NotFoundError").startswith("The model `no-such-model` does not exist")
    for side in PARLEY_SIDES:
        for answer in errors(sides[side], "unknown model"):
            assert assert_error(answer, 404, "not_found_error") == "model: no-such-model"


@pytest.mark.parametrize(
    ("case", "vllm_param", "parley_message"),
    [
        ("max_tokens missing", "body.max_tokens", "max_tokens: Field required"),
        ("invalid JSON", "body.1", "The request body is not valid JSON"),
        ("bad role", "body.messages.0.role", "messages.0.role: "),
    ],
)
def test_a_malformed_request_is_fastapis_error_on_vllm_and_anthropics_on_parley(
    sides, case, vllm_param, parley_message
):
    for answer in errors(sides[VLLM], case):
        vllm_validation_error(answer, vllm_param)
    for side in PARLEY_SIDES:
        for answer in errors(sides[side], case):
            assert assert_error(answer, 400, "invalid_request_error").startswith(parley_message), side
            assert answer.headers["x-should-retry"] == "false"
