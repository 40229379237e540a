"""What the worker receives: the Anthropic request translated to Chat Completions."""

from __future__ import annotations

import base64
import json

import pytest

from .helpers import (
    MAX_OUTPUT_TOKENS,
    WEATHER_TOOL,
    WORKER_MODEL,
    last_worker_body,
    pdf_of,
    request,
    sdk_stream_final,
    stream_raw,
)

# A 1×1 transparent PNG.
PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
BILLING_LINE = "x-anthropic-billing-header: cc_version=2.0.14.7f3; cc_entrypoint=cli; cch=5d0e1;"


def tiny_pdf(text: str) -> bytes:
    """A one-page PDF whose page shows `text` in Helvetica."""
    content = b"BT /F1 12 Tf 20 50 Td (" + text.encode("latin-1") + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 400 100] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    return pdf_of(objects)


def test_system_string_is_the_first_system_message(client, worker):
    client.messages.create(**request(system="You are terse."))
    body = last_worker_body(worker)
    assert body["model"] == WORKER_MODEL
    assert body["messages"] == [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello"}]


def test_system_blocks_become_one_leading_system_message(client, worker):
    system = [
        {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Answer in French."},
    ]
    client.messages.create(**request(system=system))
    messages = last_worker_body(worker)["messages"]
    assert messages[0]["role"] == "system"
    content = messages[0]["content"]
    assert content.index("You are terse.") < content.index("Answer in French.")
    assert [message["role"] for message in messages] == ["system", "user"]
    assert "cache_control" not in json.dumps(last_worker_body(worker))


def test_claude_code_billing_header_line_is_dropped(client, worker):
    system = [
        {"type": "text", "text": BILLING_LINE},
        {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
    ]
    client.messages.create(**request(system=system))
    body = last_worker_body(worker)
    assert body["messages"][0] == {
        "role": "system",
        "content": "You are Claude Code, Anthropic's official CLI for Claude.",
    }
    assert "x-anthropic-billing-header" not in json.dumps(body)


def test_system_role_message_is_kept_in_place(client, worker):
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "system", "content": "From now on, answer in one word."},
        {"role": "user", "content": "Explain DNS."},
    ]
    client.messages.create(**request(system="You are helpful.", messages=messages))
    assert last_worker_body(worker)["messages"] == [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "system", "content": "From now on, answer in one word."},
        {"role": "user", "content": "Explain DNS."},
    ]


def test_tools_become_functions_with_parameters(client, worker):
    client.messages.create(**request(tools=[WEATHER_TOOL]))
    assert last_worker_body(worker)["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "parameters": WEATHER_TOOL["input_schema"],
            },
        }
    ]


@pytest.mark.parametrize(
    "tool_choice,expected",
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
        ({"type": "none"}, "none"),
    ],
    ids=["auto", "any", "tool", "none"],
)
def test_tool_choice(client, worker, tool_choice, expected):
    client.messages.create(**request(tools=[WEATHER_TOOL], tool_choice=tool_choice))
    body = last_worker_body(worker)
    assert body["tool_choice"] == expected
    assert "parallel_tool_calls" not in body


@pytest.mark.parametrize("choice", ["auto", "any"])
def test_disable_parallel_tool_use(client, worker, choice):
    client.messages.create(
        **request(tools=[WEATHER_TOOL], tool_choice={"type": choice, "disable_parallel_tool_use": True})
    )
    assert last_worker_body(worker)["parallel_tool_calls"] is False


def test_sampling_stop_sequences_and_user(client, worker):
    client.messages.create(
        **request(
            stop_sequences=["END", "\n\nHuman:"],
            metadata={"user_id": "user-42"},
            # Not parameters of this SDK version, but still part of the Messages API.
            extra_body={"temperature": 0.2, "top_p": 0.9, "top_k": 40},
        )
    )
    body = last_worker_body(worker)
    assert body["stop"] == ["END", "\n\nHuman:"]
    assert body["user"] == "user-42"
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.2, 0.9, 40)


def test_streaming_asks_the_worker_for_usage(client, worker):
    sdk_stream_final(client, **request())
    body = last_worker_body(worker)
    assert body["stream"] is True
    assert body["stream_options"]["include_usage"] is True

    client.messages.create(**request())
    body = last_worker_body(worker)
    assert not body.get("stream") and "stream_options" not in body


@pytest.mark.parametrize("asked,sent", [(64000, MAX_OUTPUT_TOKENS), (100, 100)])
def test_max_tokens_is_clamped_to_the_route_limit(client, worker, asked, sent):
    message = client.messages.create(**request(max_tokens=asked))
    assert message.content[0].text == "ok"
    assert last_worker_body(worker)["max_tokens"] == sent


def test_images_become_image_url_parts(client, worker):
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_BASE64}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What is in these pictures?"},
    ]
    client.messages.create(**request(messages=[{"role": "user", "content": content}]))
    assert last_worker_body(worker)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_BASE64}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                {"type": "text", "text": "What is in these pictures?"},
            ],
        }
    ]


def test_tool_history_becomes_tool_calls_and_tool_messages(client, worker):
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_01Paris", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_01Rome", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01Paris", "content": "18°C, cloudy"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01Rome",
                    "content": [{"type": "text", "text": "24°C, sunny"}],
                },
                {"type": "text", "text": "Which one is warmer?"},
            ],
        },
    ]
    client.messages.create(**request(tools=[WEATHER_TOOL], messages=messages))
    sent = last_worker_body(worker)["messages"]

    assert [message["role"] for message in sent] == ["user", "assistant", "tool", "tool", "user"]
    assistant = sent[1]
    assert assistant["content"] == "Checking both."
    assert [(call["id"], call["type"], call["function"]["name"]) for call in assistant["tool_calls"]] == [
        ("toolu_01Paris", "function", "get_weather"),
        ("toolu_01Rome", "function", "get_weather"),
    ]
    assert [json.loads(call["function"]["arguments"]) for call in assistant["tool_calls"]] == [
        {"city": "Paris"},
        {"city": "Rome"},
    ]
    assert sent[2] == {"role": "tool", "tool_call_id": "toolu_01Paris", "content": "18°C, cloudy"}
    assert sent[3] == {"role": "tool", "tool_call_id": "toolu_01Rome", "content": "24°C, sunny"}
    assert sent[4] == {"role": "user", "content": "Which one is warmer?"}


def test_thinking_blocks_in_history_are_not_sent(client, worker):
    messages = [
        {"role": "user", "content": "Capital of France?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "SECRET-CHAIN-OF-THOUGHT", "signature": "c2lnbmF0dXJl"},
                {"type": "redacted_thinking", "data": "REDACTED-PAYLOAD"},
                {"type": "text", "text": "Paris."},
            ],
        },
        {"role": "user", "content": "And of Italy?"},
    ]
    client.messages.create(**request(messages=messages))
    body = last_worker_body(worker)
    assert body["messages"] == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
    ]
    dumped = json.dumps(body)
    assert "SECRET-CHAIN-OF-THOUGHT" not in dumped and "REDACTED-PAYLOAD" not in dumped


@pytest.mark.parametrize(
    "source",
    [
        {
            "type": "base64",
            "media_type": "application/pdf",
            "data": base64.b64encode(tiny_pdf("Quarterly revenue grew 12 percent")).decode(),
        },
        {"type": "text", "media_type": "text/plain", "data": "Quarterly revenue grew 12 percent"},
    ],
    ids=["pdf", "plain-text"],
)
def test_documents_reach_the_worker_as_text(client, worker, source):
    content = [
        {"type": "document", "source": source, "title": "Q3 report"},
        {"type": "text", "text": "Summarise the report."},
    ]
    client.messages.create(**request(messages=[{"role": "user", "content": content}]))
    (message,) = last_worker_body(worker)["messages"]
    assert message["role"] == "user"
    text = message["content"] if isinstance(message["content"], str) else json.dumps(message["content"])
    assert "Quarterly revenue grew 12 percent" in text
    assert "Q3 report" in text
    assert text.index("Quarterly revenue") < text.index("Summarise the report.")


def test_structured_output_format_becomes_response_format(client, worker):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    client.messages.create(**request(output_config={"format": {"type": "json_schema", "schema": schema}}))
    response_format = last_worker_body(worker)["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["schema"] == schema


def test_claude_code_shaped_request_is_accepted_and_extras_are_not_forwarded(http, worker):
    body = request(
        model="claude-opus-4-6",
        max_tokens=32000,
        system=[
            {"type": "text", "text": BILLING_LINE},
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        ],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>context</system-reminder>"},
                    {"type": "text", "text": "Fix the bug.", "cache_control": {"type": "ephemeral"}},
                ],
            }
        ],
        tools=[{**WEATHER_TOOL, "cache_control": {"type": "ephemeral"}}],
        metadata={"user_id": "user_abc_account_def_session_123"},
        thinking={"type": "adaptive"},
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        output_config={"effort": "high"},
    )
    headers = {"anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27"}
    _, result = stream_raw(http, worker, None, path="/v1/messages?beta=true", headers=headers, **body)
    assert result.text == "ok" and result.message["model"] == "claude-opus-4-6"
    sent = json.dumps(last_worker_body(worker))
    for extra in ("cache_control", "context_management", "clear_thinking", "effort", "x-anthropic-billing-header"):
        assert extra not in sent, f"{extra} was forwarded to the worker"
    assert "Fix the bug." in sent and "You are Claude Code." in sent
