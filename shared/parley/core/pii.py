"""Personal data and secrets in text: where they are, as spans of the text.

A scan is one pass of one RE2 alternation over the text (every shape below, as a named group);
each candidate is then checked, and only what passes its check is a span:

    shape    what it finds                                  kept when
    pem      -----BEGIN … PRIVATE KEY----- … -----END …     always (cut short: its base64 lines)
    url      scheme://user:password@host/…                  the password is no template (${…}, <…>)
    jwt      eyJ….eyJ….signature                            always
    token    AKIA…/ASIA…, ghp_…, github_pat_…, sk-…, …      an sk- token holds a digit
    aws      aws_secret_access_key = <40+ base64 chars>     always; the value alone is the span
    email    local@domain.tld                               not a file (icon@2x.png), not git@host:repo
    iban     CC00 BBBB …, with or without spaces            stdnum's IBAN checksum and format
    id       12345678Z, X1234567L, RSSMRA85T10A562S         stdnum: ES DNI, ES NIE, IT codice fiscale
    phone    +44 20 7946 0958, (415) 555-2671, 415.555.2671 phonenumbers: valid (any region after +)
    digits   9 to 19 digits, single spaces or dashes        an SSN, a national id, a card or a phone
    ipv4     203.0.113.7                                    ipaddress; no version (v1.2.3.4, pkg==1.2.3.4)
    ipv6     2001:db8::8a2e:370:7334                        ipaddress; a decimal digit, a 3-hex group

The first five are secrets. A run of digits is, in this order: an SSN (AAA-GG-SSSS by the SSA's
rules, or 9 bare digits after "ssn" or "social security"); a national id too plain to stand alone,
after its name (NL BSN, DE Steuer-IdNr; FR NIR also in its own spacing); a card (a network's prefix
and length, Luhn; in fours, 4-6-5, or not grouped); a phone of the configured regions, written as
the region writes its numbers (415 555 2671, 020 7946 0958, not the ZIP+4 02110-1301) or after a
phone word ("call 4155552671", never "order 4155552671"). A run that is none of them is tried again
without its last space-separated groups ("415-555-2671 2 times"); a run longer than any value is a
table of numbers, skipped whole.

Never a hit: a value glued to a longer token by ".", "-" or "/" (UUIDs, dotted versions, paths), a
value in `allow`, loopback and unspecified addresses, and what no shape matches (dates, times,
line:column, hex hashes, git SHAs).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, Sequence

import phonenumbers
import re2
from stdnum import iban, luhn
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.it import codicefiscale
from stdnum.nl import bsn

from .policy import PII_ENTITIES, PiiPolicy

__all__ = ["PiiDetector", "Span", "detector_for"]


@dataclass(frozen=True, slots=True)
class Span:
    """A value found in a text: `text[start:end]`, of the kind `entity` (one of PII_ENTITIES)."""

    start: int
    end: int
    entity: str


_KEY_LINE = r"-----(?:BEGIN|END) (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
_KEY_BODY = r"[A-Za-z0-9+/=\s\\:,.-]"  # base64, RFC 1421 headers, and \n when the key sits in JSON
_SHAPES: tuple[tuple[str, str, frozenset[str]], ...] = (
    ("pem", rf"{_KEY_LINE}(?:{_KEY_BODY}*?{_KEY_LINE}|{_KEY_BODY}*)", frozenset({"secret"})),
    (
        "url",
        r"\b[A-Za-z][A-Za-z0-9+.-]{1,30}://[^\s:/@]*:[^\s/@]+@[^\s/?#\"'<>\\`]+[^\s\"'<>\\`]*",
        frozenset({"secret"}),
    ),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*", frozenset({"secret"})),
    (
        "token",
        r"\b(?:(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}"
        r"|sk-[A-Za-z0-9_-]{20,}|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}|xox[abposr]-[A-Za-z0-9-]{10,}"
        r"|AIza[A-Za-z0-9_-]{35})\b",
        frozenset({"secret"}),
    ),
    (
        "aws",
        r"(?i:aws_?secret_?access_?key|secret_?access_?key|aws_?session_?token|session_?token)"
        r"[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+=]{40,}",
        frozenset({"secret"}),
    ),
    (
        "email",
        r"\b[A-Za-z0-9_][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b",
        frozenset({"email"}),
    ),
    ("iban", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b", frozenset({"iban"})),
    (
        "id",
        r"\b(?:\d{8}-?[A-Z]|[XYZ]-?\d{7}-?[A-Z]"
        r"|[A-Z]{6}[0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{3}[A-Z])\b",
        frozenset({"national_id"}),
    ),
    (
        "phone",
        r"\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){1,6}|\(\d{1,4}\)[ .-]?\d{2,5}(?:[ .-]?\d{2,5}){0,3}|\b\d{3}\.\d{3}\.\d{4}\b",
        frozenset({"phone"}),
    ),
    ("digits", r"\b\d(?:[ -]?\d){8,18}\b", frozenset({"ssn", "national_id", "card", "phone"})),
    ("ipv4", r"\b(?:\d{1,3}\.){3}\d{1,3}\b", frozenset({"ip"})),
    (
        "ipv6",
        r"(?:\b[0-9A-Fa-f]{1,4}|:)(?::[0-9A-Fa-f]{0,4}){1,6}:[0-9A-Fa-f]{1,4}\b(?:\.\d{1,3}){0,3}",
        frozenset({"ip"}),
    ),
)

# The shapes a value may have where another shape's candidate failed (4155552671@2x.png is no
# email, but may be a phone); an address never starts where something else failed.
_RETRIED = frozenset({"email", "iban", "id", "phone", "digits"})
_GLUE = ".-/"  # what joins a value to a longer token it is part of
_CONTEXT_CHARS = 40  # how far before a value its context word may be

# Secrets.
_PEM_LINE = re.compile(r"(?:\r?\n|\\n)([^\r\n\\]+)")  # after \n, or after a \n escape when the key sits in JSON
_PEM_BODY_LINE = re.compile(r"[A-Za-z0-9+/=]+|[A-Za-z-]+: .*")  # base64, or an RFC 1421 header (Proc-Type: …)
_URL_TAIL = ".,;:!?)]}'"  # punctuation after a URL, not in it
_BASE64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")

# Contact details.
_FILE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "tif", "tiff", "avif"})
# A bare number is a phone after a phone word, unless an id word comes between them.
_PHONE_WORD = re.compile(r"\b(?:phone|tel|call|mobile|cell|fax|whatsapp|sms|ring)|☎|📞")
_ID_WORD = re.compile(
    r"\b(?:order|product|sku|item|invoice|ticket|ref|reference|id|account|acct|tracking|serial|isbn"
    r"|part|case|customer|transaction|txn|batch|lot|build|version)\b"
)
_NANP_GROUPS = ([3, 3, 4], [1, 3, 3, 4])
_PHONE_FORMATS = (phonenumbers.PhoneNumberFormat.NATIONAL, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
_MAX_NATIONAL_PHONE_DIGITS = 12
_DIGIT_GROUP = re.compile(r"\d+")

# Numbers.
_NUMBER_RUN = re.compile(r"\d+(?:[ -]\d+)*")
_ONE_DIGIT_GROUP = re.compile(r"[ -]\d(?!\d)")
_MAX_DIGITS = 19  # the longest card number
_SSN_WORD = re.compile(r"\bssn|social security|\bss#")
_BSN_WORD = re.compile(r"\b(?:bsn|burgerservicenummer|sofinummer)")
_IDNR_WORD = re.compile(r"\b(?:idnr|steuer|identifikationsnummer|tax id|tin\b)")
_NIR_WORD = re.compile(r"\b(?:nir|insee|s[ée]curit[ée] sociale|s[ée]cu\b)")
_NIR_GROUPS = [1, 2, 2, 2, 3, 3, 2]  # 1 85 05 78 006 084 36
# A card number's network by its prefix, and the lengths of that network's numbers. Other: Diners,
# JCB, Discover, UnionPay, Maestro, Mir.
_CARD_NETWORK = re.compile(
    r"(?P<visa>4)|(?P<amex>3[47])|(?P<mastercard>5[1-5]|2(?:22[1-9]|2[3-9]|[3-6]|7[01]|720))"
    r"|(?P<other>30[0-5]|3[5689]|6|5[06-8]|220[0-4])"
)
_CARD_LENGTHS = {"visa": (13, 16, 19), "amex": (15,), "mastercard": (16,), "other": range(14, 20)}
_AMEX_DINERS_GROUPS = ([4, 6, 5], [4, 6, 4])  # else a card is in fours, or not grouped

# Addresses.
# Before a dotted quad that is a version or a section number: version 1.2.3.4, __version__ = "3.5.0.1",
# pkg>=1.0.0.0, §4.2.3.2.
_VERSION_BEFORE = re.compile(
    r"(?i)(?:(?:version|release|build|revision|firmware|section|\b(?:ver|v|rel|rev|fw|sec))[\s:=\"'_]*"
    r"|[=<>~^@]=?\s*|§\s*)$"
)
_LONG_HEX_GROUP = re.compile(r"[0-9A-Fa-f]{3}")

_Check = Callable[[str, int, int], "Span | None"]  # (text, start, end)


def _glued_before(text: str, start: int) -> bool:
    """Whether a value starting at `start` is the end of a longer token: "…-446655440000", "Chrome/120.0.0.0"."""
    return start >= 2 and text[start - 1] in _GLUE and text[start - 2].isalnum()


def _glued_after(text: str, end: int) -> bool:
    """Whether a value ending at `end` is the start of a longer token: "1.2.3.4.5", "4155552671-x"."""
    return end + 1 < len(text) and text[end] in _GLUE and text[end + 1].isalnum()


def _word_before(text: str, start: int, words: re.Pattern[str]) -> bool:
    return words.search(text[max(0, start - _CONTEXT_CHARS) : start].lower()) is not None


def _is_ssn(digits: str) -> bool:
    """The SSA's rules: no area 000, 666 or 9xx, no group 00, no serial 0000."""
    area = digits[:3]
    return area not in ("000", "666") and area[0] != "9" and digits[3:5] != "00" and digits[5:] != "0000"


def _phone_number(value: str, regions: Sequence[str | None]) -> phonenumbers.PhoneNumber | None:
    """`value` as a valid number of the first of `regions` it is one of (None: written with +)."""
    digits = "".join(_DIGIT_GROUP.findall(value))  # parsed twice as fast as "(415) 555-2671"
    if value[0] == "+":
        digits = "+" + digits
    for region in regions:
        try:
            number = phonenumbers.parse(digits, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return number
    return None


def _digit_groups(value: str) -> list[int]:
    return [len(group) for group in _DIGIT_GROUP.findall(value)]


def _grouped_as_a_phone(value: str, number: phonenumbers.PhoneNumber) -> bool:
    """Whether `value` groups its digits as the number's national or international format does
    (415 555 2671 and 020 7946 0958 do; the ZIP+4 02110-1301, valid in Germany as 0211 01301, does not)."""
    groups = _digit_groups(value)
    if number.country_code == 1 and groups in _NANP_GROUPS:
        return True  # every North American number is written 415 555 2671
    return any(_digit_groups(phonenumbers.format_number(number, style)) == groups for style in _PHONE_FORMATS)


def _longest(text: str, start: int, end: int, kind_of: Callable[[int], str | None]) -> Span | None:
    """The candidate `text[start:end]` if `kind_of(end)` names what it is, else the longest shorter
    one that ends before one of its spaces and is something."""
    while end > start:
        entity = kind_of(end)
        if entity is not None:
            return Span(start, end, entity)
        end = text.rfind(" ", start, end)
    return None


class PiiDetector:
    """Finds the values of `entities` in texts. `phone_regions`: the regions whose national
    formats count as phone numbers (a number written with +country code counts for any region).
    `allow`: values never reported (emails compared case-insensitively)."""

    def __init__(
        self,
        entities: Iterable[str] = PII_ENTITIES,
        phone_regions: Sequence[str] = ("US",),
        allow: Iterable[str] = (),
    ) -> None:
        self.entities = frozenset(entities)
        unknown = self.entities.difference(PII_ENTITIES)
        if unknown:
            raise ValueError(f"unknown PII entities: {', '.join(sorted(unknown))}")
        self._regions: tuple[str | None, ...] = tuple(region.upper() for region in phone_regions)
        codes = [phonenumbers.country_code_for_region(region) for region in self._regions]
        self._nanp = 1 in codes  # a region of the North American plan: 415 555 2671, 1 415 555 2671
        self._trunk = any(code != 1 for code in codes)  # others: groups after a trunk 0 (020 7946 0958)
        self._allow = frozenset(allow)
        self._allow_emails = frozenset(value.casefold() for value in self._allow)
        shapes = [(name, pattern) for name, pattern, yields in _SHAPES if yields & self.entities]
        checks: list[_Check] = [getattr(self, f"_check_{name}") for name, _ in shapes]
        self._checks = checks
        self._digits_index = next((index for index, (name, _) in enumerate(shapes) if name == "digits"), -1)
        # RE2 runs the alternation as one automaton: a 76 KB prompt in 1.3 ms, against Python's re 45 ms.
        self._scan = re2.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in shapes)) if shapes else None
        # For a candidate that fails its check: the shapes after it that may match where it starts.
        alone = [(re2.compile(pattern), check) for (name, pattern), check in zip(shapes, checks, strict=True)]
        retried = [name in _RETRIED for name, _ in shapes]
        self._later = [
            [shape for shape, retry in zip(alone[index + 1 :], retried[index + 1 :], strict=True) if retry]
            for index in range(len(shapes))
        ]

    def find(self, text: str) -> list[Span]:
        """The values in `text`, in order, none overlapping another."""
        if self._scan is None or not text:
            return []
        data = text.encode("ascii", "replace")  # a byte per character: offsets in data are offsets in text
        search, checks, spans = self._scan.search, self._checks, []
        position = 0
        while (match := search(data, position)) is not None:
            start = match.start()
            index = match.lastindex - 1
            span = checks[index](text, start, match.end()) or self._check_later(data, text, start, index)
            if span is None or span.start < position:
                position = self._resume(text, start, index)
                continue
            if not self._allow or not self._allowed(text, span):
                spans.append(span)
            position = span.end
        return spans

    def _resume(self, text: str, start: int, index: int) -> int:
        """Where to scan on from after a candidate that is nothing: the next character, or past the
        whole run when it is a table of numbers (more digits in single-spaced groups than any value)."""
        run = _NUMBER_RUN.match(text, start) if index == self._digits_index else None
        if run is not None and run.end() - start - run.group().count(" ") - run.group().count("-") > _MAX_DIGITS:
            return run.end()
        return start + 1

    def _check_later(self, data: bytes, text: str, start: int, index: int) -> Span | None:
        for alone, check in self._later[index]:
            match = alone.match(data, start)
            if match is not None and (span := check(text, start, match.end())) is not None:
                return span
        return None

    def _allowed(self, text: str, span: Span) -> bool:
        value = text[span.start : span.end]
        return value in self._allow or (span.entity == "email" and value.casefold() in self._allow_emails)

    # Secrets.

    def _check_pem(self, text: str, start: int, end: int) -> Span:
        if text.find("-----END", start, end) < 0:  # cut short: the BEGIN line and the key's lines after it
            scanned, end = end, text.index("-----", start + 10) + 5
            for line in _PEM_LINE.finditer(text, end, scanned):
                if line.start() != end or not _PEM_BODY_LINE.fullmatch(line.group(1)):
                    break
                end = line.end()
        return Span(start, len(text[start:end].rstrip()) + start, "secret")

    def _check_url(self, text: str, start: int, end: int) -> Span | None:
        while text[end - 1] in _URL_TAIL:
            end -= 1
        userinfo = text[start:end].partition("://")[2].partition("@")[0]
        password = userinfo.partition(":")[2]
        if not password or password[0] in "$<{%*":
            return None
        return Span(start, end, "secret")

    def _check_jwt(self, text: str, start: int, end: int) -> Span:
        return Span(start, end, "secret")

    def _check_token(self, text: str, start: int, end: int) -> Span | None:
        if text.startswith("sk-", start) and not any(char.isdigit() for char in text[start:end]):
            return None  # a kebab-case name, not an API key
        return Span(start, end, "secret")

    def _check_aws(self, text: str, start: int, end: int) -> Span:
        value_start = min(index for index in (text.find(":", start, end), text.find("=", start, end)) if index >= 0)
        while text[value_start] not in _BASE64_CHARS or text[value_start] == "=":
            value_start += 1
        return Span(value_start, end, "secret")

    # Contact details.

    def _check_email(self, text: str, start: int, end: int) -> Span | None:
        while start and text[start - 1].isalnum():
            start -= 1  # an internationalised local part (léa@example.fr): the ASCII scan saw "a@example.fr"
        local, _, domain = text[start:end].partition("@")
        labels = domain.split(".")
        if local.endswith(".") or ".." in local or len(local) > 64 or labels[-1].lower() in _FILE_EXTENSIONS:
            return None
        if any(label[0] == "-" or label[-1] == "-" for label in labels):
            return None
        if text.startswith(":", end) and end + 1 < len(text) and not text[end + 1].isspace():
            return None  # git@github.com:org/repo.git
        return Span(start, end, "email")

    def _check_phone(self, text: str, start: int, end: int) -> Span | None:
        if start and text[start - 1].isalnum():
            return None
        if text[end - 1] == ")" and text.count("(", start, end) < text.count(")", start, end):
            end -= 1
        if _glued_before(text, start):
            return None
        international = text[start] == "+"  # any region, any grouping
        regions = (None,) if international else self._regions

        def kind_of(cut: int) -> str | None:
            if _glued_after(text, cut) or (number := _phone_number(text[start:cut], regions)) is None:
                return None
            return "phone" if international or _grouped_as_a_phone(text[start:cut], number) else None

        return _longest(text, start, end, kind_of)

    # Numbers.

    def _check_iban(self, text: str, start: int, end: int) -> Span | None:
        return _longest(text, start, end, lambda cut: "iban" if iban.is_valid(text[start:cut]) else None)

    def _check_id(self, text: str, start: int, end: int) -> Span | None:
        value = text[start:end]
        if value[0] in "XYZ":
            valid = nie.is_valid(value)
        elif len(value) == 16:
            valid = any(char.isdigit() for char in value) and codicefiscale.is_valid(value)
        else:
            valid = dni.is_valid(value)
        return Span(start, end, "national_id") if valid else None

    def _check_digits(self, text: str, start: int, end: int) -> Span | None:
        if _glued_before(text, start):
            return None
        one_digit_group = _ONE_DIGIT_GROUP.search(text, start, end)
        if one_digit_group is not None:
            end = one_digit_group.start()  # no value has one (after its first group): 0 1 1 0 1 …
            if end - start - text.count(" ", start, end) - text.count("-", start, end) < 9:
                return None
        after_phone_word = "phone" in self.entities and self._after_phone_word(text, start)
        return _longest(
            text,
            start,
            end,
            lambda cut: None if _glued_after(text, cut) else self._kind_of_number(text, start, cut, after_phone_word),
        )

    def _kind_of_number(self, text: str, start: int, end: int, after_phone_word: bool) -> str | None:
        """What a run of digit groups is, if anything (the module docstring's order)."""
        value = text[start:end]
        groups = value.replace("-", " ").split(" ")
        digits = "".join(groups)
        if len(digits) < 9:
            return None
        lengths = [len(group) for group in groups]
        uniform = not (" " in value and "-" in value)
        entities = self.entities
        if "ssn" in entities and len(digits) == 9 and _is_ssn(digits):
            if (lengths == [3, 2, 4] and uniform) or (lengths == [9] and _word_before(text, start, _SSN_WORD)):
                return "ssn"
        if "national_id" in entities and self._is_numeric_national_id(text, start, digits, lengths):
            return "national_id"
        if (
            "card" in entities
            and 13 <= len(digits) <= _MAX_DIGITS
            and uniform
            and (
                len(lengths) == 1
                or lengths in _AMEX_DINERS_GROUPS
                or (set(lengths[:-1]) == {4} and lengths[-1] in (3, 4))
            )
            and self._is_card_length(digits)
            and luhn.is_valid(digits)
        ):
            return "card"
        after_phone_word = after_phone_word and len(digits) <= _MAX_NATIONAL_PHONE_DIGITS
        if "phone" in entities and (after_phone_word or self._may_be_a_grouped_phone(value, lengths, uniform)):
            number = _phone_number(value, self._regions)
            if number is not None and (after_phone_word or _grouped_as_a_phone(value, number)):
                return "phone"
        return None

    def _may_be_a_grouped_phone(self, value: str, lengths: list[int], uniform: bool) -> bool:
        """A cheap look before phonenumbers: 415 555 2671, 1-415-555-2671, or after a trunk 0."""
        if not uniform:
            return False
        if self._nanp and lengths in _NANP_GROUPS:
            return True
        return (
            self._trunk
            and value[0] == "0"
            and 2 <= len(lengths) <= 5
            and 2 <= lengths[0] <= 5
            and min(lengths[1:]) >= 2
        )

    @staticmethod
    def _is_card_length(digits: str) -> bool:
        network = _CARD_NETWORK.match(digits)
        return network is not None and len(digits) in _CARD_LENGTHS[str(network.lastgroup)]

    @staticmethod
    def _is_numeric_national_id(text: str, start: int, digits: str, lengths: list[int]) -> bool:
        if len(digits) == 9:
            return _word_before(text, start, _BSN_WORD) and bsn.is_valid(digits)
        if len(digits) == 11:
            return _word_before(text, start, _IDNR_WORD) and idnr.is_valid(digits)
        if len(digits) == 15:
            return (lengths == _NIR_GROUPS or _word_before(text, start, _NIR_WORD)) and nir.is_valid(digits)
        return False

    @staticmethod
    def _after_phone_word(text: str, start: int) -> bool:
        before = text[max(0, start - _CONTEXT_CHARS) : start].lower()
        phone_words = list(_PHONE_WORD.finditer(before))
        return bool(phone_words) and _ID_WORD.search(before, phone_words[-1].end()) is None

    # Addresses.

    def _check_ipv4(self, text: str, start: int, end: int) -> Span | None:
        if (
            _glued_before(text, start)
            or _glued_after(text, end)
            or _VERSION_BEFORE.search(text, max(0, start - 24), start)
        ):
            return None
        try:
            address = ipaddress.IPv4Address(text[start:end])
        except ValueError:
            return None
        return None if address.is_loopback or address.is_unspecified else Span(start, end, "ip")

    def _check_ipv6(self, text: str, start: int, end: int) -> Span | None:
        value = text[start:end]
        if "::" not in value and value.count(":") != 7 - ("." in value):
            return None  # 10:30:00, 00:1A:2B:3C:4D:5E
        if not any(char.isdigit() for char in value) or not _LONG_HEX_GROUP.search(value):
            return None  # Foo::bar, a[1::2]
        if start and text[start - 1] in ":.":
            return None
        if end < len(text) and text[end] == ":":
            return None
        try:
            address = ipaddress.IPv6Address(value)
        except ValueError:
            return None
        return None if address.is_loopback or address.is_unspecified else Span(start, end, "ip")


@lru_cache(maxsize=256)
def _detector(entities: tuple[str, ...], phone_regions: tuple[str, ...], allow: tuple[str, ...]) -> PiiDetector:
    return PiiDetector(entities, phone_regions, allow)


def detector_for(policy: PiiPolicy) -> PiiDetector:
    """The detector of a policy's `pii` section, built once per distinct (entities, regions, allow)."""
    return _detector(tuple(policy.entities), tuple(policy.phone_regions), tuple(policy.allow))
