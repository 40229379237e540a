"""A file into a knowledge base (docs/rag.md): its text read (PDFs through the safe extraction),
cut into overlapping chunks, embedded by the knowledge base's embedder, and put in place of the
chunks the same source had (re-adding a changed file replaces them)."""

from __future__ import annotations

import asyncio
from typing import Any

from ..core.chunking import chunk_text
from ..core.knowledge_files import document_text
from .embeddings import BUILTIN_EMBEDDER, Embedder, RouteEmbedder, builtin_embedder
from .knowledge_bases import KnowledgeBase, KnowledgeBaseError, KnowledgeBaseStore
from .routes import RouteStore, match_route
from .worker import WorkerClient

__all__ = ["add_file", "embedder_for"]


def embedder_for(
    knowledge_base: KnowledgeBase | str, routes: RouteStore | None, client: WorkerClient, account: str
) -> Embedder:
    """The embedder a knowledge base was made with (or is to be made with: `builtin:…`, `route:<model>`)."""
    name = knowledge_base if isinstance(knowledge_base, str) else knowledge_base.embedder
    dimensions = None if isinstance(knowledge_base, str) else knowledge_base.dimensions
    if name == BUILTIN_EMBEDDER:
        return builtin_embedder()
    if name.startswith("route:"):
        model = name.removeprefix("route:")
        route = match_route(routes.load(), model, account) if routes is not None else None
        if route is None:
            raise KnowledgeBaseError(f"no route {model} to embed with")
        return RouteEmbedder(client, route.worker, route.timeouts, dimensions)
    raise KnowledgeBaseError(f"unknown embedder {name}")


async def add_file(
    store: KnowledgeBaseStore, embedder: Embedder, account: str, name: str, source: str, data: bytes
) -> int:
    """The file's chunks (as many as it gives) in the knowledge base, in place of the source's old ones."""
    text = await asyncio.to_thread(document_text, source, data)
    chunks = chunk_text(text, source)
    vectors: list[Any] = await embedder.embed([chunk.text for chunk in chunks]) if chunks else []
    return await asyncio.to_thread(store.replace_source, account, name, source, chunks, vectors)
