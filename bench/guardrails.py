"""`make bench-guardrails`: what the guardrails add on the request path, measured in process.

- judging and masking a 2 KB request (prose and code, five personal values in it), and Claude Code's first
  request (bench/claude_code_request.json, ~76 KB), first seen and repeated (the next turn of a
  session: texts already judged are remembered by hash, not scanned again);
- the answer side per stream chunk with restore on: a text_delta event through the answer guard,
  placeholders split across chunks included;
- the same with output deny rules (phrases) judged as the answer streams;
- the import time of the guardrail modules (over the translation core the app imports anyway).

Policy: personal data masked and restored, three deny rules of 20 phrases and 2 patterns each,
prompt-injection heuristics on. Prints a table and writes bench/guardrails.json.

    python -m bench.guardrails [--repeat N]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).parent

POLICY = {
    "pii": {"mode": "mask", "restore": True},
    "content": {
        "deny": [
            {
                "name": f"rule-{rule}",
                "phrases": [f"forbidden phrase {rule}-{n}" for n in range(20)],
                "patterns": [rf"secret project \d{{3}}-{rule}", rf"codename [a-z]+-{rule}x"],
            }
            for rule in range(3)
        ],
        "prompt_injection": "flag",
    },
}

# 764 characters of a developer's message: prose and code, with two personal values (an email, a phone).
PROSE = (
    "Please review the deployment notes below and reply to jane.doe@example.org by Friday; the "
    "rollout is blocked until the retry loop is fixed. The on-call number is (415) 555-2671.\n"
    "```python\n"
    "def handler(event, context):\n"
    "    body = json.loads(event.get('body') or '{}')\n"
    "    for attempt in range(3):\n"
    "        try:\n"
    "            return {'statusCode': 200, 'body': json.dumps(process(body))}\n"
    "        except TimeoutError:\n"
    "            time.sleep(2 ** attempt)\n"
    "    return {'statusCode': 504, 'body': 'timed out'}\n"
    "```\n"
    "Version 1.2.3 fixed the parser; see commit 3f9a0c1d2e4b and the ticket OPS-1182 for the "
    "details of what changed, and why the staging run on 2026-11-30 at 14:05 failed twice. "
    "The queue depth peaked at 1,204 messages and drained within 90 seconds after the fix. "
)


_TEXT_START = (
    "content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
)


def _text_delta(text: str) -> tuple[str, dict[str, Any]]:
    return (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
    )


def _two_kb_request() -> dict[str, Any]:
    text = (PROSE * 3)[:2048]
    return {"model": "m", "max_tokens": 256, "messages": [{"role": "user", "content": text}]}


def _timed(function: Callable[[], Any], repeat: int) -> float:
    """The median of `repeat` runs, in ms."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


def _import_ms() -> float:
    """What the guardrail modules add to an import of the core the app loads anyway."""
    code = "import parley.core.stream, parley.core.errors, time; t = time.perf_counter(); "
    code += "import parley.core.request_guard, parley.core.answer_guard; print((time.perf_counter() - t) * 1000)"
    runs = [float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(5)]
    return statistics.median(runs)


def measure(repeat: int) -> dict[str, Any]:
    from parley.core.answer_guard import answer_guard_for
    from parley.core.policy import parse_policy
    from parley.core.request_guard import JudgedBlocks, guard_messages_request

    policy = parse_policy(POLICY, version="account#bench@1")
    key = b"k" * 32
    small = _two_kb_request()
    claude_code = json.loads((HERE / "claude_code_request.json").read_text())

    def first_sight(body: dict[str, Any]) -> Callable[[], Any]:
        return lambda: guard_messages_request(copy.deepcopy(body), policy, key, JudgedBlocks())

    def copy_only(body: dict[str, Any]) -> Callable[[], Any]:
        return lambda: copy.deepcopy(body)

    def repeated(body: dict[str, Any]) -> Callable[[], Any]:
        memo = JudgedBlocks()
        guard_messages_request(copy.deepcopy(body), policy, key, memo)
        return lambda: guard_messages_request(copy.deepcopy(body), policy, key, memo)

    def net(case: Callable[[], Any], body: dict[str, Any]) -> float:
        return max(0.0, _timed(case, repeat) - _timed(copy_only(body), repeat))

    results: dict[str, Any] = {
        "request_2kb_ms": net(first_sight(small), small),
        "request_2kb_repeated_ms": net(repeated(small), small),
        "claude_code_76kb_first_ms": net(first_sight(claude_code), claude_code),
        "claude_code_76kb_repeated_ms": net(repeated(claude_code), claude_code),
    }

    guarded = guard_messages_request(copy.deepcopy(small), policy, key, JudgedBlocks())
    placeholder = next(iter(guarded.restore_map))
    text = f"Sure, I will write to {placeholder} today about the staging host and the notes. " * 50
    chunks = [text[i : i + 7] for i in range(0, len(text), 7)]  # cuts every placeholder

    def per_chunk(with_rules: bool) -> float:
        chosen = policy if with_rules else parse_policy({"pii": POLICY["pii"]}, version="account#bench@2")
        best = float("inf")
        for _ in range(max(3, repeat // 20)):
            guard = answer_guard_for(chosen, guarded.restore_map, key)
            assert guard is not None
            events = [[_text_delta(chunk)] for chunk in chunks]
            guard.events([_TEXT_START])
            started = time.perf_counter()
            for batch in events:
                guard.events(batch)
            best = min(best, (time.perf_counter() - started) / len(chunks) * 1e6)
        return best

    results["stream_chunk_restore_us"] = per_chunk(False)
    results["stream_chunk_restore_and_rules_us"] = per_chunk(True)
    results["import_ms"] = _import_ms()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    results = measure(args.repeat)
    rows = [
        ("2 KB request, first seen", f"{results['request_2kb_ms']:.3f} ms", "<= 1 ms"),
        ("2 KB request, repeated", f"{results['request_2kb_repeated_ms']:.3f} ms", "<= 1 ms"),
        ("Claude Code 76 KB, first seen", f"{results['claude_code_76kb_first_ms']:.3f} ms", "<= 10 ms"),
        ("Claude Code 76 KB, repeated", f"{results['claude_code_76kb_repeated_ms']:.3f} ms", "<= 1 ms"),
        ("stream chunk, restore on", f"{results['stream_chunk_restore_us']:.2f} us", "<= 5 us"),
        ("stream chunk, restore + deny rules", f"{results['stream_chunk_restore_and_rules_us']:.2f} us", ""),
        ("import of the guardrail modules", f"{results['import_ms']:.0f} ms", ""),
    ]
    width = max(len(row[0]) for row in rows)
    for name, value, aim in rows:
        print(f"{name:<{width}}  {value:>12}  {aim}")
    (HERE / "guardrails.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
