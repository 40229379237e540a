"""The response cache's pure half (docs/cache.md): which requests may be answered from it, the
key an answer is kept under, the stream a kept answer is replayed as, and the message a streamed
answer is kept as.

The key is a SHA-256 over the account, the route (its workers' models and options), the policy
version, the translator version, the request's beta features and the canonical request: every
field of the body but `model` (the route stands for it), `stream` and `metadata`, with
`cache_control` markers and Claude Code's rotating billing line left out, and a string content
written as the text block it stands for. So one entry serves a buffered and a streamed request,
and any other change (a sampling parameter, a tool, a stop sequence, the output format) is
another key.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Iterator

import orjson

from .policy import CachePolicy
from .request import BILLING_HEADER_PREFIX
from .stream import Event

__all__ = [
    "TRANSLATOR_VERSION",
    "AnswerRecorder",
    "cache_key",
    "cacheable",
    "replay_events",
    "route_fingerprint",
    "storable",
]

TRANSLATOR_VERSION = "1"
"""Raised whenever what Parley makes of a worker's answer changes: older entries are never read."""

_KEY_FORMAT = "parley-response-cache-1"
_LEFT_OUT = frozenset({"model", "stream", "metadata"})
_REPLAY_PIECE_CHARS = 48  # a replayed text or JSON arrives in pieces about this long, as a model's would


def cacheable(policy: CachePolicy, data: dict[str, Any]) -> bool:
    """Whether the policy keeps (and serves) answers to this request."""
    if policy.mode == "all":
        return True
    return policy.mode == "deterministic" and data.get("temperature") == 0


def _without_cache_control(block: Any) -> Any:
    if isinstance(block, dict) and "cache_control" in block:
        block = {name: value for name, value in block.items() if name != "cache_control"}
    if isinstance(block, dict) and block.get("type") == "tool_result" and isinstance(block.get("content"), list):
        block = {**block, "content": [_without_cache_control(part) for part in block["content"]]}
    return block


def _as_blocks(content: Any) -> Any:
    """A string content as the one text block it stands for."""
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _is_billing_line(block: Any) -> bool:
    """Claude Code's rotating billing line, alone in its block (one with more in it stays)."""
    text = block.get("text") if isinstance(block, dict) else None
    return isinstance(text, str) and text.startswith(BILLING_HEADER_PREFIX) and "\n" not in text.strip()


def _canonical_system(system: Any) -> Any:
    system = _as_blocks(system)
    if isinstance(system, list):
        return [_without_cache_control(block) for block in system if not _is_billing_line(block)]
    return system


def _canonical_message(message: Any) -> Any:
    if isinstance(message, dict):
        content = _as_blocks(message.get("content"))
        if isinstance(content, list):
            return {**message, "content": [_without_cache_control(block) for block in content]}
    return message


def _canonical_request(data: dict[str, Any]) -> dict[str, Any]:
    canonical = {name: value for name, value in data.items() if name not in _LEFT_OUT}
    if "system" in canonical:
        canonical["system"] = _canonical_system(canonical["system"])
    if isinstance(canonical.get("messages"), list):
        canonical["messages"] = [_canonical_message(message) for message in canonical["messages"]]
    if isinstance(canonical.get("tools"), list):
        canonical["tools"] = [_without_cache_control(tool) for tool in canonical["tools"]]
    return canonical


def route_fingerprint(route: Any) -> str:
    """The route as far as it shapes answers: its name and each worker's address, model and
    options (its key reference and weight left out), so a route pointed at another model, or
    with another output limit, is a miss."""
    workers = [
        {name: value for name, value in dataclasses.asdict(worker).items() if name not in ("api_key_ref", "weight")}
        for worker in route.workers
    ]
    return orjson.dumps([route.model, workers], option=orjson.OPT_SORT_KEYS).decode()


def cache_key(account: str, route: str, policy_version: str, betas: str | None, data: dict[str, Any]) -> str:
    """The key the answer to `data` (a Messages body, as it goes to the route) is kept under;
    `route` is the route's fingerprint (`route_fingerprint`). TypeError for a body nested deeper
    than orjson writes (255 levels)."""
    features = sorted({beta.strip() for beta in (betas or "").split(",") if beta.strip()})
    identity = [_KEY_FORMAT, TRANSLATOR_VERSION, account, route, policy_version, features, _canonical_request(data)]
    return hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()


def storable(message: dict[str, Any] | None) -> bool:
    """A complete, successful answer: never a refusal, a cut stream or an error."""
    return (
        isinstance(message, dict)
        and message.get("type") == "message"
        and message.get("stop_reason") in ("end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn")
    )


def _pieces(text: str) -> Iterator[str]:
    """`text` in pieces of about `_REPLAY_PIECE_CHARS`, cut after a space where there is one."""
    start = 0
    while start < len(text):
        end = min(start + _REPLAY_PIECE_CHARS, len(text))
        if end < len(text):
            space = text.rfind(" ", start + 1, end)
            end = space + 1 if space > start else end
        yield text[start:end]
        start = end


def _block_events(index: int, block: dict[str, Any]) -> list[Event]:
    kind = block.get("type")
    deltas: list[dict[str, Any]] = []
    if kind == "text":
        start = {"type": "text", "text": ""}
        deltas = [{"type": "citations_delta", "citation": citation} for citation in block.get("citations") or ()]
        deltas += [{"type": "text_delta", "text": piece} for piece in _pieces(block["text"])]
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": piece} for piece in _pieces(block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block.get("signature", "")})
    elif kind in ("tool_use", "server_tool_use"):
        start = {**block, "input": {}}
        arguments = orjson.dumps(block.get("input", {})).decode()
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in _pieces(arguments)]
    else:  # redacted thinking, a server tool's result: whole in its start, as Anthropic sends them
        start = block
    events: list[Event] = [
        ("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
    ]
    events += [
        ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}) for delta in deltas
    ]
    events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def replay_events(message: dict[str, Any]) -> list[Event]:
    """A kept answer as the event stream Anthropic would have sent for it: message_start, each
    block in pieces (text; a tool call's JSON in fragments; thinking, then its signature),
    message_delta with the stop reason and the answer's usage, message_stop."""
    usage = dict(message["usage"])
    start_usage = {**usage, "output_tokens": min(usage.get("output_tokens", 0), 1)}
    shell = {**message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    events: list[Event] = [("message_start", {"type": "message_start", "message": shell})]
    for index, block in enumerate(message["content"]):
        events += _block_events(index, block)
    final_usage = {name: value for name, value in usage.items() if name not in ("cache_creation", "service_tier")}
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message.get("stop_sequence")}
    events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": final_usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


class AnswerRecorder:
    """Folds the events a client was sent into the message they make, as the SDKs' accumulators
    do; `message` is None unless the stream ended with message_stop and no error."""

    def __init__(self) -> None:
        self._message: dict[str, Any] | None = None
        self._json: dict[int, list[str]] = {}
        self._complete = False
        self._failed = False

    def record(self, events: list[Event]) -> None:
        if self._failed:
            return
        for name, data in events:
            if name == "ping":
                continue
            if name == "error" or (name != "message_start" and self._message is None):
                self._failed = True
                return
            if name == "message_start":
                self._message = {**data["message"], "content": []}
            elif name == "content_block_start":
                self._start_block(data["index"], data["content_block"])
            elif name == "content_block_delta":
                self._delta(data["index"], data["delta"])
            elif name == "content_block_stop":
                self._stop_block(data["index"])
            elif name == "message_delta":
                self._message.update(data["delta"])  # type: ignore[union-attr]
                self._message["usage"] = {**self._message["usage"], **data.get("usage", {})}  # type: ignore[index]
            elif name == "message_stop":
                self._complete = True

    @property
    def message(self) -> dict[str, Any] | None:
        return self._message if self._complete and not self._failed else None

    def _start_block(self, index: int, block: dict[str, Any]) -> None:
        content = self._message["content"]  # type: ignore[index]
        if index != len(content):
            self._failed = True
            return
        content.append(dict(block))
        if block.get("type") in ("tool_use", "server_tool_use"):
            self._json[index] = []

    def _delta(self, index: int, delta: dict[str, Any]) -> None:
        content = self._message["content"]  # type: ignore[index]
        if not 0 <= index < len(content):
            self._failed = True
            return
        block, kind = content[index], delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + delta["text"]
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta["thinking"]
        elif kind == "signature_delta":
            block["signature"] = delta["signature"]
        elif kind == "input_json_delta" and index in self._json:
            self._json[index].append(delta["partial_json"])
        elif kind == "citations_delta":
            block["citations"] = [*(block.get("citations") or ()), delta["citation"]]
        else:
            self._failed = True

    def _stop_block(self, index: int) -> None:
        fragments = self._json.pop(index, None)
        if fragments is None:
            return
        try:
            self._message["content"][index]["input"] = orjson.loads("".join(fragments) or "{}")  # type: ignore[index]
        except orjson.JSONDecodeError:
            self._failed = True
