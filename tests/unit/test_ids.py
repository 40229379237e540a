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
