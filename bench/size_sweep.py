"""`python -m bench.size_sweep`: the cost of one huge worker event, by size: is it linear?

One worker stream event carrying 0.75, 1.5, 3, 6 and 12 MiB of text (and one carrying as much tool
call arguments), relayed:

- through the core: `WorkerSSETranslator` fed the stream in 64 KiB pieces, as the worker client hands
  them over; CPU time (`time.process_time`), the best of `--repeat` runs;
- with `--app`, through the running Parley: the fake worker (tests/fakeworker's RawAnswer) sends the
  stream in 64 KiB chunks, Parley on uvicorn (in this process, with DynamoDB Local) relays it to an
  httpx client that reads the bytes; this process's CPU time for the exchange, minus that of reading
  the same stream from the worker directly, the best of `--repeat` runs.

Prints microseconds per KiB for each size and the ratio of the per-KiB cost at the largest size to the
smallest (16 would be quadratic), and at 12 MiB to 3 MiB, which the verdict reads (1: linear, 4:
quadratic; the smallest sizes still carry a request's fixed cost). Another copy of the code is measured
by putting it first on the path:

    python -m bench.size_sweep [--app] [--repeat N] [--piece-kib K] [--json PATH]
    PYTHONPATH=/tmp/parley-before/shared python -m bench.size_sweep --app
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson

import parley
from parley.core.response import AnswerContext
from parley.core.stream import WorkerSSETranslator

MIB = 1024 * 1024
SIZES_MIB = (0.75, 1.5, 3, 6, 12)
PIECE = 64 * 1024
KINDS = ("text", "tool arguments")
_WORDS = 'The quick brown fox jumps over the lazy dog; 0123456789 "quoted" \\ back\nslash. '


def _text(size: int) -> str:
    return (_WORDS * (size // len(_WORDS) + 1))[:size]


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-sweep",
        "object": "chat.completion.chunk",
        "model": "sweep",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        chunk["usage"] = usage
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def worker_stream(kind: str, size: int) -> bytes:
    """A whole worker stream whose one big event carries `size` bytes of text or tool arguments."""
    if kind == "text":
        big = _chunk({"content": _text(size)})
        finish = "stop"
    else:
        arguments = orjson.dumps({"content": _text(size)}).decode()
        call = {
            "index": 0,
            "id": "call_sweep",
            "type": "function",
            "function": {"name": "Write", "arguments": arguments},
        }
        big = _chunk({"tool_calls": [call]})
        finish = "tool_calls"
    usage = {"prompt_tokens": 10, "completion_tokens": size // 4, "total_tokens": 10 + size // 4}
    return _chunk({"role": "assistant", "content": ""}) + big + _chunk({}, finish, usage) + b"data: [DONE]\n\n"


def _best_cpu(run: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


def core_cost(data: bytes, repeat: int) -> float:
    """CPU seconds to translate `data` fed in 64 KiB pieces."""
    context = AnswerContext(model="claude-sweep", message_id="msg_01SweepSweepSweepSweepSw", input_tokens_estimate=10)
    pieces = [data[i : i + PIECE] for i in range(0, len(data), PIECE)]

    def run() -> None:
        translator = WorkerSSETranslator(context)
        events = []
        for piece in pieces:
            events += translator.feed(piece)
        events += translator.end()
        assert events[-1][0] == "message_stop", events[-1]

    return _best_cpu(run, repeat)


@contextmanager
def running_parley() -> Iterator[tuple[Any, Any, str]]:
    """DynamoDB Local, the fake worker and Parley on uvicorn, in this process: (worker, http, model)."""
    import httpx

    from parley.io.routes import Route, Timeouts, Worker
    from parley.settings import Settings
    from tests.fakeworker import FakeWorker
    from tests.stack import embedded_dynamodb, parley_stack

    timeouts = Timeouts(connect=5.0, first_byte=60.0, idle=60.0, buffered=60.0)
    with embedded_dynamodb() as dynamodb, FakeWorker(model="sweep") as worker:
        route = Route(
            model="claude-sweep", workers=(Worker(base_url=worker.base_url, model="sweep"),), timeouts=timeouts
        )
        settings = Settings(keys_table="sweep-keys", routes_table="sweep-routes", worker_attempts=1)
        with parley_stack(dynamodb, settings, [route], account="sweep", key_name="sweep") as stack:
            headers = {"x-api-key": stack.key, "anthropic-version": "2023-06-01"}
            with (
                httpx.Client(base_url=stack.url, headers=headers, timeout=120) as http,
                httpx.Client(base_url=worker.base_url, timeout=120) as direct,
            ):
                yield worker, (http, direct), "claude-sweep"


def app_cost(worker: Any, clients: tuple[Any, Any], model: str, data: bytes, repeat: int) -> float:
    """CPU seconds of this process for the exchange through Parley, minus reading it from the worker
    (each over a client made once: making one costs more than a small answer)."""
    from tests.fakeworker import RawAnswer

    http, worker_http = clients

    pieces = [data[i : i + PIECE] for i in range(0, len(data), PIECE)]
    head = [(b"content-type", b"text/event-stream"), (b"transfer-encoding", b"chunked")]
    body = {"model": model, "max_tokens": 1024, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}

    def through_parley() -> None:
        worker.enqueue(RawAnswer(status=200, headers=head, chunks=pieces, chunked=True))
        with http.stream("POST", "/v1/messages", json=body) as response:
            tail = b""
            for chunk in response.iter_bytes():
                tail = (tail + chunk)[-200:]
        assert response.status_code == 200 and b"message_stop" in tail, tail

    def direct() -> None:
        worker.enqueue(RawAnswer(status=200, headers=head, chunks=pieces, chunked=True))
        with worker_http.stream("POST", "/chat/completions", json={"stream": True}) as answer:
            for _ in answer.iter_bytes():
                pass

    return _best_cpu(through_parley, repeat) - _best_cpu(direct, repeat)


def sweep(cost: Callable[[bytes], float]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for kind in KINDS:
        rows = []
        for mib in SIZES_MIB:
            size = int(mib * MIB)
            seconds = cost(worker_stream(kind, size))
            per_kib = round(seconds * 1e6 / (size / 1024), 3)
            rows.append({"mib": mib, "cpu_ms": round(seconds * 1000, 2), "us_per_kib": per_kib})
        by_size = {row["mib"]: row["us_per_kib"] for row in rows}
        results[kind] = {
            "sizes": rows,
            "ratio_largest_to_smallest": _ratio(by_size[SIZES_MIB[-1]], by_size[SIZES_MIB[0]]),
            "ratio_12_to_3_mib": _ratio(by_size[12], by_size[3]),
        }
    return results


def _ratio(big: float, small: float) -> float:
    return round(big / small, 2) if small > 0 else float("nan")


def verdict(ratio: float) -> str:
    """From the per-KiB cost at 12 MiB against 3 MiB (four times the bytes): 1 if linear, 4 if quadratic.
    (The smallest sizes carry a request's fixed cost, and fit in caches: they are no baseline.)"""
    if ratio < 1.5:
        return "linear"
    if ratio < 2.5:
        return "worse than linear"
    return "quadratic-like"


def table(title: str, results: dict[str, Any]) -> str:
    lines = [title]
    for kind, result in results.items():
        cells = ", ".join(f"{row['mib']:g} MiB {row['us_per_kib']:.2f}" for row in result["sizes"])
        wide, narrow = result["ratio_largest_to_smallest"], result["ratio_12_to_3_mib"]
        lines.append(
            f"  {kind:<15} us/KiB: {cells} | per-KiB cost, 12 vs 0.75 MiB: {wide:.2f}x, "
            f"12 vs 3 MiB: {narrow:.2f}x ({verdict(narrow)})"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", action="store_true", help="also through the running Parley (starts DynamoDB Local)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--piece-kib", type=int, default=64, help="the worker's read/chunk size")
    parser.add_argument("--json", type=Path, help="write the figures here as well")
    args = parser.parse_args()
    global PIECE
    PIECE = args.piece_kib * 1024
    code = str(Path(parley.__file__).resolve().parents[1])
    out: dict[str, Any] = {"code": code, "piece_bytes": PIECE}
    out["core"] = sweep(lambda data: core_cost(data, args.repeat))
    print(table(f"core: WorkerSSETranslator, {args.piece_kib} KiB pieces (code: {code})", out["core"]), flush=True)
    if args.app:
        with running_parley() as (worker, clients, model):
            out["app"] = sweep(lambda data: app_cost(worker, clients, model, data, args.repeat))
        title = f"through Parley on uvicorn (added CPU of the process, worker chunks of {args.piece_kib} KiB)"
        print(table(title, out["app"]))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
