"""Deny rules and prompt-injection heuristics, compiled from a ContentPolicy and run on text.

Everything is matched on normalised text (`normalise`): NFKC, case-folded, invisible characters
dropped, whitespace runs collapsed to one space, so "ＢＯＭＢ", "Bo\\u200bmb" and "BOMB" are one word.

    rules = ContentRules.compile(policy.content)     # cached per policy
    rules.judge(text, "input")                       # the first deny rule that matches, or None
    rules.injection(tool_result_text)                # True when it reads like a prompt injection
    judge = StreamJudge(rules)                       # one per streamed text block
    judge.feed(delta) ... judge.flush()              # the text that may be sent; judge.rule once denied

Phrases match as substrings of the normalised text (surrounding spaces trimmed): "kill" also matches
"skill"; a tenant who wants whole words writes a pattern such as `\\bkill\\b`. All of a direction's
phrases are in one Aho-Corasick automaton; patterns are RE2 (linear time, no backtracking),
case-insensitive. A stream never sends a character of a phrase it denies, as long as the phrase's
raw occurrence is at most `hold_chars` characters long (the phrase plus HOLD_SLACK characters that
normalise away or collapse); a longer one is still caught, but its start may have been sent.
What a stream guarantees for patterns is in StreamJudge's docstring.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Literal

import ahocorasick
import re2

from .policy import ContentPolicy

__all__ = [
    "HOLD_SLACK",
    "PATTERN_HOLD",
    "PATTERN_WINDOW",
    "ContentRules",
    "StreamJudge",
    "normalise",
    "pattern_error",
]

HOLD_SLACK = 16
"""Raw characters a stream holds beyond the longest phrase: for zero-width characters, extra
spaces or combining marks inside a phrase's occurrence."""

PATTERN_HOLD = 64
"""The least a stream holds back when a policy has patterns: a pattern match of up to 63 raw
characters (PATTERN_HOLD - 1: the character after it decides `\\b`) is caught before any of it is sent."""

PATTERN_WINDOW = 1024
"""Normalised characters of a streamed block that patterns are run over: a longer match is not caught."""

# The characters normalise drops.
_INVISIBLE = (
    "\u00ad\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"
)
_INVISIBLE_SET = frozenset(_INVISIBLE)
# Whitespace other than " " that NFKC leaves as it is (no-break and fixed-width spaces become " ").
_ASCII_SPACES = "\n\t\r\x0b\x0c\x1c\x1d\x1e\x1f"
_OTHER_SPACES = _ASCII_SPACES + "\x85\u1680\u2028\u2029"
_SPACE_RUN = re.compile("   *")  # not " {2,}": a two-space prefix makes the scan several times faster
# A tail of non-starters (combining marks) longer than this is normalised without waiting for a starter.
_MAX_TAIL = 64


def normalise(text: str) -> str:
    """The text deny rules are matched on: NFKC, case-folded, invisible characters removed (zero-width
    U+200B..U+200D, U+2060, U+FEFF; soft hyphen U+00AD; U+180E; marks and bidirectional controls
    U+200E, U+200F, U+202A..U+202E, U+2066..U+2069; invisible operators U+2061..U+2064), and every
    run of whitespace (str.isspace) collapsed to one space (not stripped). Plain ASCII takes a fast
    path with the same result: lower(), then only the whitespace work it needs."""
    if text.isascii():
        text = text.lower()
        # isprintable() reads every character of a long text; `in` is a memchr per kind
        if len(text) > 256 or not text.isprintable():
            for char in _ASCII_SPACES:
                if char in text:
                    text = text.replace(char, " ")
    else:
        if not text.isprintable():  # control, format (invisible) and line-separating characters
            for char in _INVISIBLE:
                if char in text:
                    text = text.replace(char, "")
            for char in _OTHER_SPACES:
                if char in text:
                    text = text.replace(char, " ")
        text = unicodedata.normalize("NFKC", text).casefold()
    if "  " in text:
        text = _SPACE_RUN.sub(" ", text)
    return text


def _options() -> re2.Options:
    options = re2.Options()
    options.case_sensitive = False
    options.never_capture = True
    options.log_errors = False
    return options


_OPTIONS = _options()
_EMPTY_PROBES = (b"", b" ", b"a", b"a b", b"0")


def _re2_error(pattern: str) -> str | None:
    try:
        re2.compile(pattern, _OPTIONS)
    except re2.error as error:
        reason = error.args[0] if error.args else "invalid pattern"
        return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
    return None


def pattern_error(pattern: str) -> str | None:
    """Why a deny pattern is refused, or None: RE2 refuses it (a syntax error, or a construct RE2
    does not have such as a backreference or a lookaround), or it can match empty text (it would
    deny everything)."""
    reason = _re2_error(pattern)
    if reason is not None:
        return f"not a valid RE2 pattern ({reason.partition(': ')[0]})"
    compiled = re2.compile(pattern, _OPTIONS)
    for probe in _EMPTY_PROBES:
        match = compiled.search(probe)
        if match is not None and match.start() == match.end():
            return "matches the empty string, so it would deny every text"
    return None


class _Side:
    """One direction's rules: its phrases' automaton and its patterns, by rule index."""

    __slots__ = ("automaton", "first_phrase_rule", "patterns", "any_pattern", "active")

    def __init__(self, phrases: list[tuple[str, int]], patterns: list[tuple[int, str]]) -> None:
        self.automaton: ahocorasick.Automaton | None = None
        self.first_phrase_rule = min((rule for _, rule in phrases), default=-1)
        if phrases:
            automaton = ahocorasick.Automaton()
            for phrase, rule in phrases:
                if not automaton.exists(phrase):  # the same phrase in a later rule: the first one wins
                    automaton.add_word(phrase, (rule, len(phrase)))
            automaton.make_automaton()
            self.automaton = automaton
        self.patterns = tuple((rule, re2.compile(pattern, _OPTIONS)) for rule, pattern in patterns)
        # One pass for "does any pattern match": the individual patterns only run once it does.
        self.any_pattern = None
        if len(patterns) > 1:
            try:
                self.any_pattern = re2.compile("|".join(f"(?:{pattern})" for _, pattern in patterns), _OPTIONS)
            except re2.error:
                pass
        self.active = bool(phrases or patterns)

    def pattern_rule(self, data: bytes, below: int) -> int:
        """The smallest rule index below `below` with a pattern that matches `data`, else `below`."""
        if not self.patterns or self.patterns[0][0] >= below:
            return below
        if self.any_pattern is not None and self.any_pattern.search(data) is None:
            return below
        for rule, pattern in self.patterns:
            if rule >= below:
                break
            if pattern.search(data) is not None:
                return rule
        return below


class ContentRules:
    """A ContentPolicy compiled: each direction's phrases (normalised) in one Aho-Corasick automaton,
    its patterns compiled with RE2 (case-insensitive, run on normalised text). Build it with
    `ContentRules.compile(policy)`, which caches one per policy.

    hold_chars: how many trailing characters a stream holds back (the longest phrase plus
    HOLD_SLACK; at least PATTERN_HOLD when there are patterns; 0 without rules).
    has_output_rules: whether any deny rule judges answers.
    """

    __slots__ = ("hold_chars", "has_output_rules", "_names", "_sides")

    def __init__(self, policy: ContentPolicy) -> None:
        self._names: tuple[str, ...] = tuple(rule.name for rule in policy.deny)
        sides: dict[Literal["input", "output"], tuple[list[tuple[str, int]], list[tuple[int, str]]]] = {
            "input": ([], []),
            "output": ([], []),
        }
        longest = 0
        any_patterns = False
        for index, rule in enumerate(policy.deny):
            for pattern in rule.patterns:
                reason = _re2_error(pattern)
                if reason is not None:
                    raise ValueError(f"deny rule {rule.name!r}: pattern {pattern!r}: {reason}")
            phrases = [phrase for phrase in (normalise(raw).strip(" ") for raw in rule.phrases) if phrase]
            longest = max([longest, *map(len, phrases)])
            any_patterns = any_patterns or bool(rule.patterns)
            for side, (side_phrases, side_patterns) in sides.items():
                if rule.applies_to(side):
                    side_phrases.extend((phrase, index) for phrase in phrases)
                    side_patterns.extend((index, pattern) for pattern in rule.patterns)
        self._sides = {side: _Side(phrases, patterns) for side, (phrases, patterns) in sides.items()}
        active = any(side.active for side in self._sides.values())
        hold = longest + HOLD_SLACK if longest else 0
        self.hold_chars: int = max(hold, PATTERN_HOLD if any_patterns else 0) if active else 0
        self.has_output_rules: bool = self._sides["output"].active

    @classmethod
    def compile(cls, policy: ContentPolicy) -> ContentRules:
        """The compiled rules of `policy`, from a cache keyed on the (frozen) policy."""
        return _compiled(policy)

    def judge(self, text: str, direction: Literal["input", "output"]) -> str | None:
        """The name of the first deny rule (in policy order) that applies to `direction` and whose
        phrase or pattern occurs in normalise(text); None when the text is clean."""
        side = self._sides[direction]
        if not side.active:
            return None
        normalised = normalise(text)
        best = len(self._names)
        if side.automaton is not None:
            for _, (rule, _) in side.automaton.iter(normalised):
                if rule < best:
                    best = rule
                    if rule == side.first_phrase_rule:
                        break
        if side.patterns:
            best = side.pattern_rule(normalised.encode(), best)
        return self._names[best] if best < len(self._names) else None

    def injection(self, text: str) -> bool:
        """Whether `text` (a tool result, a fetched document) reads like a prompt injection, by the
        heuristics at the end of this module (on normalised text). Independent of the deny rules."""
        return _injection().search(normalise(text).encode()) is not None

    def _side(self, direction: Literal["input", "output"]) -> _Side:
        return self._sides[direction]


@functools.lru_cache(maxsize=256)
def _compiled(policy: ContentPolicy) -> ContentRules:
    return ContentRules(policy)


def _starts_unit(char: str) -> bool:
    """Whether normalisation can never join `char` to the character before it: then the text before
    it normalises the same alone as in context (NFKC composes a base with the marks after it)."""
    if char < "\u0300":
        return char != "\u00ad"
    if char in _INVISIBLE_SET or unicodedata.category(char)[0] == "M":
        return False
    code = ord(char)
    # Hangul jamo (conjoining, compatibility, halfwidth) and halfwidth kana voicing marks compose
    # with the character before them under NFKC.
    return not (0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F or 0xFF9E <= code <= 0xFFDF)


def _last_unit_start(text: str, start: int) -> int:
    """The index of the last character at or after `start` that starts a unit (`_starts_unit`)."""
    for index in range(len(text) - 1, start - 1, -1):
        if _starts_unit(text[index]):
            return index
    return len(text) if len(text) - start > _MAX_TAIL else start


def _suffix_start(raw: str, count: int) -> int:
    """The largest index i where raw[i:] normalises to at least `count` characters (not counting a
    leading space, which may collapse into the text before), among indexes that start a unit; 0 if
    none does. Cutting `raw` there never keeps a character of those last `count`."""
    if raw.isascii():
        candidates: range | list[int] = range(len(raw) + 1)
    else:
        candidates = [0, *(index for index in range(1, len(raw)) if _starts_unit(raw[index])), len(raw)]

    def size(index: int) -> int:
        normalised = normalise(raw[candidates[index] :])
        return len(normalised) - (normalised[:1] == " ")

    low, high = 0, len(candidates) - 1  # size() does not grow with the index
    if size(low) < count:
        return 0
    while low < high:
        middle = (low + high + 1) // 2
        if size(middle) >= count:
            low = middle
        else:
            high = middle - 1
    return candidates[low]


class StreamJudge:
    """Judges one streamed text block for one direction (normally "output"), incrementally.

    `feed(text)` returns what may be sent now: everything but the last `rules.hold_chars` characters
    (and any characters a later one could still change in normalisation, such as a letter that a
    combining accent may follow). Phrases are matched exactly whatever the chunking: the automaton's
    state carries across feeds, and text is normalised in pieces that normalise alone as in context.

    Patterns are run, at every feed, over the last PATTERN_WINDOW (1,024) normalised characters of the
    block, with the last character kept as context, so `\\b` and `$` are judged as they will be on the
    whole text; `$` can match only at flush. A match is caught if it lies within that window; nothing of
    it is sent if it spans at most hold_chars - 1 raw characters (hold_chars is at least PATTERN_HOLD
    when there are patterns). A longer match stops the stream too, but its start may have been sent.

    When a rule matches, `rule` is set to its name and the feed returns only the clean text before the
    earliest match found (cut before the character the match starts in, or a little earlier where
    normalisation joins characters; never a character of the match). Later feeds return "".
    """

    __slots__ = (
        "rule",
        "_rules",
        "_side",
        "_hold",
        "_pending",
        "_tail",
        "_space",
        "_length",
        "_window",
        "_automaton",
        "_phrase_tail",
        "_first",
    )

    def __init__(self, rules: ContentRules, direction: Literal["input", "output"] = "output") -> None:
        self.rule: str | None = None
        self._rules = rules
        self._side = rules._side(direction)
        self._hold = rules.hold_chars if self._side.active else 0
        self._pending = ""  # raw text not returned yet
        self._tail = 0  # how many of its last characters are not normalised yet
        self._space = False  # whether the normalised text so far ends with a space
        self._length = 0  # normalised characters so far
        self._window = ""  # the last PATTERN_WINDOW normalised characters, when there are patterns
        self._automaton = self._side.automaton
        self._phrase_tail = ""  # the normalised text's last `_hold` characters, searched again with the next piece
        self._first = 0  # once a rule matched: where the earliest match starts in the normalised text

    def feed(self, text: str) -> str:
        """The text that may be sent now ("" once a rule has matched)."""
        if self.rule is not None or not text:
            return ""
        hold = self._hold
        if not hold:
            return text
        pending = self._pending + text
        size = len(pending)
        start = size - self._tail - len(text)
        end = size - 1 if text.isascii() else _last_unit_start(pending, start)
        if end > start:
            raw = pending[start:end]
            piece = raw.lower() if raw.isascii() and raw.isprintable() and "  " not in raw else normalise(raw)
            if piece and piece[0] == " " and self._space:
                piece = piece[1:]
            if piece:
                self._space = piece[-1] == " "
                self._length += len(piece)
                found = self._phrase_matches(piece)
                if (found or self._side.patterns) and self._matched(piece, found, final=False):
                    return self._deny(pending, end)
        self._tail = size - end
        cut = end - hold + 1
        if cut <= 0:
            self._pending = pending
            return ""
        self._pending = pending[cut:]
        return pending[:cut]

    def flush(self) -> str:
        """At the block's end: the held text if it is clean, else its clean start (or "") and `rule` set."""
        if self.rule is not None:
            return ""
        pending, self._pending = self._pending, ""
        if not self._hold:
            return pending
        piece = normalise(pending[len(pending) - self._tail :])
        self._tail = 0
        if piece and piece[0] == " " and self._space:
            piece = piece[1:]
        self._length += len(piece)
        found = self._phrase_matches(piece) if piece else []
        if self._matched(piece, found, final=True):
            return self._deny(pending, len(pending))
        return pending

    def _phrase_matches(self, piece: str) -> list[tuple[int, tuple[int, int]]]:
        """The phrases that end in `piece`, the newest normalised text: (where each ends in the
        block's normalised text, (rule, length)). A new search of the last characters before it and
        the piece, each time: pyahocorasick's `iter.set()`, which would carry the automaton's state
        over, corrupts memory when the two texts differ in width (it keeps the old text's ownership
        flag: an astral character, an emoji, then ASCII frees a buffer it does not own)."""
        automaton = self._automaton
        if automaton is None:
            return []
        tail = self._phrase_tail
        text = tail + piece
        start = self._length - len(text)  # where `text` starts in the block's normalised text
        self._phrase_tail = text[-self._hold :]
        return [(start + end, found) for end, found in automaton.iter(text) if end >= len(tail)]

    def _matched(self, piece: str, found: list[tuple[int, tuple[int, int]]], final: bool) -> bool:
        """Whether a rule matched with `piece`, the newest normalised text: `found`, the phrases that
        end in it. Sets `rule` and `_first`."""
        names = self._rules._names
        rule, first = len(names), self._length
        if found:
            for end, (phrase_rule, size) in found:
                rule = min(rule, phrase_rule)
                first = min(first, end - size + 1)
        if self._side.patterns and (piece or final):
            window = self._window + piece
            if len(window) > PATTERN_WINDOW:
                window = window[-PATTERN_WINDOW:]
            self._window = window
            pattern = self._patterns(window, final)
            if pattern is not None:
                rule = min(rule, pattern[0])
                first = min(first, pattern[1])
        if rule == len(names):
            return False
        self.rule = names[rule]
        self._first = first
        return True

    def _patterns(self, window: str, final: bool) -> tuple[int, int] | None:
        """The smallest rule index whose pattern matches in the window, and the earliest start of a
        match (an index in the block's normalised text)."""
        if not window:
            return None
        data = window.encode()
        start = len(window[0].encode()) if self._length > len(window) else 0  # the first one is context
        end = len(data) if final else len(data) - len(window[-1].encode())
        side = self._side
        if side.any_pattern is not None and side.any_pattern.search(data, start, end) is None:
            return None
        rule, first = None, None
        for pattern_rule, pattern in side.patterns:
            match = pattern.search(data, start, end)
            if match is not None:
                at = len(data[: match.start()].decode())
                rule = pattern_rule if rule is None else min(rule, pattern_rule)
                first = at if first is None else min(first, at)
        if rule is None or first is None:
            return None
        return rule, self._length - len(window) + first

    def _deny(self, pending: str, end: int) -> str:
        """The clean text of `pending` before the match `_matched` found in its first `end` characters."""
        self._pending, self._window, self._phrase_tail = "", "", ""
        cut = _suffix_start(pending[:end], self._length - self._first)
        return pending[:cut]


# Prompt-injection heuristics, on normalised text (lower case, single spaces). Each asks for words
# that ordinary code and documentation rarely put together: "ignore this file", "previous versions",
# "send the request to https://..." must not match.
_INJECTION_PARTS = (
    # "ignore all previous instructions", "disregard the above directions", "forget your prior prompts"
    r"\b(?:ignore|disregard|forget|override|bypass|neglect) (?:(?:all|any|every|of|the|your|my|these|those) ){0,3}"
    r"(?:previous|prior|above|earlier|preceding|foregoing|former|original|initial) "
    r"(?:(?:system|safety|developer) )?(?:instructions?|directions|directives|prompts?|guidance)\b",
    # "ignore your instructions", "disregard all your guidelines", "ignore the instructions you were given"
    r"\b(?:ignore|disregard|forget|override|bypass) (?:all )?(?:of )?your (?:(?:previous|prior|original|initial"
    r"|current|safety) )?(?:instructions|directives|programming|guidelines|restrictions)\b",
    r"\b(?:ignore|disregard|forget) (?:all )?(?:of )?the instructions (?:you were|you've been|you have been) given\b",
    # "disregard the system prompt", "reveal your system prompt"
    r"\b(?:ignore|disregard|forget|override|bypass|reveal|leak) (?:(?:the|your|my|this|all|any) )?"
    r"(?:system|developer) (?:prompt|message|instructions)\b",
    # "you are now DAN", "you are now in developer mode", "you are now an unrestricted AI"
    r"\byou are now (?:(?:in|entering|operating in) )?(?:developer|god|jailbreak|jailbroken|dan|unrestricted) mode\b",
    r"\byou are now (?:dan\b|(?:an? )?(?:unrestricted|unfiltered|uncensored|jailbroken|evil|rogue)"
    r" (?:ai|assistant|model|chatbot|bot|persona|character|llm)\b)",
    r"\byou are now no longer (?:bound|restricted|limited|an? (?:ai|assistant|language model))\b",
    r"\byou are now free (?:from|of) (?:all |any |your )?(?:rules|restrictions|guidelines|constraints|filters)\b",
    # "new instructions:", "real instructions:"
    r"\b(?:new|real|actual|true|secret|hidden) (?:system )?instructions ?:",
    # role markers of chat templates, forged
    r"<\|im_start\|> ?(?:system|assistant|developer)\b",
    r"<\|system\|>",
    r"<\|start_header_id\|> ?system ?<\|end_header_id\|>",
    r"\[/?inst\]",
    r"<<sys>>",
    r"(?:^| )#{2,6} ?system ?:",
    # a forged end of the tool result, to make what follows look like the conversation
    r"</(?:tool_result|tool_results|function_result|function_results|tool_response|tool_output)>",
    # hiding the action from the user
    r"\b(?:do not|don['’]?t|never) (?:tell|inform|mention (?:this|it|that) to|reveal (?:this|it|that) to) "
    r"(?:the )?(?:user|human)\b",
    r"\bkeep (?:this|it) (?:a )?secret from (?:the )?(?:user|human)\b",
    # exfiltration: send what the model was given to a URL
    r"\b(?:send|post|upload|forward|transmit|exfiltrate|leak|email|e-mail|submit)\b.{0,80}?"
    r"(?:\b(?:this|our|the above|the previous) (?:conversation|chat)|\bchat (?:history|log|transcript)"
    r"|\bmessage history|\bprevious messages|\bsystem prompt|\bthe user['’]?s? (?:data|messages?|files?|passwords?"
    r"|credentials|emails?|personal|private|secrets?|api keys?|tokens?|history|conversation|info)"
    r"|\ball (?:of )?(?:the |your |their )?(?:secrets|credentials|passwords|api keys|tokens|environment variables"
    r"|env vars)|\.env\b|~/\.ssh|\bid_rsa\b|\.aws/credentials|/etc/passwd)"
    r".{0,80}? to (?:https?:|ftp:|//)",
)
_INJECTION = "|".join(f"(?:{part})" for part in _INJECTION_PARTS)


@functools.cache
def _injection() -> re2._Regexp:
    return re2.compile(_INJECTION, _OPTIONS)
