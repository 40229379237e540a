"""An answer held to its request's policy on its way to the client, buffered or streamed.

Each text block (and each tool call's arguments) goes through one pipe of three steps:
1. mask what the model itself wrote (`pii.mask_output`);
2. restore the request's placeholders to their values (`pii.restore`), JSON-escaped inside tool
   arguments; a placeholder split across chunks is still restored;
3. judge the text against the output deny rules; a match refuses the answer.

A stream holds back only what a step still needs to decide: the start of a possible placeholder,
the last characters of a possible deny phrase, the last `_MASK_HOLD_CHARS` characters when output
masking is on. Held text is sent at the block's end.

A refused answer ends the way Anthropic's own streaming classifiers end one: buffered,
`stop_reason: "refusal"` with `stop_details`, the content cut before the match; streamed, the open
block closed and `message_delta` with `stop_reason: "refusal"` and `stop_details`, then
`message_stop`. Under an output deny rule a tool call is held whole until its block ends (a client
must never receive half of a call's JSON). Thinking blocks pass untouched (their signatures sign
them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import orjson

from .placeholders import StreamRestorer, mask
from .policy import Policy
from .stream import Event

if TYPE_CHECKING:  # loaded by the first guarded answer (as in request_guard)
    from .content_policy import ContentRules, StreamJudge
    from .pii import PiiDetector

__all__ = ["AnswerGuard", "ChatAnswerGuard", "TextPipe", "answer_guard_for", "chat_answer_guard_for", "refusal_details"]

_MASK_HOLD_CHARS = 96  # longer than any value the output masker finds (a PEM block excepted)


def refusal_details(rule: str) -> dict[str, Any]:
    """Anthropic's `stop_details` of a refusal, naming the account's rule."""
    return {
        "type": "refusal",
        "category": None,
        "explanation": f'The answer was stopped by the content policy rule "{rule}".',
    }


class _StreamMasker:
    """Masks personal data in streamed text, holding back the last `_MASK_HOLD_CHARS` characters
    (and any value that reaches into them) until more text shows where the value ends."""

    def __init__(self, detector: PiiDetector, key: bytes) -> None:
        self._detector = detector
        self._key = key
        self._held = ""

    def feed(self, text: str) -> str:
        held = self._held + text
        if len(held) <= _MASK_HOLD_CHARS:
            self._held = held
            return ""
        spans = self._detector.find(held)
        cut = len(held) - _MASK_HOLD_CHARS
        for span in spans:
            if span.start < cut < span.end:
                cut = span.start
                break
        self._held = held[cut:]
        return mask(held[:cut], [span for span in spans if span.end <= cut], self._key)

    def flush(self) -> str:
        held, self._held = self._held, ""
        spans = self._detector.find(held) if held else []
        return mask(held, spans, self._key) if spans else held


class TextPipe:
    """One block's text through masking, restoring and judging (module docstring)."""

    def __init__(
        self,
        masker: _StreamMasker | None,
        restore_map: Mapping[str, str],
        rules: ContentRules | None,
        json_escape: bool = False,
    ) -> None:
        self._masker = masker
        from .content_policy import StreamJudge

        self._restorer = StreamRestorer(restore_map, json_escape) if restore_map else None
        self._judge: StreamJudge | None = StreamJudge(rules, "output") if rules is not None else None

    @property
    def rule(self) -> str | None:
        """The deny rule the text broke, once it has."""
        return self._judge.rule if self._judge is not None else None

    def feed(self, text: str) -> str:
        if self._masker is not None:
            text = self._masker.feed(text)
        if self._restorer is not None and text:
            text = self._restorer.feed(text)
        if self._judge is not None and text:
            text = self._judge.feed(text)
        return text

    def flush(self) -> str:
        text = self._masker.flush() if self._masker is not None else ""
        if self._restorer is not None:
            text = self._restorer.feed(text) + self._restorer.flush() if text else self._restorer.flush()
        if self._judge is not None:
            text = (self._judge.feed(text) if text else "") + self._judge.flush()
        return text

    def whole(self, text: str) -> str:
        """A buffered text: all of it through the pipe."""
        return self.feed(text) + self.flush()


class _Pipes:
    """What an answer's pipes are made of, from the policy and the request's guarding."""

    def __init__(self, policy: Policy, restore_map: Mapping[str, str], key: bytes | None) -> None:
        from .content_policy import ContentRules
        from .pii import detector_for

        pii = policy.pii
        self.restore_map: Mapping[str, str] = restore_map if pii.mode == "mask" and pii.restore else {}
        self._detector = detector_for(pii) if pii.mode == "mask" and pii.mask_output and key is not None else None
        self._key = key
        rules = ContentRules.compile(policy.content) if policy.content.deny else None
        self.rules = rules if rules is not None and rules.has_output_rules else None

    @property
    def needed(self) -> bool:
        return bool(self.restore_map) or self._detector is not None or self.rules is not None

    def pipe(self, json_escape: bool = False, judged: bool = True) -> TextPipe:
        """`judged`: with the output rules (off where the caller judges the whole text itself)."""
        masker = _StreamMasker(self._detector, self._key) if self._detector is not None and self._key else None
        return TextPipe(masker, self.restore_map, self.rules if judged else None, json_escape)


def _restore_values(node: Any, pipes: _Pipes) -> Any:
    """A tool input's string values through a pipe each (restored, masked); keys untouched."""
    if type(node) is str:  # judged after, as the whole input's JSON
        return pipes.pipe(judged=False).whole(node)
    if type(node) is dict:
        return {name: _restore_values(value, pipes) for name, value in node.items()}
    if type(node) is list:
        return [_restore_values(value, pipes) for value in node]
    return node


class AnswerGuard:
    """One Anthropic answer's guard: `message` for a buffered answer, `events` for a stream.

    `usage`: the stream's usage so far, for the `message_delta` of a refusal."""

    def __init__(self, pipes: _Pipes, usage: Callable[[], dict[str, int]] | None = None) -> None:
        self._pipes = pipes
        self._usage = usage
        self._open: dict[int, tuple[TextPipe, str]] = {}  # index: (pipe, the delta's text field)
        self._held_start: dict[int, Event] = {}  # a block's start, sent with its first text
        self._held_tool: dict[int, list[Event]] = {}  # a whole tool call, under output rules
        self.refused: str | None = None

    # -- buffered ------------------------------------------------------------------------------

    def message(self, message: dict[str, Any]) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for block in message.get("content") or ():
            kind = block.get("type")
            if kind == "text":
                pipe = self._pipes.pipe()
                text = pipe.whole(block["text"])
                if text:
                    content.append({**block, "text": text})
                if pipe.rule is not None:
                    return self._refused_message(message, content, pipe.rule)
            elif kind == "tool_use":
                restored = {**block, "input": _restore_values(block.get("input"), self._pipes)}
                rules = self._pipes.rules
                if rules is not None:
                    rule = rules.judge(orjson.dumps(restored["input"]).decode(), "output")
                    if rule is not None:
                        return self._refused_message(message, content, rule)
                content.append(restored)
            else:
                content.append(block)
        return {**message, "content": content}

    @staticmethod
    def _refused_message(message: dict[str, Any], content: list[dict[str, Any]], rule: str) -> dict[str, Any]:
        return {
            **message,
            "content": content,
            "stop_reason": "refusal",
            "stop_sequence": None,
            "stop_details": refusal_details(rule),
        }

    # -- streamed ------------------------------------------------------------------------------

    def events(self, events: list[Event]) -> list[Event]:
        """The events to send for these (none once the answer is refused)."""
        out: list[Event] = []
        for event in events:
            if self.refused is not None:
                break
            name, data = event
            if name == "content_block_delta":
                self._delta(event, out)
            elif name == "content_block_start":
                self._start(event, out)
            elif name == "content_block_stop":
                self._stop(event, out)
            else:
                out.append(event)
        return out

    def _start(self, event: Event, out: list[Event]) -> None:
        data = event[1]
        index, kind = data["index"], data["content_block"].get("type")
        if kind == "text":
            self._open[index] = (self._pipes.pipe(), "text")
            self._held_start[index] = event
        elif kind == "tool_use":
            self._open[index] = (self._pipes.pipe(json_escape=True), "partial_json")
            if self._pipes.rules is not None:
                self._held_tool[index] = [event]
            else:
                out.append(event)
        else:
            out.append(event)

    def _send(self, index: int, event: Event, out: list[Event]) -> None:
        held = self._held_tool.get(index)
        if held is not None:
            held.append(event)
            return
        start = self._held_start.pop(index, None)
        if start is not None:
            out.append(start)
        out.append(event)

    def _send_text(self, index: int, field: str, text: str, out: list[Event]) -> None:
        delta = {"type": "text_delta", "text": text} if field == "text" else {"type": "input_json_delta", field: text}
        self._send(index, ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}), out)

    def _delta(self, event: Event, out: list[Event]) -> None:
        data = event[1]
        index = data["index"]
        opened = self._open.get(index)
        delta = data["delta"]
        if opened is None or opened[1] not in delta:
            self._send(index, event, out)  # after the block's start, if that is still held
            return
        pipe, field = opened
        text = pipe.feed(delta[field])
        if pipe.rule is not None:
            self._refuse(index, text, field, out, pipe.rule)
        elif text:
            self._send(index, ("content_block_delta", {**data, "delta": {**delta, field: text}}), out)

    def _stop(self, event: Event, out: list[Event]) -> None:
        index = event[1]["index"]
        opened = self._open.pop(index, None)
        if opened is not None:
            pipe, field = opened
            text = pipe.flush()
            if pipe.rule is not None:
                self._refuse(index, text, field, out, pipe.rule)
                return
            if text:
                self._send_text(index, field, text, out)
            out.extend(self._held_tool.pop(index, ()))
        start = self._held_start.pop(index, None)
        if start is not None:  # a block that stayed empty is sent empty, as it came
            out.append(start)
        out.append(event)

    def _refuse(self, index: int, text: str, field: str, out: list[Event], rule: str) -> None:
        """The clean text before the match, the block closed (a block with nothing sent is not
        sent at all), then the refusal's message_delta and message_stop."""
        self.refused = rule
        if self._held_tool.pop(index, None) is None:
            if text and field == "text":
                self._send_text(index, field, text, out)
            if index not in self._held_start:
                out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        self._held_start.pop(index, None)
        usage = self._usage() if self._usage is not None else {"output_tokens": 0}
        out.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "refusal", "stop_sequence": None, "stop_details": refusal_details(rule)},
                    "usage": usage,
                },
            )
        )
        out.append(("message_stop", {"type": "message_stop"}))


def answer_guard_for(
    policy: Policy,
    restore_map: Mapping[str, str],
    key: bytes | None,
    usage: Callable[[], dict[str, int]] | None = None,
) -> AnswerGuard | None:
    """The answer's guard, or None when the policy leaves answers as they come."""
    pipes = _Pipes(policy, restore_map, key)
    return AnswerGuard(pipes, usage) if pipes.needed else None


class ChatAnswerGuard:
    """The same guard for a Chat Completions answer: `completion` buffered, `chunk` streamed.
    A refusal ends the choice with `finish_reason: "content_filter"` (OpenAI's)."""

    def __init__(self, pipes: _Pipes) -> None:
        self._pipes = pipes
        self._content: dict[int, TextPipe] = {}
        self._arguments: dict[tuple[int, int], TextPipe] = {}
        self.refused: str | None = None

    def completion(self, answer: dict[str, Any]) -> dict[str, Any]:
        choices = []
        for choice in answer.get("choices") or ():
            message = dict(choice.get("message") or {})
            choice = {**choice, "message": message}
            if type(message.get("content")) is str:
                pipe = self._pipes.pipe()
                message["content"] = pipe.whole(message["content"])
                if pipe.rule is not None:
                    self._refuse_choice(choice, pipe.rule)
            calls = []
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                if self.refused is None and type(function.get("arguments")) is str:
                    pipe = self._pipes.pipe(json_escape=True)
                    function = {**function, "arguments": pipe.whole(function["arguments"])}
                    if pipe.rule is not None:
                        self._refuse_choice(choice, pipe.rule)
                calls.append({**call, "function": function})
            if calls and choice.get("finish_reason") != "content_filter":
                message["tool_calls"] = calls
            choices.append(choice)
        return {**answer, "choices": choices}

    def _refuse_choice(self, choice: dict[str, Any], rule: str) -> None:
        self.refused = rule
        choice["finish_reason"] = "content_filter"
        choice["message"].pop("tool_calls", None)

    def chunk(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """The chunk to send (its texts restored, held back or cut); after a refusal its choice
        ends with `content_filter`."""
        for choice in chunk.get("choices") or ():
            if type(choice) is not dict:
                continue
            position = choice.get("index", 0)
            if type(position) is not int:
                position = 0
            finishing = bool(choice.get("finish_reason"))
            delta = choice.get("delta")
            if delta is None and finishing:  # a finish without a delta still sends what is held
                delta = choice["delta"] = {}
            if type(delta) is not dict:
                continue
            content = delta.get("content")
            if type(content) is str or (finishing and position in self._content):
                pipe = self._content.setdefault(position, self._pipes.pipe())
                text = pipe.feed(content) if type(content) is str else ""
                if finishing:
                    text += pipe.flush()
                delta["content"] = text
                if pipe.rule is not None:
                    self.refused = pipe.rule
                    choice["finish_reason"] = "content_filter"
                    delta.pop("tool_calls", None)
                    continue
            calls = delta.get("tool_calls")
            for call in calls if type(calls) is list else ():
                function = call.get("function") if type(call) is dict else None
                if type(function) is dict and type(function.get("arguments")) is str:
                    pipe = self._arguments.setdefault(
                        (position, call.get("index", 0)), self._pipes.pipe(json_escape=True)
                    )
                    function["arguments"] = pipe.feed(function["arguments"])
                    if pipe.rule is not None:
                        self.refused = pipe.rule
                        choice["finish_reason"] = "content_filter"
            if finishing and self.refused is None:
                for (owner, call_index), pipe in list(self._arguments.items()):
                    if owner != position:
                        continue
                    held = pipe.flush()
                    del self._arguments[(owner, call_index)]
                    if pipe.rule is not None:
                        self.refused = pipe.rule
                        choice["finish_reason"] = "content_filter"
                    elif held:
                        delta.setdefault("tool_calls", []).append(
                            {"index": call_index, "function": {"arguments": held}}
                        )
        return chunk


def chat_answer_guard_for(policy: Policy, restore_map: Mapping[str, str], key: bytes | None) -> ChatAnswerGuard | None:
    pipes = _Pipes(policy, restore_map, key)
    return ChatAnswerGuard(pipes) if pipes.needed else None
