"""The Anthropic Messages API request, as pydantic models with the spec's names.

Validation is strict (no "5" for 5) and ignores fields it does not know, so that newer
clients keep working. `parse_messages_request` and `parse_count_tokens_request` turn a raw
body into these models or raise InvalidRequestError naming the offending field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from .errors import InvalidRequestError

__all__ = [
    "MAX_MODEL_NAME_LENGTH",
    "Base64ImageSource",
    "Base64PDFSource",
    "CitationsConfig",
    "ContentBlock",
    "ContentBlockSource",
    "CountTokensRequest",
    "CustomTool",
    "DocumentBlock",
    "ImageBlock",
    "Message",
    "MessagesRequest",
    "PlainTextSource",
    "RedactedThinkingBlock",
    "SearchResultBlock",
    "TextBlock",
    "ThinkingBlock",
    "ToolChoice",
    "ToolResultBlock",
    "ToolUseBlock",
    "URLImageSource",
    "URLPDFSource",
    "parse_count_tokens_request",
    "parse_messages_request",
    "load_json_object",
    "messages_request_from",
    "count_tokens_request_from",
]

# Longer names are refused with a 400: Anthropic's own are under 40 characters, and a name is
# part of the client's request log and of nothing stored (usage is kept under the route's name).
MAX_MODEL_NAME_LENGTH = 256


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


MAX_JSON_DEPTH = 128
"""How deeply a free-form object (tool input, input_schema, output schema) may nest. The worker
request nests it a few levels deeper, and orjson refuses to write more than 254 levels."""


def _shallow(value: dict[str, Any]) -> dict[str, Any]:
    # Level by level: Claude Code's tool schemas pass through here on every request (4x faster
    # than a stack of (node, depth) pairs). Parsed JSON holds only dicts and lists as containers.
    level: list[Any] = [value]
    depth = 1
    while level:
        if depth > MAX_JSON_DEPTH:
            raise PydanticCustomError("too_deep", "nested more than {limit} levels deep", {"limit": MAX_JSON_DEPTH})
        below = []
        for node in level:
            for child in node.values() if type(node) is dict else node:
                if type(child) is dict or type(child) is list:
                    below.append(child)
        level = below
        depth += 1
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_shallow)]
"""A free-form JSON object that the worker request will carry."""


class TextBlock(_Model):
    type: Literal["text"]
    text: str


class Base64ImageSource(_Model):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class URLImageSource(_Model):
    type: Literal["url"]
    url: str


class FileSource(_Model):
    type: Literal["file"]
    file_id: str


class ImageBlock(_Model):
    type: Literal["image"]
    source: Annotated[Union[Base64ImageSource, URLImageSource, FileSource], Field(discriminator="type")]


class Base64PDFSource(_Model):
    type: Literal["base64"]
    media_type: Literal["application/pdf"]
    data: str


class PlainTextSource(_Model):
    type: Literal["text"]
    media_type: Literal["text/plain"]
    data: str


class ContentBlockSource(_Model):
    type: Literal["content"]
    content: Annotated[
        list[Annotated[Union[TextBlock, ImageBlock], Field(discriminator="type")]],
        BeforeValidator(
            lambda value: [{"type": "text", "text": value}] if isinstance(value, str) else value,
            json_schema_input_type=Union[
                str, list[Annotated[Union[TextBlock, ImageBlock], Field(discriminator="type")]]
            ],
        ),
    ]


class URLPDFSource(_Model):
    type: Literal["url"]
    url: str


class DocumentBlock(_Model):
    type: Literal["document"]
    source: Annotated[
        Union[Base64PDFSource, PlainTextSource, ContentBlockSource, URLPDFSource, FileSource],
        Field(discriminator="type"),
    ]
    title: str | None = None
    context: str | None = None


class CitationsConfig(_Model):
    enabled: bool | None = None


class SearchResultBlock(_Model):
    """A search result the application retrieved (its own RAG, a tool), which the model may cite
    by `source`."""

    type: Literal["search_result"]
    source: str
    title: str
    content: list[TextBlock]
    citations: CitationsConfig | None = None


class ToolUseBlock(_Model):
    type: Literal["tool_use"]
    id: str
    name: str
    input: JsonObject


ToolResultContent = Annotated[
    Union[TextBlock, ImageBlock, DocumentBlock, SearchResultBlock], Field(discriminator="type")
]


class ToolResultBlock(_Model):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[ToolResultContent] | None = None
    is_error: bool | None = None


class ThinkingBlock(_Model):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Model):
    type: Literal["redacted_thinking"]
    data: str


ContentBlock = Annotated[
    Union[
        TextBlock,
        ImageBlock,
        DocumentBlock,
        SearchResultBlock,
        ToolUseBlock,
        ToolResultBlock,
        ThinkingBlock,
        RedactedThinkingBlock,
    ],
    Field(discriminator="type"),
]


def _string_to_text_blocks(value: Any) -> Any:
    return [{"type": "text", "text": value}] if isinstance(value, str) else value


class Message(_Model):
    role: Literal["user", "assistant", "system"]
    content: Annotated[
        list[ContentBlock],
        BeforeValidator(_string_to_text_blocks, json_schema_input_type=Union[str, list[ContentBlock]]),
    ]


class CustomTool(_Model):
    type: Literal["custom"] | None = None
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_-]+$")]
    description: str | None = None
    input_schema: JsonObject


def _only_custom_tools(value: Any) -> Any:
    if isinstance(value, list):
        for index, tool in enumerate(value):
            if isinstance(tool, dict) and tool.get("type") not in (None, "custom"):
                raise InvalidRequestError(
                    f"tools.{index}.type: server tool {tool.get('type')!r} is not supported by this "
                    "gateway; define it as a custom tool with an input_schema"
                )
    return value


class ToolChoiceAuto(_Model):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(_Model):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(_Model):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(_Model):
    type: Literal["none"]


ToolChoice = Annotated[
    Union[ToolChoiceAuto, ToolChoiceAny, ToolChoiceTool, ToolChoiceNone], Field(discriminator="type")
]


class ThinkingEnabled(_Model):
    type: Literal["enabled"]
    budget_tokens: Annotated[int, Field(ge=1024)]


class ThinkingDisabled(_Model):
    type: Literal["disabled"]


class ThinkingAdaptive(_Model):
    type: Literal["adaptive"]


ThinkingConfig = Annotated[Union[ThinkingEnabled, ThinkingDisabled, ThinkingAdaptive], Field(discriminator="type")]


class Metadata(_Model):
    user_id: str | None = None


class JsonOutputFormat(_Model):
    type: Literal["json_schema"]
    schema_: Annotated[JsonObject, Field(alias="schema")]


class OutputConfig(_Model):
    effort: str | None = None
    format: JsonOutputFormat | None = None


class CountTokensRequest(_Model):
    model: Annotated[str, Field(min_length=1, max_length=MAX_MODEL_NAME_LENGTH)]
    messages: Annotated[list[Message], Field(min_length=1)]
    system: (
        Annotated[
            list[TextBlock], BeforeValidator(_string_to_text_blocks, json_schema_input_type=Union[str, list[TextBlock]])
        ]
        | None
    ) = None
    tools: Annotated[list[CustomTool], BeforeValidator(_only_custom_tools)] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None

    @property
    def thinking_enabled(self) -> bool:
        return self.thinking is not None and self.thinking.type != "disabled"


class MessagesRequest(CountTokensRequest):
    max_tokens: Annotated[int, Field(ge=1)]
    stream: bool | None = None
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    stop_sequences: list[str] | None = None
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None
    output_format: JsonOutputFormat | None = None


def _field_path(loc: tuple[Any, ...], data: Any) -> str:
    """The error's location in the client's own terms, without pydantic's union labels.

    Walks the location alongside the parsed body: a part that is a real key or index is
    kept, a union label (a tag value or branch name) is dropped, and a last part that names
    a field missing from an object is kept.
    """
    parts: list[str] = []
    node = data
    for position, part in enumerate(loc):
        if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
            node = node[part]
        elif isinstance(part, str) and isinstance(node, dict) and part in node:
            node = node[part]
        elif not (position == len(loc) - 1 and isinstance(node, dict)):
            continue
        parts.append(str(part))
    return ".".join(parts)


def _message_for(error: dict[str, Any]) -> str:
    if error["type"] == "too_short" and tuple(error["loc"]) == ("messages",):
        return "at least one message is required"
    if error["type"] == "union_tag_invalid":
        context = error.get("ctx") or {}
        return (
            f"Input tag {context.get('tag')!r} found using 'type' does not match any of the "
            f"expected tags: {context.get('expected_tags')}"
        )
    return error["msg"]


def load_json_object(body: bytes) -> dict[str, Any]:
    """The request body as parsed JSON, which must be an object."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("The request body must be a JSON object")
    return data


def _validate(model: type[_Model], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Of a union's failed branches, the deepest error is the one the client meant.
        first = max(exc.errors(include_url=False), key=lambda error: len(error["loc"]))
        path = _field_path(tuple(first["loc"]), data)
        message = f"{path}: {_message_for(first)}" if path else _message_for(first)
        raise InvalidRequestError(message) from None


def messages_request_from(data: dict[str, Any]) -> MessagesRequest:
    """A parsed body (`load_json_object`) validated as a Messages request."""
    request: MessagesRequest = _validate(MessagesRequest, data)
    thinking = request.thinking
    if isinstance(thinking, ThinkingEnabled) and thinking.budget_tokens >= request.max_tokens:
        raise InvalidRequestError(
            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
            "documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size"
        )
    return request


def count_tokens_request_from(data: dict[str, Any]) -> CountTokensRequest:
    request: CountTokensRequest = _validate(CountTokensRequest, data)
    return request


def parse_messages_request(body: bytes) -> MessagesRequest:
    return messages_request_from(load_json_object(body))


def parse_count_tokens_request(body: bytes) -> CountTokensRequest:
    return count_tokens_request_from(load_json_object(body))
