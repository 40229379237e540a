"""Tool input from a worker's tool-call arguments, which must be (the start of) one JSON object.

`ObjectPrefix` is fed a call's arguments text in pieces, as they stream, and says at every
point whether the text so far is still a prefix of one JSON object (`broken` once it is not), whether
the object is complete, and which shortest suffix would complete it (`completion`). It accepts what
orjson accepts, in Parley's limits, and nothing else: RFC 8259 strictly (no NaN, no trailing
commas, no single quotes, control characters escaped, surrogate escapes in pairs), whitespace
before and after the object, numbers that are finite as a double, at most MAX_JSON_DEPTH levels
(what Parley's request validation accepts as tool input in the client's next turn).

Work is linear in the text: each piece is scanned once, runs of plain string characters, digits
and whitespace by a regular expression, and no state grows with the text except the open
containers (at most MAX_JSON_DEPTH) and the digits of a number that may not be finite.

`arguments_to_input` is the buffered rule built on it: "" or null → {}, an object → itself, a
prefix of one (a call cut by the output limit) → completed, anything else → ApiError.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from .anthropic_types import MAX_JSON_DEPTH
from .errors import ApiError

__all__ = ["ObjectPrefix", "arguments_error", "arguments_to_input", "read_arguments"]

_WHITESPACE = re.compile(r"[ \t\n\r]*")
# String characters up to the next quote, backslash or control character, and whole escapes other
# than surrogates (a pair is checked character by character, as is an escape cut by a piece's end).
_PLAIN = re.compile(r'(?:[^"\\\x00-\x1f]+|\\["\\/bfnrt]|\\u(?![dD][89a-fA-F])[0-9a-fA-F]{4})*')
_DIGITS = re.compile(r"[0-9]*")
_HEX = frozenset("0123456789abcdefABCDEF")
_SIMPLE_ESCAPES = frozenset('"\\/bfnrt')
_DELIMITERS = frozenset(" \t\n\r,]}")
_LITERALS = {"t": "rue", "f": "alse", "n": "ull"}
# A number with this many integer digits, or an exponent, may be infinite as a double.
_LONG_NUMBER = 309

# Where the checker is: between tokens, inside a string, a number or a literal.
_START = 0  # before the object's "{"
_FIRST_KEY = 1  # after "{": a key or "}"
_KEY = 2  # after "," in an object: a key
_COLON = 3  # after a key
_VALUE = 4  # after ":" or "," in an array: a value
_FIRST_ITEM = 5  # after "[": a value or "]"
_AFTER = 6  # after a value: "," or the container's end
_STRING = 7
_ESCAPE = 8  # after a backslash in a string
_UNICODE = 9  # inside \uXXXX
_LOW_BACKSLASH = 10  # after a high surrogate escape: "\" must follow
_LOW_U = 11  # ... then "u"
_NUMBER = 12
_LITERAL = 13
_DONE = 14  # after the object's "}"
_BROKEN = 15

# What completes the text in a mode whose completion does not depend on what came before.
_COMPLETING_HEADS = {
    _STRING: '"',
    _ESCAPE: '\\"',  # the pending backslash escapes a backslash
    _LOW_BACKSLASH: '\\udc00"',
    _LOW_U: 'udc00"',
    _KEY: '"":null',
    _COLON: ":null",
    _VALUE: "null",
}

# The parts of a number, in order.
_MINUS, _ZERO, _INT, _POINT, _FRACTION, _E, _E_SIGN, _EXPONENT = range(8)
_NUMBER_CAN_END = frozenset((_ZERO, _INT, _FRACTION, _EXPONENT))
_NUMBER_PADDING = {_MINUS: "0", _POINT: "0", _E: "0", _E_SIGN: "0"}

_HIGH = (0xD800, 0xDBFF)
_LOW = (0xDC00, 0xDFFF)


class ObjectPrefix:
    """Incremental check that text is a prefix of one JSON object (see the module docstring)."""

    __slots__ = (
        "_hex",
        "_integer_digits",
        "_key",
        "_literal",
        "_low",
        "_mode",
        "_number",
        "_number_long",
        "_number_part",
        "_stack",
    )

    def __init__(self) -> None:
        self._mode = _START
        self._stack: list[str] = []  # "{" and "[" of the containers open
        self._key = False  # the string is an object key
        self._hex = ""  # digits of the \u escape so far
        self._low = False  # the \u escape must be a low surrogate
        self._number_part = _INT
        self._number: list[str] = []  # the pieces of the number's text
        self._integer_digits = 0
        self._number_long = False  # the number may be infinite as a double (checked when it ends)
        self._literal = ""  # what is left of true, false or null

    # -- what it says ------------------------------------------------------------------------------

    @property
    def broken(self) -> bool:
        """The text is no prefix of a JSON object; it stays so."""
        return self._mode == _BROKEN

    @property
    def empty(self) -> bool:
        """Nothing but whitespace so far."""
        return self._mode == _START

    @property
    def complete(self) -> bool:
        """One whole object (and maybe whitespace after it)."""
        return self._mode == _DONE

    @property
    def too_deep(self) -> bool:
        """Broken by a container nested deeper than MAX_JSON_DEPTH."""
        return self._mode == _BROKEN and len(self._stack) > MAX_JSON_DEPTH

    def completion(self) -> str | None:
        """The shortest text that makes the text so far one complete object; None if broken.

        An open string is closed (a pending backslash escapes a backslash, a partial \\uXXXX is
        padded with zeros, a high surrogate gets a low one), a partial true/false/null finished, a
        number ending in -, ., e or e+ gets a 0, a key without its value gets :null (after a comma,
        the key is ""), a missing value is null, and the open arrays and objects are closed.
        """
        mode = self._mode
        if mode == _BROKEN:
            return None
        if mode == _START:
            return "{}"
        if mode == _DONE:
            return ""
        head = _COMPLETING_HEADS.get(mode, "")
        if mode == _UNICODE:
            head = _pad_escape(self._hex, self._low) + '"'
        elif mode == _LITERAL:
            head = self._literal
        elif mode == _NUMBER:
            head = _NUMBER_PADDING.get(self._number_part, "")
            if self._number_long and math.isinf(float("".join(self._number) + head)):
                return None
        if self._key and _STRING <= mode <= _LOW_U:
            head += ":null"
        return head + "".join("}" if opener == "{" else "]" for opener in reversed(self._stack))

    # -- feeding -----------------------------------------------------------------------------------

    def feed(self, text: str) -> bool:
        """Take the next piece of the text; False if the text so far is no longer a valid prefix."""
        mode = self._mode
        if mode == _BROKEN:
            return False
        if mode == _START and _whole_object(text) is not None:  # a whole call in one piece (Ollama): orjson's speed
            self._mode = _DONE
            return True
        end = len(text)
        at = 0
        while at < end:
            if mode == _STRING:
                at = _PLAIN.match(text, at).end()  # type: ignore[union-attr]
                if at == end:
                    break
                char = text[at]
                at += 1
                if char == '"':
                    mode = _COLON if self._key else _AFTER
                elif char == "\\":
                    mode = _ESCAPE
                else:
                    return self._break()
                continue
            char = text[at]
            if mode == _NUMBER:
                if char in _DELIMITERS:
                    if not self._number_ends():
                        return self._break()
                    mode = _AFTER
                    continue  # the same character is read again, as what follows a value
                stop = self._number_piece(text, at, char)
                if stop < 0:
                    return self._break()
                self._number.append(text[at:stop])
                at = stop
                continue
            if mode == _LITERAL:
                if char != self._literal[0]:
                    return self._break()
                self._literal = self._literal[1:]
                at += 1
                if not self._literal:
                    mode = _AFTER
                continue
            if mode == _ESCAPE:
                if char == "u":
                    mode, self._hex, self._low = _UNICODE, "", False
                elif char in _SIMPLE_ESCAPES:
                    mode = _STRING
                else:
                    return self._break()
                at += 1
                continue
            if mode == _UNICODE:
                if char not in _HEX or not _escape_may_be(self._hex + char, self._low):
                    return self._break()
                self._hex += char
                at += 1
                if len(self._hex) == 4:
                    code = int(self._hex, 16)
                    mode = _LOW_BACKSLASH if not self._low and _HIGH[0] <= code <= _HIGH[1] else _STRING
                continue
            if mode == _LOW_BACKSLASH or mode == _LOW_U:
                if char != ("\\" if mode == _LOW_BACKSLASH else "u"):
                    return self._break()
                mode = _LOW_U if mode == _LOW_BACKSLASH else _UNICODE
                if mode == _UNICODE:
                    self._hex, self._low = "", True
                at += 1
                continue
            if char in " \t\n\r":
                at = _WHITESPACE.match(text, at).end()  # type: ignore[union-attr]
                continue
            at += 1
            if mode == _AFTER:
                top = self._stack[-1]
                if char == ",":
                    mode = _KEY if top == "{" else _VALUE
                elif char == ("}" if top == "{" else "]"):
                    self._stack.pop()
                    mode = _AFTER if self._stack else _DONE
                else:
                    return self._break()
            elif mode == _VALUE or mode == _FIRST_ITEM:
                if char == "]" and mode == _FIRST_ITEM:
                    self._stack.pop()
                    mode = _AFTER
                else:
                    mode = self._value(char)
                    if mode == _BROKEN:
                        return self._break()
            elif mode == _FIRST_KEY or mode == _KEY:
                if char == '"':
                    mode, self._key = _STRING, True
                elif char == "}" and mode == _FIRST_KEY:
                    self._stack.pop()
                    mode = _AFTER if self._stack else _DONE
                else:
                    return self._break()
            elif mode == _COLON:
                if char != ":":
                    return self._break()
                mode = _VALUE
            elif mode == _START:
                if char != "{":
                    return self._break()
                self._stack.append("{")
                mode = _FIRST_KEY
            else:  # _DONE: only whitespace may follow
                return self._break()
        self._mode = mode
        return True

    def _break(self) -> bool:
        self._mode = _BROKEN
        return False

    def _value(self, char: str) -> int:
        """The mode the first character of a value leads to."""
        if char == '"':
            self._key = False
            return _STRING
        if char == "{" or char == "[":
            self._stack.append(char)
            if len(self._stack) > MAX_JSON_DEPTH:
                return _BROKEN
            return _FIRST_KEY if char == "{" else _FIRST_ITEM
        if char in _LITERALS:
            self._literal = _LITERALS[char]
            return _LITERAL
        if char == "-" or "0" <= char <= "9":
            self._number_part = _MINUS if char == "-" else _ZERO if char == "0" else _INT
            self._number = [char]
            self._integer_digits = 1 if self._number_part == _INT else 0
            self._number_long = False
            return _NUMBER
        return _BROKEN

    def _number_piece(self, text: str, at: int, char: str) -> int:
        """Where the piece of a number that starts at text[at] ends; -1 if it breaks the number."""
        part = self._number_part
        digit = "0" <= char <= "9"
        if digit and part in (_INT, _FRACTION, _EXPONENT):
            stop = _DIGITS.match(text, at).end()  # type: ignore[union-attr]
        elif digit and part == _MINUS:
            part = _ZERO if char == "0" else _INT
            stop = at + 1 if char == "0" else _DIGITS.match(text, at).end()  # type: ignore[union-attr]
        elif digit and part == _POINT:
            part, stop = _FRACTION, _DIGITS.match(text, at).end()  # type: ignore[union-attr]
        elif digit and part in (_E, _E_SIGN):
            part, stop = _EXPONENT, _DIGITS.match(text, at).end()  # type: ignore[union-attr]
        elif char == "." and part in (_ZERO, _INT):
            part, stop = _POINT, at + 1
        elif char in "eE" and part in (_ZERO, _INT, _FRACTION):
            part, stop = _E, at + 1
            self._number_long = True
        elif char in "+-" and part == _E:
            part, stop = _E_SIGN, at + 1
        else:  # a leading zero, a second point, a letter...
            return -1
        if part == _INT:
            self._integer_digits += stop - at
            if self._integer_digits >= _LONG_NUMBER:
                self._number_long = True
        self._number_part = part
        return stop

    def _number_ends(self) -> bool:
        """The number is whole, and finite as a double (orjson refuses the others)."""
        finite = self._number_part in _NUMBER_CAN_END and not (
            self._number_long and math.isinf(float("".join(self._number)))
        )
        self._number = []
        return finite


def _escape_may_be(digits: str, low: bool) -> bool:
    """Whether a \\u escape starting with these hex digits can be valid where it is."""
    shift = 4 * (4 - len(digits))
    least = int(digits, 16) << shift
    most = least + (1 << shift) - 1
    if low:
        return least <= _LOW[1] and most >= _LOW[0]
    return not (least >= _LOW[0] and most <= _LOW[1])


def _pad_escape(digits: str, low: bool) -> str:
    """The rest of a partial \\u escape: the smallest valid code point, and a low surrogate after a high one."""
    shift = 4 * (4 - len(digits))
    least = (int(digits, 16) << shift) if digits else 0
    if low:
        least = max(least, _LOW[0])
    rest = f"{least:04x}"[len(digits) :]
    if not low and _HIGH[0] <= least <= _HIGH[1]:
        rest += "\\udc00"
    return rest


def arguments_error(name: str | None, prefix: ObjectPrefix | None = None) -> ApiError:
    call = f"tool call `{name[:128]}`" if name else "tool call"
    if prefix is not None and prefix.too_deep:
        return ApiError(f"The worker's {call} has arguments nested more than {MAX_JSON_DEPTH} levels deep.")
    return ApiError(f"The worker's {call} has arguments that are not a JSON object.")


def arguments_to_input(arguments: Any, name: str | None) -> dict[str, Any]:
    """A call's tool input: "" or null → {}; an object, or the text of one → it; a prefix of one
    (the call was cut) → completed; anything else (not an object, text after it) → ApiError."""
    return read_arguments(arguments, name)[0]


def read_arguments(arguments: Any, name: str | None) -> tuple[dict[str, Any], bool]:
    """`arguments_to_input`, and whether the arguments had to be completed (the call was cut)."""
    if arguments is None:
        return {}, False
    if isinstance(arguments, dict):
        try:
            arguments = orjson.dumps(arguments).decode()
        except orjson.JSONEncodeError:  # deeper than orjson writes, or an integer past 64 bits
            raise arguments_error(name) from None
    if not isinstance(arguments, str):
        raise arguments_error(name)
    whole = _whole_object(arguments)  # the common case, at orjson's speed
    if whole is not None:
        return whole, False
    prefix = ObjectPrefix()
    prefix.feed(arguments)
    if prefix.empty:
        return {}, False
    suffix = prefix.completion()
    if suffix is None:
        raise arguments_error(name, prefix)
    return orjson.loads(arguments + suffix), True


def _whole_object(text: str) -> dict[str, Any] | None:
    """The object `text` is, if it is one, at most MAX_JSON_DEPTH deep (orjson and the checker
    agree on it); else None."""
    if not text.rstrip().endswith("}"):
        return None
    try:
        whole = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return whole if isinstance(whole, dict) and _shallow(whole, text) else None


def _shallow(value: dict[str, Any], text: str) -> bool:
    """At most MAX_JSON_DEPTH levels: surely so with that few brackets in its text, else counted."""
    if text.count("{") + text.count("[") <= MAX_JSON_DEPTH:
        return True
    level: list[Any] = [value]
    for _ in range(MAX_JSON_DEPTH):
        level = [
            child
            for node in level
            for child in (node.values() if type(node) is dict else node)
            if type(child) is dict or type(child) is list
        ]
        if not level:
            return True
    return False
