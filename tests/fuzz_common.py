"""What every fuzzer of the suite shares: the hypothesis settings (fixed and reproducible, the same
cases on every run: no example database, derandomized), and the paths into a JSON value that
mutations pick from."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, Phase, settings

__all__ = ["FUZZ_SCALE", "FUZZ_SETTINGS", "fuzz", "json_paths"]

FUZZ_SCALE = float(os.environ.get("PARLEY_FUZZ_SCALE", "1"))

FUZZ_SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def fuzz(examples: int) -> settings:
    """FUZZ_SETTINGS with this many examples (PARLEY_FUZZ_SCALE multiplies them, e.g. 0.1 or 10).
    PARLEY_FUZZ_SHRINK=0 reports each failure as found, unshrunk: fast while many fail."""
    phases = [phase for phase in Phase if phase != Phase.shrink or os.environ.get("PARLEY_FUZZ_SHRINK") != "0"]
    return settings(FUZZ_SETTINGS, max_examples=max(1, round(examples * FUZZ_SCALE)), phases=phases)


def json_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside `value` (the root excluded)."""
    found: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        found.append((*prefix, key))
        found.extend(json_paths(child, (*prefix, key)))
    return found
