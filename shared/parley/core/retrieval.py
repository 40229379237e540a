"""Retrieval's pure half (docs/rag.md): what a request asks its knowledge base, and how what was
found goes into the request.

The question is the text of the last user message; a turn that is only tool results (an agent
loop going on) and Claude Code's `<system-reminder>` blocks ask nothing. What was found goes at
the end of the last user message, never into the system prompt (that keeps the worker's prefix
cache): as `search_result` blocks for a Messages request (an Anthropic-native worker cites them;
the translation core delimits them for an OpenAI worker), and as the same delimited text for a
Chat Completions request.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from .anthropic_types import SearchResultBlock
from .request import search_result_to_text

__all__ = [
    "MAX_QUERY_CHARS",
    "Retrieved",
    "last_user_question",
    "search_result_blocks",
    "with_chat_context",
    "with_search_results",
]

MAX_QUERY_CHARS = 2_000
"""What is embedded of a long question: its end, where the question usually is."""

_REMINDER = "<system-reminder>"


class Retrieved(Protocol):
    @property
    def source(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def text(self) -> str: ...


def _question(texts: list[str]) -> str | None:
    question = "\n".join(text for text in texts if not text.lstrip().startswith(_REMINDER)).strip()
    return question[-MAX_QUERY_CHARS:] or None


def _last_user_content(messages: Any) -> Any:
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    return last.get("content")


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [
        part["text"]
        for part in content
        if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
    ]


def last_user_question(body: dict[str, Any]) -> str | None:
    """The question of a Messages or a Chat Completions request (both keep their turns in
    `messages`, a user's content a string or a list of parts); None when the last turn asks
    nothing (tool results only, or a Chat Completions `tool` message)."""
    return _question(_texts(_last_user_content(body.get("messages"))))


def search_result_blocks(found: Sequence[Retrieved]) -> list[dict[str, Any]]:
    return [
        {
            "type": "search_result",
            "source": chunk.source,
            "title": chunk.title or chunk.source,
            "content": [{"type": "text", "text": chunk.text}],
            "citations": {"enabled": True},
        }
        for chunk in found
    ]


def with_search_results(data: dict[str, Any], blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """`data` with `blocks` after the last user message's own content (a copy; `data` unchanged)."""
    messages = list(data["messages"])
    last = messages[-1]
    content = last["content"]
    own = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    messages[-1] = {**last, "content": [*own, *blocks]}
    return {**data, "messages": messages}


def with_chat_context(chat: dict[str, Any], blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """`chat` with the search results as delimited text after the last user message's own."""
    context = "\n\n".join(search_result_to_text(SearchResultBlock.model_validate(block)) for block in blocks)
    messages = list(chat["messages"])
    last = messages[-1]
    content = last["content"]
    if isinstance(content, str):
        joined: Any = f"{content}\n\n{context}"
    else:
        joined = [*content, {"type": "text", "text": context}]
    messages[-1] = {**last, "content": joined}
    return {**chat, "messages": messages}
