"""Message, request and tool-use ids in Anthropic's shape: a prefix, `01`, 22 base-58 characters."""

from __future__ import annotations

import re
from collections import Counter

from parley.core.ids import new_message_id, new_request_id, new_tool_use_id

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def test_ids_have_anthropics_shape_and_never_repeat():
    for make, prefix in ((new_message_id, "msg_01"), (new_request_id, "req_01"), (new_tool_use_id, "toolu_01")):
        ids = [make() for _ in range(2000)]
        assert all(re.fullmatch(re.escape(prefix) + f"[{_BASE58}]{{22}}", value) for value in ids), ids[:3]
        assert len(set(ids)) == len(ids)


def test_every_base58_digit_is_about_equally_likely():
    counts = Counter(char for _ in range(5000) for char in new_message_id()[6:])
    expected = 5000 * 22 / 58
    assert set(counts) == set(_BASE58)
    assert all(0.85 * expected < count < 1.15 * expected for count in counts.values()), counts


def test_only_anthropic_shaped_tool_use_ids_are_kept_from_workers():
    from parley.core.ids import is_tool_use_id, is_valid_tool_id
    from parley.core.response import tool_use_id

    for kept in ("toolu_01A09q90qw90lq917835lq9", "toolu_vrtx_01X", "toolu_" + "a" * 122):
        assert is_tool_use_id(kept) and tool_use_id(kept) == kept
    for replaced in (
        "chatcmpl-tool-8e8b1c",
        "call_abc",
        "toolu_",
        "toolu_01 x",
        "toolu_01x\n",
        "toolu_" + "a" * 123,
        7,
        None,
    ):
        assert not is_tool_use_id(replaced)
        assert re.fullmatch(f"toolu_01[{_BASE58}]{{22}}", tool_use_id(replaced))
    assert not is_valid_tool_id("call_1\n")  # the whole id must match the pattern
