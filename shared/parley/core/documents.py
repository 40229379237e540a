"""Documents as text, for workers that cannot take files."""

from __future__ import annotations

import base64
import binascii
import io

from .anthropic_types import (
    Base64PDFSource,
    ContentBlockSource,
    DocumentBlock,
    FileSource,
    PlainTextSource,
    TextBlock,
    URLPDFSource,
)
from .errors import InvalidRequestError

__all__ = ["document_to_text", "pdf_to_text"]


def pdf_to_text(data: str, path: str) -> str:
    from pypdf import PdfReader  # imported on first use: it costs cold starts 70 ms
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(base64.b64decode(data, validate=True)))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (binascii.Error, ValueError):
        raise InvalidRequestError(f"{path}.source.data: the PDF is not valid base64") from None
    except (PyPdfError, OSError, KeyError, TypeError) as exc:
        raise InvalidRequestError(f"{path}.source.data: the PDF could not be read: {exc}") from None
    return "\n\n".join(page.strip() for page in pages if page.strip())


def document_to_text(document: DocumentBlock, path: str) -> str:
    source = document.source
    if isinstance(source, Base64PDFSource):
        body = pdf_to_text(source.data, path)
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
        attributes += f' title="{document.title}"'
    header = f"<document{attributes}>\n"
    if document.context:
        header += f"<context>{document.context}</context>\n"
    return f"{header}{body}\n</document>"
