"""Documents as text, for workers that cannot take files.

A PDF's text is read before the request is translated: the shell finds the PDFs the translation
reads as text (`pdf_sources`), reads them off the event loop once the request is admitted
(web/documents.py, with core/pdf.py's limits), and hands the texts to the translation by the
document's path (`DocumentTexts`). Before that, admission estimates a PDF from its size
(`estimate_pdf_tokens`).
"""

from __future__ import annotations

import functools
import re
from typing import Mapping

from .anthropic_types import (
    Base64PDFSource,
    ContentBlockSource,
    CountTokensRequest,
    DocumentBlock,
    FileSource,
    PlainTextSource,
    TextBlock,
    ToolResultBlock,
    URLPDFSource,
)
from .errors import InvalidRequestError
from .tokens import estimate_tokens_of_size

__all__ = ["DocumentTexts", "document_to_text", "estimate_pdf_tokens", "neutralise_tags", "pdf_sources"]

DocumentTexts = Mapping[str, str]
"""A PDF document's extracted text by the document's path in the request (`messages.0.content.1`)."""


def pdf_sources(request: CountTokensRequest, files: bool = False) -> dict[str, str]:
    """The base64 PDFs of the request that the translation reads as text, by the document's path:
    all of them for a worker that takes no files; for one that does, only those in tool results
    (a tool message takes text only)."""
    sources: dict[str, str] = {}
    for position, message in enumerate(request.messages):
        if message.role != "user":
            continue  # documents are refused in assistant and system messages
        for index, block in enumerate(message.content):
            path = f"messages.{position}.content.{index}"
            if isinstance(block, DocumentBlock) and not files and isinstance(block.source, Base64PDFSource):
                sources[path] = block.source.data
            elif isinstance(block, ToolResultBlock) and isinstance(block.content, list):
                for inner, item in enumerate(block.content):
                    if isinstance(item, DocumentBlock) and isinstance(item.source, Base64PDFSource):
                        sources[f"{path}.content.{inner}"] = item.source.data
    return sources


def estimate_pdf_tokens(sources: Mapping[str, str], max_text_chars: int) -> int:
    """The PDFs' tokens before their text is read: each file's decoded size counted as text, and
    all of them together no more than the most text the reading lets through (`max_text_chars`,
    PdfLimits). About right for text PDFs (text compresses three to four times, and a PDF carries
    fonts and structure as well); an overestimate for scans, whose text is empty. The estimate is
    made again from the text once it is read, and the worker's count replaces it."""
    size = sum(len(data) * 3 // 4 for data in sources.values())
    return estimate_tokens_of_size(min(size, max_text_chars))


@functools.lru_cache(maxsize=8)
def _tag(name: str) -> re.Pattern[str]:
    # A `<` (or a fullwidth or small one) that starts something a model could read as the tag
    # `name`: `</name>`, `<name`, spellings like `< / Name-Part`. Bounded, so a run of `<` stays
    # linear.
    spelled = r"[\W_]{0,3}".join(re.escape(part) for part in name.split("_"))
    return re.compile(rf"[<\uFE64\uFF1C](?=[\W_]{{0,16}}{spelled})", re.IGNORECASE)


def neutralise_tags(text: str, *names: str) -> str:
    """`text` unable to open or close the delimiters `names` it is put between (its other `<`,
    such as the request guard's placeholders, stay as they are)."""
    for name in names:
        text = _tag(name).sub("&lt;", text)
    return text


_DELIMITERS = ("document", "context")


def _attribute(value: str, *names: str) -> str:
    return neutralise_tags(value, *names).replace('"', "&quot;")


def document_to_text(document: DocumentBlock, path: str, texts: DocumentTexts) -> str:
    """The document wrapped for the prompt; a base64 PDF's text comes from `texts` by `path`."""
    source = document.source
    if isinstance(source, Base64PDFSource):
        body = texts[path]
    elif isinstance(source, PlainTextSource):
        body = source.data
    elif isinstance(source, ContentBlockSource):
        body = "\n".join(block.text for block in source.content if isinstance(block, TextBlock))
    elif isinstance(source, (URLPDFSource, FileSource)):
        raise InvalidRequestError(
            f"{path}.source.type: {source.type!r} document sources are not supported; "
            "send the document as base64 or text"
        )
    else:  # pragma: no cover - the union is closed
        raise AssertionError(source)
    attributes = ""
    if document.title:
        attributes += f' title="{_attribute(document.title, *_DELIMITERS)}"'
    header = f"<document{attributes}>\n"
    if document.context:
        header += f"<context>{neutralise_tags(document.context, *_DELIMITERS)}</context>\n"
    return f"{header}{neutralise_tags(body, *_DELIMITERS)}\n</document>"
