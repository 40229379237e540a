"""`make bench-cache`: what the response cache (docs/cache.md) costs on a miss and saves on a hit.

Over loopback HTTP against Parley under uvicorn with DynamoDB Local, as tests/stack.py stands it
up (`embedded_dynamodb`, `parley_stack`), in a process of its own; a fast fake worker in another
answers every call at once with a pre-rendered vLLM answer (tests/fakeworker's renderers, one
Chat Completions chunk per token). One account has no policy, the other
`{"cache": {"mode": "all"}}`. For a small answer (~50 tokens) and a large one (~4,000 tokens of
text and a tool call), interleaved round by round so that noise hits every case alike:

- buffered, no cache policy: the baseline (the worker's call);
- buffered, cache miss: the body changes every time (a counter in the user text), so each is
  a lookup, the lease, the worker's call and the write of the answer;
- buffered, cache hit: the same body every time;
- streamed, cache hit: time to the first event (message_start) and to the last byte;
- streamed, no cache policy: the same two, the baseline.

One keep-alive connection, one request at a time (bench/client.py), a short pause before each so
that what the last one left behind (a miss's lease let go, its usage) is not charged to it. Then
the cache table's own calls, made directly with boto3 on the same DynamoDB Local: the share of a
hit and of a miss that is the database's. Prints the tables (medians and p90s) and writes
bench/cache.json.

    python -m bench.cache [--iterations N] [--warmup N] [--gap-ms MS]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import socket
import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import httpx
import orjson

from .client import Connection, Timing

HERE = Path(__file__).parent
RESULTS = HERE / "cache.json"
WORKER_MODEL = "bench-worker"
SIZES = ("small", "large")
CACHED_ACCOUNT = "bench-cached"
CACHE_POLICY = {"cache": {"mode": "all", "ttl_seconds": 3600}}
FIRST_EVENT = b"event: message_start"

SMALL_TEXT = (
    "The rollout failed because the retry loop sleeps on the event loop. Move the back-off into an "
    "async sleep, cap it at three attempts, and log each failure with its request id, so that the "
    "next run shows where it stalls."
)
_PARAGRAPH = (
    "The handler reads the body once, validates it against the schema, and passes the parsed "
    "request to the service layer, which owns every call to the database. Each write carries a "
    "condition, so a retried request never applies twice, and a failed condition comes back as a "
    "named error the handler turns into a 409 for the client. Timeouts are set per call, not per "
    "request, so one slow read cannot eat the budget of the others, and the logs keep the request "
    "id on every line. "
)
LARGE_TEXT = "".join(f"Section {n}. {_PARAGRAPH}" for n in range(1, 42))
TOOL_CALL = {
    "name": "write_file",
    "arguments": {
        "path": "docs/rollout.md",
        "content": "# Rollout\n\n" + "Retry with an async back-off, three attempts at most, logged. " * 6,
    },
}
TOOLS = [
    {
        "name": "write_file",
        "description": "Write a file in the repository",
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    }
]


# -- the fake worker ------------------------------------------------------------------------------


def worker_answers() -> dict[str, dict[str, Any]]:
    """Per size: the buffered answer's body and the streamed answer's events, as vLLM writes them."""
    from tests.fakeworker import Answer, ToolCall
    from tests.fakeworker.scripts import render_buffered, render_stream

    asked = {"model": WORKER_MODEL, "stream": True, "stream_options": {"include_usage": True}}
    answers = {
        "small": Answer(text=SMALL_TEXT, prompt_tokens=40),
        "large": Answer(
            text=LARGE_TEXT,
            tool_calls=[ToolCall(TOOL_CALL["name"], TOOL_CALL["arguments"], id="call_bench")],
            prompt_tokens=180,
        ),
    }
    out = {}
    for size, answer in answers.items():
        events = render_stream(answer, asked)
        usage = orjson.loads(events[-2][len(b"data: ") :])["usage"]
        out[size] = {"buffered": render_buffered(answer, asked), "events": events, "usage": usage}
    return out


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _replies() -> dict[tuple[bytes, bool], bytes]:
    """(path prefix, streamed) -> the whole HTTP response, written in one go."""
    replies = {}
    for size, answer in worker_answers().items():
        body = answer["buffered"]
        replies[(f"/{size}/".encode(), False)] = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body) + body
        )
        replies[(f"/{size}/".encode(), True)] = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n"
            + b"".join(_http_chunk(event) for event in answer["events"])
            + b"0\r\n\r\n"
        )
    return replies


class _WorkerProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive; never parses a body. The path picks the size, `accept` a stream."""

    def __init__(self, replies: dict[tuple[bytes, bool], bytes]) -> None:
        self.replies = replies
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (head_end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[: head_end + 2]).lower()  # each header line ends in CRLF
            start = head.find(b"\r\ncontent-length:")
            length = int(head[start + 17 : head.find(b"\r\n", start + 2)]) if start >= 0 else 0
            if len(self.buffer) < head_end + 4 + length:
                return
            del self.buffer[: head_end + 4 + length]
            path = head[head.find(b" ") + 1 :]
            size = b"/large/" if path.startswith(b"/large/") else b"/small/"
            assert self.transport is not None
            self.transport.write(self.replies[(size, b"text/event-stream" in head)])


def serve_worker(port: int) -> None:
    """The fake worker on 127.0.0.1:`port`, until the process ends."""
    replies = _replies()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _WorkerProtocol(replies), "127.0.0.1", port, backlog=64)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


# -- Parley ---------------------------------------------------------------------------------------


def serve_parley(worker_base: str, pipe: Pipe) -> None:
    """DynamoDB Local and Parley under uvicorn (tests/stack.py), a route per size, a key without a
    policy and one under CACHE_POLICY; sends (url, plain key, cached key, DynamoDB's endpoint), serves
    until told to stop."""
    from parley.io.routes import Route, Worker
    from parley.settings import Settings
    from tests.stack import embedded_dynamodb, parley_stack

    routes = [
        Route(
            f"bench-{size}", (Worker(f"{worker_base}/{size}/v1", WORKER_MODEL, max_output_tokens=8192, tokenize=False),)
        )
        for size in SIZES
    ]
    with embedded_dynamodb() as dynamodb, parley_stack(dynamodb, Settings(), routes, account="bench-plain") as parley:
        parley.services.policies.put(CACHED_ACCOUNT, CACHE_POLICY)
        cached_key, _ = parley.services.keys.create(account=CACHED_ACCOUNT, name="bench")
        pipe.send((parley.url, parley.key, cached_key, dynamodb.meta.endpoint_url))
        pipe.recv()


def start(stack: ExitStack) -> tuple[str, str, str, str]:
    """The worker and Parley, each in a process of its own (spawned: no state shared with this one)."""
    from tests.stack import free_port

    context = multiprocessing.get_context("spawn")
    worker_port = free_port()
    worker = context.Process(target=serve_worker, args=(worker_port,), name="bench-cache-worker", daemon=True)
    worker.start()
    stack.callback(lambda: (worker.terminate(), worker.join(5)))
    ours, theirs = context.Pipe()
    parley = context.Process(
        target=serve_parley, args=(f"http://127.0.0.1:{worker_port}", theirs), name="bench-cache-parley"
    )
    parley.start()

    def stop() -> None:
        if parley.is_alive():
            ours.send("stop")
            parley.join(30)
        if parley.is_alive():
            parley.terminate()
            parley.join(5)

    stack.callback(stop)
    if not ours.poll(120):
        raise RuntimeError("Parley did not come up within 120 s")
    return ours.recv()


# -- the cases ------------------------------------------------------------------------------------


def request_body(size: str, text: str, stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": f"bench-{size}",
        "max_tokens": 8192,
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    }
    if size == "large":
        body["tools"] = TOOLS
    return orjson.dumps(body)


QUESTION = "Why did the rollout fail, and what should change before the next one?"
VERDICTS = {None: "no cache policy", "miss": "cache miss", "hit": "cache hit"}


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    size: str
    cached: bool  # the key under CACHE_POLICY
    stream: bool
    verdict: str | None  # the parley-cache header it must get (None: no header)
    vary: bool = False  # a new body every time (misses)

    @property
    def label(self) -> str:
        return f"{self.size}: {'streamed' if self.stream else 'buffered'}, {VERDICTS[self.verdict]}"

    def body(self, n: int) -> bytes:
        return request_body(self.size, f"{QUESTION} (#{n})" if self.vary else f"{QUESTION} (#0)", self.stream)


def cases() -> list[Case]:
    out = []
    for size in SIZES:
        out += [
            Case(f"{size}_buffered_plain", size, cached=False, stream=False, verdict=None),
            Case(f"{size}_buffered_miss", size, cached=True, stream=False, verdict="miss", vary=True),
            Case(f"{size}_buffered_hit", size, cached=True, stream=False, verdict="hit"),
            Case(f"{size}_streamed_hit", size, cached=True, stream=True, verdict="hit"),
            Case(f"{size}_streamed_plain", size, cached=False, stream=True, verdict=None),
        ]
    return out


def headers_for(key: str) -> dict[str, str]:
    return {"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"}


def check(url: str, keys: dict[bool, str], case: Case, n: int) -> bytes:
    """One request of `case` with httpx: it must answer 200 with the expected verdict. Its body."""
    response = httpx.post(
        f"{url}/v1/messages", content=case.body(n), headers=headers_for(keys[case.cached]), timeout=30
    )
    if response.status_code != 200 or response.headers.get("parley-cache") != case.verdict:
        raise RuntimeError(
            f"{case.name}: HTTP {response.status_code}, parley-cache {response.headers.get('parley-cache')!r} "
            f"(expected {case.verdict!r}): {response.text[:300]}"
        )
    if case.stream and b"event: message_stop" not in response.content:
        raise RuntimeError(f"{case.name}: the stream did not end: {response.content[-300:]!r}")
    return response.content


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": statistics.median(values), "p90_ms": percentile(values, 90), "n": len(values)}


def measure(url: str, keys: dict[bool, str], iterations: int, warmup: int, gap: float) -> dict[str, Any]:
    all_cases = cases()
    connection = Connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
    headers = {cached: headers_for(key) for cached, key in keys.items()}
    bodies = {case.name: case.body(0) for case in all_cases}
    counter = iter(range(1, 10**9))

    def send(case: Case) -> Timing:
        body = case.body(next(counter)) if case.vary else bodies[case.name]
        return connection.post("/v1/messages", body, headers[case.cached], FIRST_EVENT if case.stream else None)

    # The hits' entry kept (by a buffered miss: one entry serves both), then every case checked once.
    for size in SIZES:
        check(url, keys, Case("prime", size, cached=True, stream=False, verdict="miss"), 0)
    answered = {case.name: check(url, keys, case, next(counter)) for case in all_cases}

    samples: dict[str, dict[str, list[float]]] = {case.name: {"first_event": [], "total": []} for case in all_cases}
    started = time.perf_counter()
    for round_ in range(warmup + iterations):
        for case in all_cases:
            time.sleep(gap)  # what the last request left behind (its lease let go, its usage) done
            timing = send(case)
            if timing.status != 200:
                raise RuntimeError(f"{case.name}: HTTP {timing.status}: {timing.body[:300]!r}")
            if round_ < warmup:
                continue
            samples[case.name]["total"].append(timing.total_seconds * 1000)
            if case.stream:
                if timing.marker_seconds is None:
                    raise RuntimeError(f"{case.name}: no {FIRST_EVENT!r} in {timing.body[:300]!r}")
                samples[case.name]["first_event"].append(timing.marker_seconds * 1000)
    seconds = time.perf_counter() - started
    connection.close()
    for case in all_cases:  # still what they were: the hits hits, the misses misses
        check(url, keys, case, next(counter))

    out: dict[str, Any] = {}
    for case in all_cases:
        entry: dict[str, Any] = {"label": case.label, "response_bytes": len(answered[case.name])}
        entry["total"] = summary(samples[case.name]["total"])
        if case.stream:
            entry["first_event"] = summary(samples[case.name]["first_event"])
        out[case.name] = entry
    messages = {size: orjson.loads(answered[f"{size}_buffered_plain"]) for size in SIZES}
    return {"cases": out, "timed_seconds": seconds, "messages": messages}


def direct_dynamodb(endpoint: str, messages: dict[str, dict[str, Any]], n: int) -> dict[str, Any]:
    """The cache table's own calls, made directly (boto3 from this process, the code Parley runs):
    what a hit (a read) and a miss (a read, the lease, the write) spend in DynamoDB Local."""
    from parley.io.response_cache import ResponseCacheTable
    from parley.settings import Settings
    from tests.stack import dynamodb_client

    table = ResponseCacheTable(dynamodb_client(endpoint), Settings().response_cache_table)
    out: dict[str, Any] = {}
    for size, message in messages.items():
        samples: dict[str, list[float]] = {"get": [], "claim": [], "put": [], "release": []}
        for index in range(n + 10):  # the first 10 warm up
            key = f"bench-direct-{size}-{index}"
            timed = {}
            started = time.perf_counter()
            holder = table.claim(key, time.time(), 60.0)
            timed["claim"] = time.perf_counter() - started
            started = time.perf_counter()
            table.put(key, message, CACHED_ACCOUNT, 3600, time.time())
            timed["put"] = time.perf_counter() - started
            started = time.perf_counter()
            if table.get(key, time.time()) is None or holder is None:
                raise RuntimeError(f"the answer kept under {key} was not read back")
            timed["get"] = time.perf_counter() - started
            started = time.perf_counter()
            table.release(key, holder)
            timed["release"] = time.perf_counter() - started
            if index >= 10:
                for name, seconds in timed.items():
                    samples[name].append(seconds * 1000)
        out[size] = {name: summary(values) for name, values in samples.items()}
    return out


# -- the table ------------------------------------------------------------------------------------


def ms(value: float) -> str:
    return f"{value:.2f} ms"


def _aligned(lines: list[tuple[str, ...]]) -> str:
    """Rows under their header (the first line), the first column to the left, the others right."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for number, line in enumerate(lines):
        out.append(" | ".join([line[0].ljust(widths[0])] + [cell.rjust(widths[i]) for i, cell in enumerate(line) if i]))
        if number == 0:
            out.append("-+-".join("-" * width for width in widths))
    return "\n".join(out)


DIRECT_CALLS = {
    "get": "GetItem (a lookup; a hit's only call)",
    "claim": "PutItem, conditional (a miss's lease)",
    "put": "PutItem (a miss's answer kept)",
    "release": "DeleteItem, conditional (the lease let go, after the answer)",
}


def table(results: dict[str, Any]) -> str:
    header = ("case", "first event p50", "p90", "total p50", "p90", "vs no cache, p50", "answer bytes")
    lines: list[tuple[str, ...]] = [header]
    data = results["cases"]
    for case in cases():
        entry = data[case.name]
        baseline = data[f"{case.size}_{'streamed' if case.stream else 'buffered'}_plain"]
        first = entry.get("first_event")
        if case.verdict is None:
            versus = ""
        elif first is not None:
            versus = (
                f"{first['p50_ms'] - baseline['first_event']['p50_ms']:+.2f} / "
                f"{entry['total']['p50_ms'] - baseline['total']['p50_ms']:+.2f} ms"
            )
        else:
            versus = f"{entry['total']['p50_ms'] - baseline['total']['p50_ms']:+.2f} ms"
        lines.append(
            (
                case.label,
                ms(first["p50_ms"]) if first else "",
                ms(first["p90_ms"]) if first else "",
                ms(entry["total"]["p50_ms"]),
                ms(entry["total"]["p90_ms"]),
                versus,
                f"{entry['response_bytes']:,}",
            )
        )
    direct: list[tuple[str, ...]] = [("the cache table's calls, direct (boto3, DynamoDB Local)", "p50", "p90")]
    for size, calls in results["dynamodb_direct"].items():
        for name, label in DIRECT_CALLS.items():
            direct.append((f"{size}: {label}", ms(calls[name]["p50_ms"]), ms(calls[name]["p90_ms"])))
    return _aligned(lines) + "\n\n" + _aligned(direct)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500, help="timed rounds (each runs every case once)")
    parser.add_argument("--warmup", type=int, default=50, help="rounds run first, not timed")
    parser.add_argument(
        "--gap-ms", type=float, default=5.0, help="pause before each request, for the work the last one left behind"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    answers = worker_answers()
    load_at_start = os.getloadavg()
    with ExitStack() as stack:
        print("bench: starting DynamoDB Local, the fake worker and Parley", file=sys.stderr, flush=True)
        url, plain_key, cached_key, endpoint = start(stack)
        print(f"bench: {args.warmup} rounds of warm-up, {args.iterations} timed", file=sys.stderr, flush=True)
        results = measure(url, {False: plain_key, True: cached_key}, args.iterations, args.warmup, args.gap_ms / 1000)
        print("bench: the cache table's calls, direct", file=sys.stderr, flush=True)
        results["dynamodb_direct"] = direct_dynamodb(endpoint, results.pop("messages"), args.iterations // 2)
    results["iterations"], results["warmup"], results["gap_ms"] = args.iterations, args.warmup, args.gap_ms
    results["answers"] = {
        size: {
            "text_chars": len(SMALL_TEXT if size == "small" else LARGE_TEXT),
            "tool_call": size == "large",
            "completion_tokens": answer["usage"]["completion_tokens"],
            "worker_stream_events": len(answer["events"]),
            "worker_buffered_bytes": len(answer["buffered"]),
        }
        for size, answer in answers.items()
    }
    results["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
        "load_average": {"start": load_at_start, "end": os.getloadavg()},
    }
    for size, answer in results["answers"].items():
        tool = " and a tool call" if answer["tool_call"] else ""
        print(
            f"{size} answer: {answer['completion_tokens']:,} tokens ({answer['text_chars']:,} characters of text"
            f"{tool}), {answer['worker_stream_events']:,} worker stream events"
        )
    print(table(results))
    print(f"{args.iterations} timed rounds after {args.warmup} of warm-up, {results['timed_seconds']:.0f} s")
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
