"""A document's text cut into overlapping chunks for retrieval.

A chunk is at most `size` characters. It ends before the first markdown heading that follows some
of its body text (ATX `## Title`, or setext: `Title` over `===` or `---`; none in fenced code), so
a section always starts a chunk. Otherwise it is cut at the best boundary in the second half of
its window: a blank line, else a line end, a sentence end, a space. Only a word longer than `size`
is cut inside (and a chunk is shorter than half its window only when that keeps a word whole).

The next chunk starts `overlap` characters before the cut, moved forward to a sentence start (in
the first half of the overlap) or a word start; but at the heading, with no overlap, after a cut
before one or when only blank space lies between the cut and the next heading. A chunk's title is
that of the nearest heading above its first body text ("" for none).

The defaults, 1,000 characters (some 250 tokens of English) with 150 of overlap: the built-in
embedder averages 256-dimension token vectors, and the longer the text the more its average
drifts to a vague middle, so a chunk should hold about one topic; five chunks injected into a
prompt cost some 1,250 tokens. The overlap keeps a sentence that a cut splits whole in one of the
two chunks.

Offsets are into `normalise_text(text)` (line endings made `\\n`, a leading BOM dropped):
`normalise_text(text)[chunk.start:chunk.end] == chunk.text`.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["DEFAULT_CHUNK_CHARS", "DEFAULT_OVERLAP_CHARS", "Chunk", "chunk_text", "normalise_text"]

DEFAULT_CHUNK_CHARS = 1000
DEFAULT_OVERLAP_CHARS = 150


@dataclass(frozen=True, slots=True)
class Chunk:
    source: str  # the file's name as added
    position: int  # index of the chunk within the source
    start: int  # character offset of the chunk in the (normalised) source text
    end: int
    title: str  # the nearest markdown heading above it ("" for none)
    text: str


class _Heading(NamedTuple):
    start: int  # offset of its first line
    end: int  # offset just after its last line (a setext heading's underline)
    title: str


_ATX_HEADING = re.compile(r" {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*")
_SETEXT_UNDERLINE = re.compile(r" {0,3}(?:=+|-+)[ \t]*")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r"\s*(?:[-*+]|\d+[.)])(?:\s|$)")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"[.!?…][)\"'’”\]]*(?=\s)|[。！？]")
_SPACE = re.compile(r"\s")


def normalise_text(text: str) -> str:
    """`text` with `\\r\\n` and `\\r` made `\\n`, and no leading byte-order mark."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def chunk_text(
    text: str, source: str, size: int = DEFAULT_CHUNK_CHARS, overlap: int = DEFAULT_OVERLAP_CHARS
) -> list[Chunk]:
    """The chunks of `text` (none for empty or blank text), in order."""
    if size < 1:
        raise ValueError(f"size must be a positive number of characters, not {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be at least 0 and less than size ({size}), not {overlap}")
    text = normalise_text(text)
    headings = _headings(text)
    starts = [heading.start for heading in headings]
    chunks: list[Chunk] = []
    start = _skip_space(text, 0)
    while start < len(text):
        title, section_end = _section(text, start, start + size, headings, starts)
        if section_end is not None:
            cut = section_end
        elif start + size >= len(text):
            cut = len(text)
        else:
            cut = _cut(text, start, size)
        end = cut
        while text[end - 1].isspace():
            end -= 1
        chunks.append(Chunk(source, len(chunks), start, end, title, text[start:end]))
        if cut >= len(text):
            break
        start = cut if section_end is not None else _overlap_start(text, start, cut, overlap, starts)
        start = _skip_space(text, start)
    return chunks


def _headings(text: str) -> list[_Heading]:
    """The markdown headings of `text`, in order."""
    headings: list[_Heading] = []
    fence = ""
    previous: tuple[int, str] | None = None  # the last line, if it could be a setext heading's text
    offset = 0
    for line in text.split("\n"):
        line_start, offset = offset, offset + len(line) + 1
        if fence:
            if line.lstrip(" ").startswith(fence):
                fence = ""
            continue
        if opened := _FENCE.match(line):
            fence, previous = opened.group(1), None
            continue
        if atx := _ATX_HEADING.fullmatch(line):
            if title := (atx.group(1) or "").strip():
                headings.append(_Heading(line_start, min(offset, len(text)), title))
            previous = None
            continue
        if _SETEXT_UNDERLINE.fullmatch(line):
            if previous is not None:
                headings.append(_Heading(previous[0], min(offset, len(text)), previous[1]))
            previous = None
            continue
        blank_or_item = not line.strip() or _LIST_ITEM.match(line) or line.startswith(("    ", "\t"))
        previous = None if blank_or_item else (line_start, line.strip())
    return headings


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def _has_text(text: str, start: int, stop: int) -> bool:
    return start < stop and not text[start:stop].isspace()


def _section(text: str, start: int, limit: int, headings: list[_Heading], starts: list[int]) -> tuple[str, int | None]:
    """The title of the chunk from `start`, and where it ends if a heading in its window
    (start, limit] follows some of its body text (None if none does)."""
    at = bisect_right(starts, start) - 1
    title = headings[at].title if at >= 0 else ""
    position, body = start, False
    for index in range(max(at, 0), len(headings)):
        heading = headings[index]
        if heading.start > limit:
            break
        if heading.end <= start:
            continue
        if heading.start > start:
            body = body or _has_text(text, position, heading.start)
            if body:
                return title, heading.start
            title = heading.title
        position = max(position, heading.end)
    return title, None


def _cut(text: str, start: int, size: int) -> int:
    """Where the chunk from `start`, with more than `size` characters left, ends (exclusive)."""
    limit, floor = start + size, start + size // 2
    # A cut c keeps the chunk text[start:c] within size (c <= limit) and past half of it (c > floor).
    window = text[floor + 1 : limit + 1]
    if paragraphs := list(_BLANK_LINE.finditer(window)):
        return floor + 1 + paragraphs[-1].start()
    if (line_end := window.rfind("\n")) >= 0:
        return floor + 1 + line_end
    sentence_ends = (floor + 1 + end.end() for end in _SENTENCE_END.finditer(window))
    if sentence_ends := [end for end in sentence_ends if end <= limit]:
        return sentence_ends[-1]
    if spaces := list(_SPACE.finditer(text, start + 1, limit + 1)):
        return spaces[-1].start()
    return limit  # one word longer than size


def _overlap_start(text: str, start: int, cut: int, overlap: int, starts: list[int]) -> int:
    """Where the chunk after a cut at `cut` starts: at the next heading if only blank space comes
    before it; else `overlap` characters back, at a heading in that stretch or a sentence or word
    start; at `cut` when nothing fits."""
    following = bisect_left(starts, cut)
    if following < len(starts) and not _has_text(text, cut, starts[following]):
        return starts[following]
    target = cut - overlap
    if overlap == 0 or target <= start:
        return cut
    if following > 0 and starts[following - 1] >= target:
        return starts[following - 1]
    if sentence := _SENTENCE_END.search(text, target, target + overlap // 2):
        return sentence.end()
    if text[target - 1].isspace():
        return target
    space = _SPACE.search(text, target, cut)
    return space.start() if space else cut
