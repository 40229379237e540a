"""The worker-stream SSE decoder: byte-safe, spec-following, bounded."""

from __future__ import annotations

import pytest

from parley.core.errors import ApiError
from parley.core.sse import SSEDecoder, encode_event


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert SSEDecoder().feed(b"data: first\ndata: second\n\n") == ["first\nsecond"]


def test_data_without_space_after_colon() -> None:
    assert SSEDecoder().feed(b"data:{}\n\n") == ["{}"]


def test_a_last_event_without_blank_line_still_counts_at_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.close() == ["[DONE]"]


def test_an_oversized_event_is_refused_not_buffered_forever() -> None:
    decoder = SSEDecoder(max_event_bytes=1024)
    with pytest.raises(ApiError):
        decoder.feed(b"data: " + b"x" * 2048)


def test_ping_is_anthropics_bytes() -> None:
    assert encode_event("ping", {"type": "ping"}) == b'event: ping\ndata: {"type": "ping"}\n\n'
