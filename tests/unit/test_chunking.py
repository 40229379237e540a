"""Chunking a document for retrieval: chunks within size, cut at the best boundary, overlapping,
each with its section's title, and offsets that point at exactly its text."""

from __future__ import annotations

import dataclasses
import re
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.core.chunking import DEFAULT_CHUNK_CHARS, Chunk, chunk_text, normalise_text
from tests.vectors.loader import check_expected, load, vector_params


@pytest.mark.parametrize("path", vector_params("chunking"))
def test_chunking_vectors(path):
    vector = load(path)
    chunks = chunk_text(vector["text"], vector["source"], vector["size"], vector["overlap"])
    check_expected(path, vector, "expected", [dataclasses.asdict(chunk) for chunk in chunks])


def sentences(count: int, first: int = 0) -> str:
    return " ".join(f"Sentence number {n} says a little about topic {n}." for n in range(first, first + count))


# -- empty and small ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", " ", "\n\n\t \r\n", "\ufeff", "\ufeff  \r\n"])
def test_empty_or_blank_text_has_no_chunks(text):
    assert chunk_text(text, "empty.txt") == []


def test_a_short_text_is_one_chunk_without_its_surrounding_blank_space():
    assert chunk_text("\n\n  Parcels leave at 6 am.  \n\n", "notes.txt") == [
        Chunk(source="notes.txt", position=0, start=4, end=26, title="", text="Parcels leave at 6 am.")
    ]


@pytest.mark.parametrize("size, overlap", [(0, 0), (-5, 0), (100, 100), (100, 150), (100, -1)])
def test_a_size_or_overlap_that_cannot_work_is_refused(size, overlap):
    with pytest.raises(ValueError):
        chunk_text("some text", "a.txt", size, overlap)


# -- sizes, positions, overlap ---------------------------------------------------------------------------


def test_the_defaults_make_chunks_of_about_a_thousand_characters_that_overlap():
    chunks = chunk_text(sentences(200), "long.txt")
    assert len(chunks) > 5
    assert [chunk.position for chunk in chunks] == list(range(len(chunks)))
    assert all(DEFAULT_CHUNK_CHARS // 2 < len(chunk.text) <= DEFAULT_CHUNK_CHARS for chunk in chunks[:-1])
    for before, after in pairwise(chunks):
        assert before.start < after.start < before.end, "each chunk begins inside the one before"


def test_overlap_begins_at_a_sentence_start_and_repeats_the_end_of_the_previous_chunk():
    chunks = chunk_text(sentences(40), "long.txt", size=300, overlap=120)
    for before, after in pairwise(chunks):
        shared = before.text[after.start - before.start :]
        assert after.text.startswith(shared)
        assert after.text.startswith("Sentence number"), after.text[:30]


def test_no_overlap_means_chunks_follow_one_another():
    text = sentences(40)
    chunks = chunk_text(text, "long.txt", size=300, overlap=0)
    for before, after in pairwise(chunks):
        assert text[before.end : after.start].isspace()


def test_a_cut_prefers_a_blank_line_to_a_sentence_end_in_the_second_half_of_the_window():
    first = "A first paragraph that runs on for a while, " * 3 + "and ends here."
    text = first + "\n\n" + sentences(10)
    chunks = chunk_text(text, "doc.txt", size=len(first) + 80, overlap=0)
    assert chunks[0].text == first


def test_a_cut_prefers_a_sentence_end_to_a_space():
    text = sentences(20)
    for chunk in chunk_text(text, "doc.txt", size=200, overlap=30)[:-1]:
        assert chunk.text.endswith("."), chunk.text[-20:]


def test_words_are_never_cut_when_a_space_can_be_found():
    text = " ".join(["word", "longerword", "x", "characteristically"] * 60)
    chunks = chunk_text(text, "words.txt", size=45, overlap=10)
    words = set(text.split())
    for chunk in chunks:
        assert set(chunk.text.split()) <= words, chunk.text


def test_a_word_longer_than_size_is_the_one_thing_cut_inside():
    word = "x" * 250
    chunks = chunk_text(f"short {word} tail", "long-word.txt", size=100, overlap=20)
    assert [chunk.text for chunk in chunks] == ["short", "x" * 100, "x" * 100, "x" * 50 + " tail"]


# -- markdown ---------------------------------------------------------------------------------------


HANDBOOK = """Preface without a heading.

# Handbook

Welcome to the team. {welcome}

## Holidays ##

You get 25 days a year. {holidays}

```python
# not a heading: a comment
```

Expenses
========

Keep your receipts. {expenses}
"""


def handbook_chunks(size: int = 200, overlap: int = 40) -> list[Chunk]:
    text = HANDBOOK.format(welcome=sentences(6), holidays=sentences(6, 10), expenses=sentences(6, 20))
    return chunk_text(text, "handbook.md", size, overlap)


def test_each_chunk_carries_the_heading_it_falls_under():
    titles: dict[str, list[str]] = {}
    for chunk in handbook_chunks():
        titles.setdefault(chunk.title, []).append(chunk.text)
    assert list(titles) == ["", "Handbook", "Holidays", "Expenses"]
    assert titles[""] == ["Preface without a heading."]
    sections = {"Handbook": range(0, 6), "Holidays": range(10, 16), "Expenses": range(20, 26)}
    for title, numbers in sections.items():
        mentioned = {int(n) for text in titles[title] for n in re.findall(r"topic (\d+)", text)}
        assert mentioned == set(numbers), title
    assert any("# not a heading" in text for text in titles["Holidays"]), "a comment in code is no heading"


def test_a_section_starts_a_chunk_of_its_own_without_overlap():
    chunks = handbook_chunks()
    starts = [chunk.text.split("\n", 1)[0] for chunk in chunks]
    assert "# Handbook" in starts and "## Holidays ##" in starts and "Expenses" in starts
    holidays = next(chunk for chunk in chunks if chunk.text.startswith("## Holidays"))
    before = chunks[holidays.position - 1]
    assert before.end <= holidays.start and before.title == "Handbook"


def test_a_heading_right_under_another_is_the_title_of_the_text_below_both():
    chunks = chunk_text("# Guide\n\n## Install\n\nRun make.\n\n## Upgrade\n\nRun make again.\n", "guide.md")
    assert [(chunk.title, chunk.text) for chunk in chunks] == [
        ("Install", "# Guide\n\n## Install\n\nRun make."),
        ("Upgrade", "## Upgrade\n\nRun make again."),
    ]


def test_headings_need_a_space_after_their_hashes_and_a_paragraph_over_their_underline():
    text = "#hashtag is no heading\n\n---\n\n- a list item\n---\n\nText\n--\n\nbody"
    assert {chunk.title for chunk in chunk_text(text, "a.md", size=10, overlap=0)} <= {"", "Text"}
    assert chunk_text(text, "a.md")[0].title == ""


# -- line endings and offsets ------------------------------------------------------------------------------


def test_line_endings_are_normalised_and_offsets_point_into_the_normalised_text():
    text = "# Title\r\n\r\nOne line.\rAnother line.\r\n"
    chunks = chunk_text(text, "crlf.md")
    assert normalise_text(text) == "# Title\n\nOne line.\nAnother line.\n"
    assert [chunk.text for chunk in chunks] == ["# Title\n\nOne line.\nAnother line."]
    assert chunks[0].title == "Title"


WORDS = st.sampled_from(["a", "lorem", "ipsum.", "dolor!", "sit?", "x" * 30, "# Head", "## Two", "===", "```", "é"])
SEPARATORS = st.sampled_from([" ", " ", " ", "\n", "\n\n", "\r\n", "\r", "\t", "  \n \n"])
DOCUMENTS = st.lists(st.tuples(WORDS, SEPARATORS), max_size=120).map(lambda parts: "".join(w + s for w, s in parts))


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(DOCUMENTS, st.text(max_size=400)),
    size=st.integers(min_value=1, max_value=120),
    overlap_share=st.floats(min_value=0, max_value=0.99),
)
def test_every_chunk_is_exactly_its_slice_of_the_normalised_text(text, size, overlap_share):
    overlap = int(size * overlap_share)
    normalised = normalise_text(text)
    chunks = chunk_text(text, "any.md", size, overlap)
    assert [chunk.position for chunk in chunks] == list(range(len(chunks)))
    covered = set()
    for chunk in chunks:
        assert normalised[chunk.start : chunk.end] == chunk.text
        assert 0 < len(chunk.text) <= size
        assert chunk.text == chunk.text.strip()
        covered.update(range(chunk.start, chunk.end))
    assert [chunk.start for chunk in chunks] == sorted({chunk.start for chunk in chunks}), "starts move forward"
    assert {i for i, char in enumerate(normalised) if not char.isspace()} <= covered, "no text is lost"


@settings(max_examples=200, deadline=None)
@given(text=DOCUMENTS, size=st.integers(min_value=31, max_value=120))
def test_a_word_is_cut_only_when_it_is_longer_than_size(text, size):
    normalised = normalise_text(text)
    longest = max((len(word) for word in re.split(r"\s+", normalised)), default=0)
    for chunk in chunk_text(text, "any.md", size, size // 4):
        assert chunk.start == 0 or normalised[chunk.start - 1].isspace() or longest > size
        assert chunk.end == len(normalised) or normalised[chunk.end].isspace() or longest > size
