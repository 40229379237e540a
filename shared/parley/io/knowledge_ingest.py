"""A file into a knowledge base (docs/rag.md): its text read (PDFs through the safe extraction),
cut into overlapping chunks, embedded by the knowledge base's embedder, and put in place of the
chunks the same source had (re-adding a changed file replaces them)."""

from __future__ import annotations

import asyncio
from typing import Any

from ..core.chunking import chunk_text
from ..core.knowledge_files import document_text
from .embeddings import Embedder
from .knowledge_bases import KnowledgeBaseStore

__all__ = ["add_file"]


async def add_file(
    store: KnowledgeBaseStore, embedder: Embedder, account: str, name: str, source: str, data: bytes
) -> int:
    """The file's chunks (as many as it gives) in the knowledge base, in place of the source's old ones."""
    text = await asyncio.to_thread(document_text, source, data)
    chunks = chunk_text(text, source)
    vectors: list[Any] = await embedder.embed([chunk.text for chunk in chunks]) if chunks else []
    return await asyncio.to_thread(store.replace_source, account, name, source, chunks, vectors)
