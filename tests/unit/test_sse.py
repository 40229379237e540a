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


def test_a_12_mib_event_fed_in_64_kib_pieces_decodes_whole():
    value = ("é€" * (2 * 1024 * 1024)).encode()  # 10 MiB of 2- and 3-byte characters, cut mid-character
    body = (
        b": keep-alive\r\nevent: x\r\ndata: "
        + value
        + b"\r\ndata: "
        + b"x" * (2 * 1024 * 1024)
        + b"\r\n\r\ndata: [DONE]\n\n"
    )
    decoder = SSEDecoder()
    payloads = []
    for start in range(0, len(body), 64 * 1024):
        payloads += decoder.feed(body[start : start + 64 * 1024])
    assert payloads == [value.decode() + "\n" + "x" * (2 * 1024 * 1024), "[DONE]"]
    assert decoder.close() == []


def test_every_split_gives_the_same_payloads():
    body = "data: a\r\ndata: ü€😀\n\n: c\ndata:b\n\nevent: e\ndata: [DONE]\r\n\r\n".encode()
    for cut in range(1, len(body)):
        decoder = SSEDecoder()
        assert decoder.feed(body[:cut]) + decoder.feed(body[cut:]) == ["a\nü€😀", "b", "[DONE]"], cut


def test_an_event_too_large_across_many_feeds_is_refused():
    decoder = SSEDecoder(max_event_bytes=1024)
    decoder.feed(b"data: " + b"x" * 500 + b"\n")
    with pytest.raises(ApiError):
        for _ in range(10):
            decoder.feed(b"data: " + b"x" * 100)
