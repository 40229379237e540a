"""The text of a file added to a knowledge base: UTF-8 text and markdown as they are, PDFs through
Parley's bounded PDF reader (core/pdf.py). Pure CPU: the shell runs it in a thread for a big PDF.

Every refusal is a `KnowledgeFileError` (a ValueError) whose message names the file and says what
to do, for the CLI to print as it is.
"""

from __future__ import annotations

import base64
from pathlib import PurePath

from .chunking import normalise_text
from .errors import ParleyError
from .pdf import PdfLimits, pdf_texts

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_TEXT_CHARS",
    "PDF_LIMITS",
    "PDF_TYPES",
    "SUPPORTED_TYPES",
    "TEXT_TYPES",
    "KnowledgeFileError",
    "document_text",
]

TEXT_TYPES = (".txt", ".text", ".md", ".markdown", ".rst")
PDF_TYPES = (".pdf",)
SUPPORTED_TYPES = TEXT_TYPES + PDF_TYPES

MAX_FILE_BYTES = 10 * 1024 * 1024
"""The largest file read, of any type."""
MAX_TEXT_CHARS = 2_000_000
"""The most text one file may yield (some 2,400 chunks at the default chunk size)."""
PDF_LIMITS = PdfLimits(seconds=60.0, max_operators=20_000_000, max_pages=2_000, max_text_chars=MAX_TEXT_CHARS)
"""Wider than a request's (an operator adds a manual once, not per prompt), still bounded."""


class KnowledgeFileError(ValueError):
    """A file that cannot be added: of a type Parley does not read, too large, or unreadable."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name


def document_text(name: str, data: bytes, pdf_limits: PdfLimits = PDF_LIMITS) -> str:
    """The text of the file `name` (its type is its extension, in any case) whose bytes are `data`,
    normalised as chunking does (`\\n` line endings), so chunks' offsets index into it."""
    suffix = PurePath(name).suffix.lower()
    if suffix not in SUPPORTED_TYPES:
        kind = f"{suffix} files" if suffix else "a file without an extension"
        raise KnowledgeFileError(
            name,
            f"Parley cannot read {kind}; it reads {', '.join(SUPPORTED_TYPES)} (save other documents as PDF or text)",
        )
    if len(data) > MAX_FILE_BYTES:
        raise KnowledgeFileError(
            name, f"the file has {len(data):,} bytes, more than the {MAX_FILE_BYTES:,} Parley reads; split it"
        )
    text = normalise_text(_pdf_text(name, data, pdf_limits) if suffix in PDF_TYPES else _plain_text(name, data))
    if len(text) > MAX_TEXT_CHARS:
        raise KnowledgeFileError(
            name, f"its text has {len(text):,} characters, more than the {MAX_TEXT_CHARS:,} Parley reads; split it"
        )
    if not text.strip():
        hint = " (a scanned PDF? Parley reads a PDF's text, not its images)" if suffix in PDF_TYPES else ""
        raise KnowledgeFileError(name, f"the file has no text{hint}")
    return text


def _plain_text(name: str, data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise KnowledgeFileError(
            name, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start:,}); save it as UTF-8"
        ) from None
    if "\x00" in text:
        raise KnowledgeFileError(name, "the file has NUL bytes: binary data, not text")
    return text


def _pdf_text(name: str, data: bytes, limits: PdfLimits) -> str:
    try:
        return pdf_texts({name: base64.b64encode(data).decode()}, limits)[name]
    except ParleyError as exc:
        # pdf.py names the request field it read ("<name>.source.data: ..."); here the file is the name.
        raise KnowledgeFileError(name, exc.message.removeprefix(f"{name}.source.data: ")) from None
