"""Reading a file added to a knowledge base: text and markdown as UTF-8, PDFs through Parley's bounded
reader, and a clear error naming the file for anything else (tests/vectors/knowledge_files/)."""

from __future__ import annotations

import json

import pytest

from parley.core.chunking import chunk_text
from parley.core.knowledge_files import MAX_FILE_BYTES, MAX_TEXT_CHARS, KnowledgeFileError, document_text
from parley.core.pdf import PdfLimits
from tests.vectors.loader import VECTORS

FILES = VECTORS / "knowledge_files"
CASES = json.loads((FILES / "cases.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[case.get("name", case["file"]) for case in CASES])
def test_knowledge_file_vectors(case):
    name, data = case.get("name", case["file"]), (FILES / case["file"]).read_bytes()
    if "text" in case:
        assert document_text(name, data) == case["text"]
        return
    with pytest.raises(KnowledgeFileError) as caught:
        document_text(name, data)
    assert str(caught.value).startswith(case["error"])
    assert caught.value.name == name


def test_a_refusal_is_a_value_error_for_callers_that_catch_those():
    with pytest.raises(ValueError, match=r"^slides\.pptx: Parley cannot read \.pptx files"):
        document_text("slides.pptx", b"PK\x03\x04")


def test_the_text_of_a_file_chunks_with_offsets_into_that_same_text():
    text = document_text("notes.txt", (FILES / "notes.txt").read_bytes())
    assert all(text[chunk.start : chunk.end] == chunk.text for chunk in chunk_text(text, "notes.txt", 40, 10))


@pytest.mark.parametrize("data", [b"", b"  \r\n\t\n", b"\xef\xbb\xbf\n"], ids=["empty", "blank", "bom-only"])
def test_a_text_file_with_no_text_is_refused(data):
    with pytest.raises(KnowledgeFileError, match=r"^empty\.md: the file has no text$"):
        document_text("empty.md", data)


def test_a_binary_file_named_as_text_is_refused():
    with pytest.raises(KnowledgeFileError, match=r"^image\.txt: the file has NUL bytes"):
        document_text("image.txt", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")


def test_a_file_over_the_size_limit_is_refused_before_it_is_read():
    with pytest.raises(KnowledgeFileError, match=r"^big\.pdf: the file has 10,485,761 bytes, more than the 10,485,760"):
        document_text("big.pdf", b"%" * (MAX_FILE_BYTES + 1))


def test_a_text_over_the_text_limit_is_refused():
    with pytest.raises(KnowledgeFileError, match=r"^long\.txt: its text has 2,000,001 characters"):
        document_text("long.txt", b"a" * (MAX_TEXT_CHARS + 1))


def test_a_pdf_past_its_reading_budget_is_refused_with_the_readers_reason():
    heavy = (FILES / "many_operators.pdf").read_bytes()  # 100,000 content-stream operators on one page
    with pytest.raises(KnowledgeFileError, match=r"^heavy\.pdf: the PDFs of this request have more than 10,000 "):
        document_text("heavy.pdf", heavy, pdf_limits=PdfLimits(max_operators=10_000))
