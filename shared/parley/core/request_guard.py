"""A request held to its policy before any worker sees it: content judged, personal data masked.

Both endpoints' bodies are walked as parsed JSON, before they are validated (a malformed body is
refused by validation afterwards; the walk only ever touches strings where the API puts text):
- Anthropic Messages: `system`, text blocks, tool_result content (text, and document text), text
  documents, search results (their text, title and source), and the string values inside
  `tool_use.input` (never its keys, tool names, ids, thinking blocks or signatures).
- Chat Completions: every message's string content and text parts, and the string values inside
  assistant `tool_calls[].function.arguments` (JSON in a string).

Personal data is masked everywhere (the worker gets the whole history every turn). Judging (deny
rules, prompt injection, `pii.mode: block`) looks only at the newest turn unless the policy says
`scan: all`: the messages from the last `user` message on, which hold the new tool results. An
older turn was judged when it was new; judging it again would block every later request of a
session for something already answered.

`JudgedBlocks` remembers, per policy version, what a text was found to hold (spans of personal
data: offsets, never values; a verdict), keyed by the text's hash, so the history resent on every
turn of a session is not scanned again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal

import orjson

from .errors import InvalidRequestError
from .placeholders import mask
from .policy import Policy

if TYPE_CHECKING:  # loaded by the first guarded request: a deployment without policies never pays
    from .content_policy import ContentRules
    from .pii import PiiDetector, Span

__all__ = ["GuardedRequest", "JudgedBlocks", "guard_chat_request", "guard_messages_request", "mask_texts"]

Kind = Literal["text", "tool_result", "json", "arguments"]  # arguments: a chat tool call's JSON string
_MEMO_MIN_CHARS = 64  # shorter texts are scanned again: cheaper than hashing and a lookup


@dataclass(slots=True)
class GuardedRequest:
    """What guarding a request found: the placeholders the answer may restore, and flags."""

    restore_map: dict[str, str] = field(default_factory=dict)
    masked: int = 0  # values masked
    flags: tuple[str, ...] = ()  # e.g. ("prompt_injection",) under `prompt_injection: flag`


class JudgedBlocks:
    """Per instance: what each text seen under a policy version held. Bounded; emptied when full."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._max_entries = max_entries
        self._entries: dict[tuple[str, str, int, int], Any] = {}

    def remembered(self, version: str, what: str, text: str, judge: Callable[[str], Any]) -> Any:
        if len(text) < _MEMO_MIN_CHARS or not version:
            return judge(text)
        key = (version, what, len(text), hash(text))
        found = self._entries.get(key, self)
        if found is self:
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            found = self._entries[key] = judge(text)
        return found

    def __len__(self) -> int:
        return len(self._entries)


# A slot is one string of the request: (the dict or list holding it, its key or index, kind,
# whether it is judged).
Slot = tuple[Any, Any, Kind, bool]


def _json_slots(node: Any, judged: bool) -> Iterator[Slot]:
    """The string values inside free-form JSON (tool input), never its keys."""
    stack = [node]
    while stack:
        current = stack.pop()
        items = current.items() if type(current) is dict else enumerate(current)
        for name, value in items:
            if type(value) is str:
                yield current, name, "json", judged
            elif type(value) is dict or type(value) is list:
                stack.append(value)


def _document_slots(block: dict[str, Any], kind: Kind, judged: bool) -> Iterator[Slot]:
    source = block.get("source")
    if isinstance(source, dict):
        if source.get("type") == "text" and type(source.get("data")) is str:
            yield source, "data", kind, judged
        elif source.get("type") == "content":
            yield from _content_slots(source, "content", kind, judged)
    for name in ("title", "context"):
        if type(block.get(name)) is str:
            yield block, name, kind, judged


def _search_result_slots(block: dict[str, Any], kind: Kind, judged: bool) -> Iterator[Slot]:
    yield from _content_slots(block, "content", kind, judged)
    for name in ("title", "source"):
        if type(block.get(name)) is str:
            yield block, name, kind, judged


def _content_slots(holder: Any, name: Any, kind: Kind, judged: bool) -> Iterator[Slot]:
    """The strings of a content field: a string, or a list of blocks."""
    content = holder.get(name) if type(holder) is dict else None
    if type(content) is str:
        yield holder, name, kind, judged
        return
    if type(content) is not list:
        return
    for block in content:
        if type(block) is not dict:
            continue
        block_type = block.get("type")
        if block_type == "text" and type(block.get("text")) is str:
            yield block, "text", kind, judged
        elif block_type == "tool_result" and "content" in block:
            yield from _content_slots(block, "content", "tool_result", judged)
        elif block_type == "document":
            yield from _document_slots(block, "tool_result" if kind == "tool_result" else "text", judged)
        elif block_type == "search_result":
            yield from _search_result_slots(block, "tool_result" if kind == "tool_result" else "text", judged)
        elif block_type == "tool_use" and type(block.get("input")) is dict:
            yield from _json_slots(block["input"], judged)


def _newest_turn(messages: list[Any]) -> int:
    """The index of the last `user` message: the newest turn starts there."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if type(message) is dict and message.get("role") == "user":
            return index
    return 0


def _messages_slots(data: dict[str, Any], scan_all: bool) -> Iterator[Slot]:
    metadata = data.get("metadata")
    if type(metadata) is dict and type(metadata.get("user_id")) is str:  # forwarded to native workers
        yield metadata, "user_id", "text", False
    if "system" in data:
        yield from _content_slots(data, "system", "text", scan_all)
    messages = data.get("messages")
    if type(messages) is not list:
        return
    newest = _newest_turn(messages)
    for index, message in enumerate(messages):
        if type(message) is dict and "content" in message:
            yield from _content_slots(message, "content", "text", scan_all or index >= newest)


def _chat_slots(data: dict[str, Any], scan_all: bool) -> Iterator[Slot]:
    if type(data.get("user")) is str:  # the end user's id, often an email address
        yield data, "user", "text", False
    messages = data.get("messages")
    if type(messages) is not list:
        return
    newest = _newest_turn(messages)
    for index, message in enumerate(messages):
        if type(message) is not dict:
            continue
        judged = scan_all or index >= newest
        kind: Kind = "tool_result" if message.get("role") in ("tool", "function") else "text"
        content = message.get("content")
        if type(content) is str:
            yield message, "content", kind, judged
        elif type(content) is list:
            for part in content:
                if type(part) is dict and part.get("type") == "text" and type(part.get("text")) is str:
                    yield part, "text", kind, judged
        calls = message.get("tool_calls")
        functions = [call.get("function") for call in calls if type(call) is dict] if type(calls) is list else []
        functions.append(message.get("function_call"))  # the legacy single call
        for function in functions:
            if type(function) is not dict:
                continue
            arguments = function.get("arguments")
            if type(arguments) is str:
                yield function, "arguments", "arguments", judged
            elif type(arguments) is dict:  # Ollama's clients send the object itself
                yield from _json_slots(arguments, judged)


class _Guard:
    """One request's guarding under one policy."""

    def __init__(self, policy: Policy, key: bytes | None, memo: JudgedBlocks) -> None:
        self._policy = policy
        self._memo = memo
        self._key = key
        from .content_policy import ContentRules
        from .pii import detector_for

        content = policy.content
        judged = content.deny or content.prompt_injection != "off"
        self._rules: ContentRules | None = ContentRules.compile(content) if judged else None
        self._detector: PiiDetector | None = detector_for(policy.pii) if policy.pii.mode != "off" else None
        self.result = GuardedRequest()

    def judge(self, slots: list[Slot]) -> None:
        """Deny rules, prompt injection and `pii.mode: block` on the judged slots. The refusal
        names the rule or the kinds of data, never the text that matched."""
        rules, version, flags = self._rules, self._policy.version, []
        found: set[str] = set()
        for holder, name, kind, judged in slots:
            if not judged:
                continue
            text = holder[name]
            if rules is not None:
                rule = self._memo.remembered(version, "deny", text, lambda text: rules.judge(text, "input"))
                if rule is not None:
                    raise InvalidRequestError(f'This request was blocked by the content policy rule "{rule}".')
                if kind == "tool_result" and self._policy.content.prompt_injection != "off":
                    if self._memo.remembered(version, "injection", text, rules.injection):
                        if self._policy.content.prompt_injection == "block":
                            raise InvalidRequestError(
                                'This request was blocked by the content policy rule "prompt_injection": '
                                "a tool result reads like instructions to the model."
                            )
                        flags.append("prompt_injection")
            if self._policy.pii.mode == "block":
                found.update(span.entity for span in self._spans(text))
        if found:
            kinds = ", ".join(entity for entity in self._policy.pii.entities if entity in found)
            raise InvalidRequestError(
                f"This request was blocked by the personal data policy: it contains {kinds}, which this "
                "API key's policy does not allow."
            )
        self.result.flags = tuple(dict.fromkeys(flags))

    def _spans(self, text: str) -> list[Span]:
        detector = self._detector
        assert detector is not None
        return self._memo.remembered(self._policy.version, "pii", text, detector.find)

    def mask(self, slots: list[Slot]) -> None:
        """Every slot's personal data to placeholders (judged or not: the worker gets it all)."""
        if self._policy.pii.mode != "mask":
            return
        if self._key is None:
            raise ValueError("masking needs the account's placeholder key")
        restore_map = self.result.restore_map if self._policy.pii.restore else None
        for holder, name, kind, _ in slots:
            text = holder[name]
            if kind == "arguments":
                holder[name] = self._mask_arguments(text, restore_map)
                continue
            spans = self._spans(text)
            if spans:
                holder[name] = mask(text, spans, self._key, restore_map)
                self.result.masked += len(spans)

    def _mask_arguments(self, arguments: str, restore_map: dict[str, str] | None) -> str:
        """A chat tool call's arguments: the JSON's string values masked, the JSON written again
        (arguments that are not a JSON object are masked as text)."""
        assert self._key is not None
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            parsed = None
        if type(parsed) is not dict:
            spans = self._spans(arguments)
            self.result.masked += len(spans)
            return mask(arguments, spans, self._key, restore_map) if spans else arguments
        changed = False
        for holder, name, _, _ in list(_json_slots(parsed, False)):
            spans = self._spans(holder[name])
            if spans:
                holder[name] = mask(holder[name], spans, self._key, restore_map)
                self.result.masked += len(spans)
                changed = True
        if not changed:
            return arguments
        try:
            return orjson.dumps(parsed).decode()
        except orjson.JSONEncodeError:  # nested deeper than orjson writes: masked as text instead
            spans = self._spans(arguments)
            return mask(arguments, spans, self._key, restore_map) if spans else arguments


def _guard(
    slots: Callable[[dict[str, Any], bool], Iterator[Slot]],
    data: dict[str, Any],
    policy: Policy,
    key: bytes | None,
    memo: JudgedBlocks,
) -> GuardedRequest:
    guard = _Guard(policy, key, memo)
    found = list(slots(data, policy.content.scan == "all"))
    guard.judge(found)
    guard.mask(found)
    return guard.result


def guard_messages_request(
    data: dict[str, Any], policy: Policy, key: bytes | None, memo: JudgedBlocks
) -> GuardedRequest:
    """Judge an Anthropic Messages body (InvalidRequestError if a rule blocks it) and mask its
    personal data in place. `key`: the account's placeholder key (needed when masking)."""
    return _guard(_messages_slots, data, policy, key, memo)


def mask_texts(
    texts: dict[str, str], policy: Policy, key: bytes | None, memo: JudgedBlocks, into: GuardedRequest
) -> dict[str, str]:
    """Texts Parley made from the request (a PDF's text) masked like the request's own; the
    placeholders they gave go `into` the request's restore map."""
    guard = _Guard(policy, key, memo)
    guard.result = into
    masked = dict(texts)
    guard.mask([(masked, name, "text", False) for name in masked])
    return masked


def guard_chat_request(data: dict[str, Any], policy: Policy, key: bytes | None, memo: JudgedBlocks) -> GuardedRequest:
    """`guard_messages_request` for a Chat Completions body."""
    return _guard(_chat_slots, data, policy, key, memo)
