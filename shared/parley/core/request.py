"""Anthropic Messages request → OpenAI Chat Completions request.

A pipeline of small steps: system → messages → sampling → tools → tool_choice → output format
→ streaming options. Each step reads the validated request and writes plain dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .anthropic_types import (
    Base64ImageSource,
    Base64PDFSource,
    CountTokensRequest,
    DocumentBlock,
    FileSource,
    ImageBlock,
    Message,
    MessagesRequest,
    RedactedThinkingBlock,
    SearchResultBlock,
    TextBlock,
    ThinkingBlock,
    ToolChoiceAny,
    ToolChoiceAuto,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
    ToolUseBlock,
    URLImageSource,
)
from .documents import DocumentTexts, document_to_text, neutralise_tags, pdf_sources
from .errors import InvalidRequestError
from .pdf import PdfLimits, pdf_texts
from .quirks import adapt_tool_schema, shorten_tool_ids

__all__ = [
    "BILLING_HEADER_PREFIX",
    "WorkerProfile",
    "fit_max_tokens",
    "messages_to_chat",
    "prompt_to_chat_messages",
    "search_result_to_text",
]

BILLING_HEADER_PREFIX = "x-anthropic-billing-header"


@dataclass(frozen=True, slots=True)
class WorkerProfile:
    """What the route knows about the worker that will answer: its limits and what it takes."""

    model: str
    max_output_tokens: int | None = None
    context_tokens: int | None = None
    continuous_usage: bool = False
    images: bool = True
    files: bool = False
    adapt_tool_schemas: bool = False
    short_tool_ids: bool = False
    fold_system_messages: bool = False


def _system_text(blocks: list[TextBlock]) -> str:
    # Claude Code's billing line changes every request and would defeat the worker's prefix cache.
    texts = [block.text for block in blocks if not block.text.startswith(BILLING_HEADER_PREFIX)]
    return "\n".join(text for text in texts if text)


def _image_part(image: ImageBlock, path: str) -> dict[str, Any]:
    source = image.source
    if isinstance(source, Base64ImageSource):
        url = f"data:{source.media_type};base64,{source.data}"
    elif isinstance(source, URLImageSource):
        url = source.url
    elif isinstance(source, FileSource):
        raise InvalidRequestError(
            f"{path}.source.type: 'file' image sources are not supported; send the image as base64 or url"
        )
    else:  # pragma: no cover - the union is closed
        raise AssertionError(source)
    return {"type": "image_url", "image_url": {"url": url}}


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text-only content as one string (every worker takes it); mixed content as parts."""
    if all(part["type"] == "text" for part in parts):
        return "\n".join(part["text"] for part in parts)
    return parts


def search_result_to_text(result: SearchResultBlock) -> str:
    """The search result delimited for the prompt, its source and title as attributes."""
    source = neutralise_tags(result.source, "search_result").replace('"', "&quot;")
    title = neutralise_tags(result.title, "search_result").replace('"', "&quot;")
    body = neutralise_tags("\n".join(block.text for block in result.content), "search_result")
    return f'<search_result source="{source}" title="{title}">\n{body}\n</search_result>'


def _document_part(document: DocumentBlock, path: str, files: bool, documents: DocumentTexts) -> dict[str, Any]:
    source = document.source
    if files and isinstance(source, Base64PDFSource):
        return {
            "type": "file",
            "file": {
                "filename": document.title or "document.pdf",
                "file_data": f"data:application/pdf;base64,{source.data}",
            },
        }
    return {"type": "text", "text": document_to_text(document, path, documents)}


def _user_parts(blocks: list[Any], path: str, files: bool, documents: DocumentTexts) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for index, block in blocks:
        if isinstance(block, TextBlock):
            if block.text:
                parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append(_image_part(block, f"{path}.{index}"))
        elif isinstance(block, DocumentBlock):
            parts.append(_document_part(block, f"{path}.{index}", files, documents))
        elif isinstance(block, SearchResultBlock):
            parts.append({"type": "text", "text": search_result_to_text(block)})
        elif isinstance(block, (ThinkingBlock, RedactedThinkingBlock)):
            continue
        else:
            raise InvalidRequestError(
                f"{path}.{index}.type: {block.type!r} blocks are only allowed in assistant messages"
            )
    return parts


def _tool_result_messages(
    result: ToolResultBlock, path: str, documents: DocumentTexts
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A `role: tool` message, and the images it carried (tool messages take text only)."""
    content = result.content
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    elif content:
        for index, block in enumerate(content):
            if isinstance(block, TextBlock):
                texts.append(block.text)
            elif isinstance(block, ImageBlock):
                images.append(_image_part(block, f"{path}.content.{index}"))
            elif isinstance(block, SearchResultBlock):
                texts.append(search_result_to_text(block))
            else:
                texts.append(document_to_text(block, f"{path}.content.{index}", documents))
    text = "\n".join(texts)
    if result.is_error:
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": result.tool_use_id, "content": text}, images


def _user_messages(message: Message, path: str, files: bool, documents: DocumentTexts) -> list[dict[str, Any]]:
    """Tool results first (they answer the previous assistant turn), then the rest in order."""
    tool_messages: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    others: list[tuple[int, Any]] = []
    for index, block in enumerate(message.content):
        if isinstance(block, ToolResultBlock):
            tool_message, result_images = _tool_result_messages(block, f"{path}.{index}", documents)
            tool_messages.append(tool_message)
            images.extend(result_images)
        else:
            others.append((index, block))
    parts = _user_parts(others, path, files, documents)
    if images:
        parts = [{"type": "text", "text": "Images returned by the tool calls above:"}, *images, *parts]
    if parts:
        return [*tool_messages, {"role": "user", "content": _content(parts)}]
    return tool_messages


def _assistant_message(message: Message, path: str) -> dict[str, Any] | None:
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for index, block in enumerate(message.content):
        if isinstance(block, TextBlock):
            if block.text:
                texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            tool_calls.append(
                {
                    "id": block.id,
                    "type": "function",
                    "function": {"name": block.name, "arguments": orjson.dumps(block.input).decode()},
                }
            )
        elif isinstance(block, (ThinkingBlock, RedactedThinkingBlock)):
            continue
        else:
            raise InvalidRequestError(
                f"{path}.{index}.type: {block.type!r} blocks are not allowed in assistant messages"
            )
    if not texts and not tool_calls:
        return None
    chat: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts)}
    if tool_calls:
        chat["tool_calls"] = tool_calls
    return chat


def _system_message(message: Message, path: str) -> dict[str, Any] | None:
    texts = []
    for index, block in enumerate(message.content):
        if not isinstance(block, TextBlock):
            raise InvalidRequestError(f"{path}.{index}.type: system messages take text blocks only")
        texts.append(block)
    text = _system_text(texts)
    return {"role": "system", "content": text} if text else None


def _as_parts(content: str | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    if content is None or content == "":
        return []
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _append(chat: list[dict[str, Any]], message: dict[str, Any]) -> None:
    """Append, merging into the previous message of the same role as Anthropic merges turns
    (many chat templates require user and assistant turns to alternate)."""
    previous = chat[-1] if chat else None
    role = message["role"]
    if previous is None or previous["role"] != role or role not in ("user", "assistant"):
        chat.append(message)
        return
    if role == "assistant" and previous.get("tool_calls") and message.get("content"):
        chat.append(message)  # text after tool calls would be reordered before them
        return
    parts = _as_parts(previous.get("content")) + _as_parts(message.get("content"))
    previous["content"] = _content(parts) if parts else ""
    if message.get("tool_calls"):
        previous["tool_calls"] = [*previous.get("tool_calls", ()), *message["tool_calls"]]


def _fold_system_message(chat: list[dict[str, Any]], text: str) -> None:
    """For chat templates that take one system message, and only first (Mistral's, Gemma's): a
    system message before any turn joins the leading one; a later one joins its neighbouring
    user turn (or is one, between two assistant turns)."""
    if not chat:
        chat.append({"role": "system", "content": text})
    elif all(message["role"] == "system" for message in chat):
        chat[0]["content"] = f"{chat[0]['content']}\n{text}"
    else:
        _append(chat, {"role": "user", "content": text})


def prompt_to_chat_messages(
    request: CountTokensRequest,
    files: bool = False,
    documents: DocumentTexts | None = None,
    fold_system_messages: bool = False,
) -> list[dict[str, Any]]:
    """The prompt as chat messages. `documents` are the texts of the PDFs it reads as text
    (`pdf_sources(request, files)`), extracted beforehand by the shell; None reads them here,
    within the default `PdfLimits` (for callers with no event loop to keep free).
    `fold_system_messages`: see `_fold_system_message`."""
    if documents is None:
        documents = pdf_texts(pdf_sources(request, files), PdfLimits())
    chat: list[dict[str, Any]] = []
    if request.system:
        system = _system_text(request.system)
        if system:
            chat.append({"role": "system", "content": system})
    for position, message in enumerate(request.messages):
        path = f"messages.{position}.content"
        if message.role == "user":
            for user_message in _user_messages(message, path, files, documents):
                _append(chat, user_message)
        elif message.role == "assistant":
            assistant = _assistant_message(message, path)
            if assistant is not None:
                _append(chat, assistant)
        else:
            system_message = _system_message(message, path)
            if system_message is None:
                continue
            if fold_system_messages:
                _fold_system_message(chat, system_message["content"])
            else:
                chat.append(system_message)
    return chat


def tools_to_chat(request: CountTokensRequest) -> list[dict[str, Any]]:
    tools = []
    for tool in request.tools or ():
        function: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            function["description"] = tool.description
        function["parameters"] = tool.input_schema
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(request: MessagesRequest, chat: dict[str, Any]) -> None:
    choice = request.tool_choice
    if choice is None:
        return
    if not request.tools:
        if isinstance(choice, (ToolChoiceAny, ToolChoiceTool)):
            raise InvalidRequestError("tool_choice: tool_choice may only be specified while providing tools")
        return
    if isinstance(choice, ToolChoiceAuto):
        chat["tool_choice"] = "auto"
    elif isinstance(choice, ToolChoiceAny):
        chat["tool_choice"] = "required"
    elif isinstance(choice, ToolChoiceTool):
        if not any(tool.name == choice.name for tool in request.tools):
            raise InvalidRequestError(f"tool_choice.name: no tool named {choice.name!r} in tools")
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif isinstance(choice, ToolChoiceNone):
        chat["tool_choice"] = "none"
    if not isinstance(choice, ToolChoiceNone) and choice.disable_parallel_tool_use:
        chat["parallel_tool_calls"] = False


def _output_format(request: MessagesRequest, chat: dict[str, Any]) -> None:
    output_format = request.output_format
    if request.output_config is not None and request.output_config.format is not None:
        output_format = request.output_config.format
    if output_format is not None:
        chat["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": output_format.schema_, "strict": True},
        }


def _refuse_images(messages: list[dict[str, Any]]) -> None:
    for message in messages:
        content = message.get("content")
        if isinstance(content, list) and any(part["type"] == "image_url" for part in content):
            raise InvalidRequestError("messages: this model does not accept images")


def _adapt_to_worker(chat: dict[str, Any], worker: WorkerProfile) -> None:
    if not worker.images:
        _refuse_images(chat["messages"])
    if worker.short_tool_ids:
        shorten_tool_ids(chat["messages"])
    if worker.adapt_tool_schemas:
        for tool in chat.get("tools", ()):
            tool["function"]["parameters"] = adapt_tool_schema(tool["function"]["parameters"])


def fit_max_tokens(requested: int, worker: WorkerProfile, input_tokens: int | None = None) -> int:
    """`max_tokens` clamped to what the worker can produce: its output limit, and what its
    context leaves after the prompt. A prompt that already fills the context is left to the
    worker to refuse, with its own exact count."""
    max_tokens = requested
    if worker.max_output_tokens is not None:
        max_tokens = min(max_tokens, worker.max_output_tokens)
    if worker.context_tokens is not None and input_tokens is not None and input_tokens < worker.context_tokens:
        max_tokens = min(max_tokens, worker.context_tokens - input_tokens)
    return max_tokens


def messages_to_chat(
    request: MessagesRequest, worker: WorkerProfile, documents: DocumentTexts | None = None
) -> dict[str, Any]:
    """The worker's request. `max_tokens` is clamped to the worker's output limit here; the
    shell clamps it to the context left once the prompt's size is known (`fit_max_tokens`).
    `documents`: as for `prompt_to_chat_messages`."""
    chat: dict[str, Any] = {
        "model": worker.model,
        "messages": prompt_to_chat_messages(request, worker.files, documents, worker.fold_system_messages),
        "max_tokens": fit_max_tokens(request.max_tokens, worker),
    }
    for field in ("temperature", "top_p", "top_k"):
        value = getattr(request, field)
        if value is not None:
            chat[field] = value
    if request.stop_sequences:
        chat["stop"] = request.stop_sequences
    if request.metadata is not None and request.metadata.user_id:
        chat["user"] = request.metadata.user_id
    tools = tools_to_chat(request)
    if tools:
        chat["tools"] = tools
    _tool_choice(request, chat)
    _output_format(request, chat)
    if request.stream:
        chat["stream"] = True
        options: dict[str, Any] = {"include_usage": True}
        if worker.continuous_usage:
            options["continuous_usage_stats"] = True
        chat["stream_options"] = options
    _adapt_to_worker(chat, worker)
    return chat
