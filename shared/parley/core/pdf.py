"""A PDF's text, read within limits: pure CPU, for the shell to run in a thread of its own.

`pdf_texts` reads the PDFs of one request within one `PdfLimits` for all of them together:

- a time budget and an operator budget, checked by a pypdf visitor before every content-stream
  operator: past either, the visitor raises and pypdf stops (cooperative cancellation that stops
  the CPU work; a stop event, set by the shell when the client leaves, is checked the same way);
- a parsing budget per content stream (`STREAM_PARSING_TOKENS`): pypdf parses a stream whole before
  its first operator is visited, so this bounds how far one stream can overrun the deadline;
- a page count (400) and a size for the extracted text (413).

Every refusal is a ParleyError naming the PDF's field (`messages.0.content.1.source.data`).
"""

from __future__ import annotations

import base64
import binascii
import io
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import InvalidRequestError, ParleyError, RequestTooLargeError

__all__ = ["STREAM_PARSING_TOKENS", "PdfLimits", "pdf_texts"]

STREAM_PARSING_TOKENS = 250_000
"""The most tokens (operands and operators) pypdf parses in one content stream (its own default:
2,000,000). A dense page of text has some tens of thousands."""


@dataclass(frozen=True, slots=True)
class PdfLimits:
    """What reading the PDFs of one request may cost (settings.py: PARLEY_PDF_*)."""

    seconds: float = 10.0
    max_operators: int = 1_000_000
    max_pages: int = 100
    max_text_chars: int = 1_000_000


class _Stop(BaseException):
    """Raised from the visitor to stop pypdf. A BaseException, so that pypdf's `except Exception`
    around form XObjects does not swallow it and carry on with the page."""

    def __init__(self, error: ParleyError) -> None:
        super().__init__(error.message)
        self.error = error


class _Budget:
    """What is left of a request's `PdfLimits` while its PDFs are read."""

    def __init__(self, limits: PdfLimits, stop: threading.Event | None) -> None:
        self.limits = limits
        self.stop = stop
        self.deadline = time.monotonic() + limits.seconds
        self.operators = self.pages = self.chars = 0
        self.field = ""  # the PDF being read: `messages.0.content.1.source.data`

    def check_time(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise _Stop(InvalidRequestError(f"{self.field}: the request ended while its PDF was read"))
        if time.monotonic() >= self.deadline:
            raise _Stop(
                InvalidRequestError(
                    f"{self.field}: reading the PDF's text took longer than the {self.limits.seconds:g} s allowed "
                    "for the PDFs of one request; send fewer or simpler pages, or the text as a text document"
                )
            )

    def visit(self, operator: Any, operands: Any, cm: Any, tm: Any) -> None:
        """pypdf's `visitor_operand_before`: called before each operator of a content stream."""
        self.operators += 1
        if self.operators > self.limits.max_operators:
            raise _Stop(
                InvalidRequestError(
                    f"{self.field}: the PDFs of this request have more than {self.limits.max_operators:,} "
                    "content-stream operators, the most Parley reads for one request; send fewer or simpler "
                    "pages, or the text as a text document"
                )
            )
        self.check_time()

    def add_pages(self, count: int) -> None:
        self.pages += count
        if self.pages > self.limits.max_pages:
            raise _Stop(
                InvalidRequestError(
                    f"{self.field}: the PDFs of this request have more than {self.limits.max_pages:,} pages, "
                    "the most Parley reads for one request"
                )
            )

    def add_text(self, text: str) -> None:
        self.chars += len(text)
        if self.chars > self.limits.max_text_chars:
            raise _Stop(
                RequestTooLargeError(
                    f"{self.field}: the text of the PDFs of this request is longer than "
                    f"{self.limits.max_text_chars:,} characters, the most Parley reads for one request"
                )
            )


def _pdf_text(data: str, budget: _Budget) -> str:
    from pypdf import PdfReader  # imported on first use: it costs cold starts 70 ms
    from pypdf.errors import LimitReachedError

    try:
        pdf = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(f"{budget.field}: the PDF is not valid base64") from None
    pages: list[str] = []
    try:
        reader = PdfReader(io.BytesIO(pdf))
        budget.add_pages(len(reader.pages))
        for page in reader.pages:
            budget.check_time()
            text = (page.extract_text(visitor_operand_before=budget.visit) or "").strip()
            budget.add_text(text)
            if text:
                pages.append(text)
    except _Stop:
        raise
    except LimitReachedError as exc:  # STREAM_PARSING_TOKENS, or one of pypdf's own limits
        raise InvalidRequestError(
            f"{budget.field}: the PDF is more complex than Parley reads ({exc}); send fewer or simpler pages, "
            "or the text as a text document"
        ) from None
    except Exception as exc:  # a hostile file can make pypdf raise nearly anything: the client's 400
        raise InvalidRequestError(f"{budget.field}: the PDF could not be read: {exc}") from None
    return "\n\n".join(pages)


def pdf_texts(
    sources: Mapping[str, str], limits: PdfLimits = PdfLimits(), stop: threading.Event | None = None
) -> dict[str, str]:
    """The text of each PDF of `sources` (path → base64 data), within `limits` for all of them
    together. Raises the 400 (or 413) that names the PDF; stops soon after `stop` is set."""
    if not sources:
        return {}
    from pypdf import apply_configuration

    budget = _Budget(limits, stop)
    texts: dict[str, str] = {}
    try:
        with apply_configuration(stream_parsing_work_maximum_count=STREAM_PARSING_TOKENS):
            for path, data in sources.items():
                budget.field = f"{path}.source.data"
                texts[path] = _pdf_text(data, budget)
    except _Stop as stopped:
        raise stopped.error from None
    return texts
