"""`make bench`: Parley's overhead, side by side with calling the worker directly.

Starts, each in its own process: the embedded DynamoDB (Amazon DynamoDB Local, in memory), the
fast fake worker (bench/worker.py) and Parley under uvicorn exactly as the streaming function
runs it (bench/instrumented.py adds a DynamoDB call counter), its usage journal in a temporary
folder. Seeds routes and keys with the same code as `make dev`, then measures, with the same
client and the same Chat Completions body both ways:

- added p50/p99 latency, small buffered request and Claude Code's ~75 KB first request;
- added time to first token on a stream paced at one chunk every 20 ms;
- added cost per chunk (a 500-chunk stream: whole-stream time through Parley minus direct);
- requests per second at concurrency 16, instant worker, with wrk;
- import time of each Lambda entry point (`python -X importtime`), Parley's RSS after warm-up;
- DynamoDB calls on a warm request's critical path, and after it;
- with `--peer-litellm` (or `litellm` on PATH; `make bench-peer` installs it), LiteLLM's proxy
  on the same worker, the same way: its added latency and requests/s, as ratios to Parley's.

Then `make dev`'s own stack, started as a user starts it (`parley dev`: DynamoDB Local on disk
under a fresh PARLEY_DATA_DIR, the usage journal and its metering loop, the dev key), on the
same worker:

- a sustained run of 10,000 sequential small requests on one connection: p50 of the last 1,000
  against the first 1,000, the slowest request, how many took over 100 ms; the RSS of `parley
  dev` and of its DynamoDB Local (java) before and after; the usage journal left on disk;
- the same side-by-side measurements as above (the bench adds its paced and long routes);
- how long it takes to exit on SIGTERM after all that, its exit code, and that java is gone.

Prints one table with the ratios and writes bench/results.json.

    python -m bench.run [--requests N] [--seconds S] [--sustained N] [--meter-via-log]
                        [--peer-litellm PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import httpx
import orjson

from parley.core.anthropic_types import parse_messages_request
from parley.core.metering import Limits
from parley.core.request import WorkerProfile, messages_to_chat
from parley.io.keys import KeyStore
from parley.io.routes import Route, RouteStore, Worker
from parley.local.dynamodb_local import DynamoDBLocal, DynamoDBLocalUnavailableError
from parley.local.stack import _free_port, seed, use_local_aws_defaults
from parley.settings import Settings
from tests.stack import wait_until_healthy

from .client import Connection, Timing
from .worker import LONG_CHUNKS

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CLAUDE_CODE_REQUEST = BENCH / "claude_code_request.json"
RESULTS = BENCH / "results.json"
WORKER_MODEL = "bench-worker"
MAX_OUTPUT_TOKENS = 8192
MODES = ("instant", "paced", "long")
SMALL = {"model": "bench-instant", "max_tokens": 256, "messages": [{"role": "user", "content": "Hello"}]}
WORKER_HEADERS = {"content-type": "application/json"}
# `make dev`'s key (PARLEY_DEV_KEY), fixed so that the bench knows it without reading the banner.
DEV_KEY = "sk-parley-bench-dev-0123456789abcdefghijklmnopqrstuvwxyz"
SUSTAINED_REQUESTS, SUSTAINED_WINDOW = 10_000, 1_000
# A production key has limits: these are never reached, but every check they imply runs.
BENCH_LIMITS = Limits(requests_per_minute=10**9, tokens_per_minute=10**12, monthly_spend_usd=10.0**9)


# -- processes ------------------------------------------------------------------------------------


def _stop_at_exit(stack: ExitStack, process: subprocess.Popen[bytes], seconds: float) -> None:
    """End `process` with the stack (SIGTERM, then SIGKILL after `seconds`) unless it has ended."""

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(seconds)
            except subprocess.TimeoutExpired:
                process.kill()

    stack.callback(stop)


def _start(stack: ExitStack, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _stop_at_exit(stack, process, 10)
    return process


def _wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited: {process.stderr.read().decode() if process.stderr else ''}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


PEER_KEY = "sk-bench-peer-master-key-0123456789abcdef"


def start_litellm(stack: ExitStack, litellm: str, worker_base: str, env: dict[str, str]) -> tuple[int, str]:
    """LiteLLM's proxy on the same fake worker (its Chat Completions provider for vLLM), serving
    the bench's model names on its `/v1/messages` route. Returns its port and version."""
    port = _free_port()
    config = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "litellm.yaml"
    models = ("bench-instant", "claude-sonnet-4-5")
    config.write_text(
        "model_list:\n"
        + "".join(
            f"  - model_name: {name}\n    litellm_params:\n      model: hosted_vllm/{WORKER_MODEL}\n"
            f"      api_base: {worker_base}/instant/v1\n      api_key: none\n"
            for name in models
        )
    )
    peer_env = {**env, "LITELLM_MASTER_KEY": PEER_KEY, "LITELLM_LOG": "ERROR"}
    process = _start(stack, [litellm, "--config", str(config), "--port", str(port)], peer_env)
    _wait_for_port(port, process, seconds=180)
    python = Path(litellm).parent / "python"
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    return port, version


# -- payloads -------------------------------------------------------------------------------------


def payloads() -> dict[str, dict[str, Any]]:
    """Each request as Parley gets it (Anthropic) and as the worker gets it (Chat Completions)."""
    claude_code = json.loads(CLAUDE_CODE_REQUEST.read_text())
    cases = {
        "small": {**SMALL},
        "claude_code": {**claude_code, "model": "claude-sonnet-4-5", "stream": False},
        "paced": {**SMALL, "model": "bench-paced", "stream": True},
        "long": {**SMALL, "model": "bench-long", "max_tokens": 4096, "stream": True},
    }
    out = {}
    for name, anthropic in cases.items():
        body = orjson.dumps(anthropic)
        mode = {"paced": "paced", "long": "long"}.get(name, "instant")
        chat = messages_to_chat(
            parse_messages_request(body), WorkerProfile(WORKER_MODEL, max_output_tokens=MAX_OUTPUT_TOKENS)
        )
        out[name] = {"anthropic": body, "chat": orjson.dumps(chat), "worker_path": f"/{mode}/v1/chat/completions"}
    return out


# -- measurements ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def side_by_side(
    n: int, direct: Callable[[], Timing], gateway: Callable[[], Timing], field: str, gateway_name: str = "parley"
) -> dict[str, Any]:
    """n interleaved pairs (direct, then through the gateway), so that noise hits both alike."""
    samples: dict[str, list[float]] = {"direct": [], gateway_name: []}
    for _ in range(n):
        for name, call in (("direct", direct), (gateway_name, gateway)):
            timing = call()
            if timing.status != 200:
                raise RuntimeError(f"{name}: HTTP {timing.status}: {timing.body[:300]!r}")
            value = getattr(timing, field)
            if value is None:
                raise RuntimeError(f"{name}: no marker in {timing.body[:300]!r}")
            samples[name].append(value * 1000)
    return {
        name: {"p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99), "n": len(values)}
        for name, values in samples.items()
    }


def wrk_rps(url: str, body: bytes, headers: dict[str, str], seconds: float, runs: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        script = Path(scratch) / "post.lua"
        lua_headers = "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in headers.items())
        script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(body.decode())}\n{lua_headers}')
        rates = []
        for _ in range(runs):
            output = subprocess.run(
                ["wrk", "-t2", "-c16", f"-d{max(1, round(seconds))}s", "-s", str(script), url],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
            if non_2xx:
                raise RuntimeError(f"wrk got {non_2xx.group(1)} errors from {url}")
            rates.append(float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)))  # type: ignore[union-attr]
        return statistics.median(rates)


def import_ms(code: str, cwd: Path, runs: int = 5) -> dict[str, Any]:
    """Median total of `python -X importtime -c code` (top-level cumulative times), and the biggest."""
    totals, tops = [], {}
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    for _ in range(runs + 1):  # the first run also writes .pyc files, as the layer ships them: not counted
        stderr = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        total, top = 0, {}
        for line in stderr.splitlines():
            match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
            if match and len(match.group(3)) <= 2:  # top-level, and their direct children
                if not match.group(3):
                    total += int(match.group(2))
                top[match.group(4)] = int(match.group(2))
        totals.append(total / 1000)
        tops = top
    biggest = sorted(tops.items(), key=lambda item: -item[1])[:6]
    return {"ms": statistics.median(totals), "biggest_ms": {name: round(us / 1000, 1) for name, us in biggest}}


def layer_cold_imports(runs: int = 5) -> dict[str, Any] | None:
    """The API handler imported as Lambda imports it: from the layer that layers/parley/Makefile
    builds (for this machine's architecture and the template's Python), with nothing else on the
    path and no bytecode written; once with the layer's bytecode and once compiling from source,
    as a layer without bytecode does on every cold start. None without that Python here."""
    version = re.search(r"Runtime: python(\d+\.\d+)", (ROOT / "template.yaml").read_text()).group(1)  # type: ignore[union-attr]
    architecture = {"aarch64": "arm64", "arm64": "arm64", "x86_64": "x86_64"}[platform.machine()]
    with tempfile.TemporaryDirectory() as scratch:
        build = subprocess.run(
            ["make", "-s", "-C", str(ROOT / "layers" / "parley"), "build-ParleyLayer", f"ARTIFACTS_DIR={scratch}",
             f"ARCHITECTURE={architecture}", f"PYTHON_VERSION={version}", f"PIP={sys.executable} -m pip",
             "--eval", "print-python:; @echo PYTHON=$(PYTHON_FOR_BYTECODE)", "print-python"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        python = re.search(r"^PYTHON=(.*)$", build, re.M).group(1).strip()  # type: ignore[union-attr]
        if not python:
            return None
        code = (
            f"import sys; sys.path[:0] = [{scratch + '/python'!r}, {str(ROOT / 'functions' / 'api')!r}]; import handler"
        )
        out: dict[str, Any] = {"python": version}
        for name, env in (("bytecode", {}), ("source", {"PYTHONPYCACHEPREFIX": str(Path(scratch) / "none")})):
            seconds = []
            for _ in range(runs):
                started = time.perf_counter()
                subprocess.run([python, "-S", "-B", "-c", code], env={**env, "PATH": os.environ["PATH"]}, check=True)
                seconds.append((time.perf_counter() - started) * 1000)
            out[name + "_ms"] = statistics.median(seconds)
        return out


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def dynamodb_calls(parley_url: str, call: Callable[[], Timing], n: int) -> dict[str, Any]:
    """DynamoDB calls per warm request, on the critical path and after the response."""
    call()  # this key's first request fills the caches: not counted
    time.sleep(0.5)
    httpx.get(f"{parley_url}/_bench/dynamodb")
    for _ in range(n):
        call()
    time.sleep(1.0)  # let work scheduled after the response finish
    report = httpx.get(f"{parley_url}/_bench/dynamodb").json()
    out = {}
    for where in ("critical", "background"):
        entry = report.get(where, {"reads": 0, "writes": 0, "operations": {}})
        out[where] = {
            "reads": entry["reads"] / n,
            "writes": entry["writes"] / n,
            "operations": {name: count / n for name, count in sorted(entry["operations"].items())},
        }
    return out


# -- gateways -------------------------------------------------------------------------------------


def progress(what: str) -> None:
    print(f"bench: {what}", file=sys.stderr, flush=True)


def connect(stack: ExitStack, port: int) -> Connection:
    connection = Connection("127.0.0.1", port)
    stack.callback(connection.close)
    return connection


@dataclass(frozen=True, slots=True)
class Gateway:
    """A gateway's Messages API and the worker behind it, each on one keep-alive connection."""

    cases: dict[str, dict[str, Any]]
    to_worker: Connection
    worker_base: str
    to_gateway: Connection
    url: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.key, "anthropic-version": "2023-06-01", "content-type": "application/json"}

    def direct(self, case: str, marker: bytes | None = None) -> Callable[[], Timing]:
        body, path = self.cases[case]["chat"], self.cases[case]["worker_path"]
        headers = {**WORKER_HEADERS, "accept": "text/event-stream"} if marker else WORKER_HEADERS
        return lambda: self.to_worker.post(path, body, headers, marker)

    def through(self, case: str, marker: bytes | None = None, key: str | None = None) -> Callable[[], Timing]:
        body = self.cases[case]["anthropic"]
        headers = {**self.headers, "x-api-key": key or self.key}
        return lambda: self.to_gateway.post("/v1/messages", body, headers, marker)


def add_stream_routes(dynamodb: Any, worker_base: str) -> None:
    """The routes of the paced and the long stream (`make dev` seeds only bench-instant's)."""
    routes = RouteStore(dynamodb, Settings().routes_table)
    for mode in ("paced", "long"):
        routes.put(
            Route(
                f"bench-{mode}",
                (Worker(f"{worker_base}/{mode}/v1", WORKER_MODEL, max_output_tokens=MAX_OUTPUT_TOKENS),),
            )
        )


def warm_up(gateway: Gateway, requests: int) -> None:
    side_by_side(max(50, requests // 10), gateway.direct("small"), gateway.through("small"), "total_seconds")
    side_by_side(20, gateway.direct("claude_code"), gateway.through("claude_code"), "total_seconds")


def overheads(gateway: Gateway, requests: int, seconds: float) -> dict[str, Any]:
    """What the gateway adds to each kind of request, and its requests/s against the worker's."""
    cases, direct, through = gateway.cases, gateway.direct, gateway.through
    out: dict[str, Any] = {}
    progress(f"latency, small buffered request ({requests} pairs)")
    out["small"] = side_by_side(requests, direct("small"), through("small"), "total_seconds")
    progress(f"latency, Claude Code's first request ({len(cases['claude_code']['anthropic']):,} bytes)")
    out["claude_code"] = side_by_side(
        max(100, requests // 4), direct("claude_code"), through("claude_code"), "total_seconds"
    )
    out["claude_code"]["bytes"] = len(cases["claude_code"]["anthropic"])
    progress("time to first token, a chunk every 20 ms")
    out["ttft"] = side_by_side(
        30, direct("paced", b'"content"'), through("paced", b"content_block_delta"), "marker_seconds"
    )
    progress(f"per-chunk cost, {LONG_CHUNKS}-chunk stream")
    out["long_stream"] = side_by_side(30, direct("long", b"[DONE]"), through("long", b"message_stop"), "total_seconds")
    if shutil.which("wrk"):
        progress(f"requests per second at concurrency 16 (wrk, {seconds:g} s x 3 each)")
        small = cases["small"]
        out["rps"] = {
            "direct": wrk_rps(gateway.worker_base + small["worker_path"], small["chat"], WORKER_HEADERS, seconds, 3),
            "parley": wrk_rps(f"{gateway.url}/v1/messages", small["anthropic"], gateway.headers, seconds, 3),
        }
    else:
        progress("wrk is not installed: no requests-per-second figures")
    return out


# -- the bench's own stack ------------------------------------------------------------------------


def start_dynamodb_local(stack: ExitStack) -> DynamoDBLocal:
    """DynamoDB Local in memory, for the bench's own stack."""
    try:
        database = DynamoDBLocal().start()
    except DynamoDBLocalUnavailableError as error:
        raise SystemExit(f"bench: the embedded DynamoDB cannot start.\n{error}") from error
    stack.callback(database.stop)
    return database


def own_stack(
    stack: ExitStack, env: dict[str, str], cases: dict[str, Any], to_worker: Connection, worker_base: str,
    requests: int, seconds: float, meter_via_log: bool,
) -> dict[str, Any]:  # fmt: skip
    """DynamoDB Local in memory and Parley under uvicorn, instrumented; what it adds to each request."""
    database = start_dynamodb_local(stack)
    env = {**env, "AWS_ENDPOINT_URL_DYNAMODB": database.endpoint_url}
    # As in Lambda, a usage line on stdout for the metering function; else a journal of its own.
    usage_folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="parley-bench-usage-")))
    env["PARLEY_USAGE_LOG"] = "stdout" if meter_via_log else str(usage_folder)

    settings = Settings()
    dynamodb = boto3.client("dynamodb", endpoint_url=database.endpoint_url)
    seeded = seed(
        dynamodb,
        settings,
        Worker(f"{worker_base}/instant/v1", WORKER_MODEL, max_output_tokens=MAX_OUTPUT_TOKENS),
        "bench-instant",
        None,
        demo=False,
    )
    add_stream_routes(dynamodb, worker_base)
    limited_key, _ = KeyStore(dynamodb, settings.keys_table).create("bench", "limited", limits=BENCH_LIMITS)

    parley_port = _free_port()
    parley = _start(
        stack,
        [sys.executable, "-m", "uvicorn", "bench.instrumented:app", "--host", "127.0.0.1", "--port", str(parley_port),
         "--no-access-log"],
        env,
    )  # fmt: skip
    parley_url = f"http://127.0.0.1:{parley_port}"
    wait_until_healthy(parley_url, lambda: parley.poll() is None, 30)
    gateway = Gateway(cases, to_worker, worker_base, connect(stack, parley_port), parley_url, limited_key)

    results: dict[str, Any] = {"usage_log": "stdout" if meter_via_log else "journal"}
    progress("warming up")
    warm_up(gateway, requests)
    results["rss_mb_after_warmup"] = rss_mb(parley.pid)

    progress("DynamoDB calls per warm request")
    results["dynamodb_per_warm_request"] = {
        "limited_key_buffered": dynamodb_calls(parley_url, gateway.through("small"), 20),
        "unlimited_key_buffered": dynamodb_calls(parley_url, gateway.through("small", key=seeded.key), 20),
        "limited_key_stream": dynamodb_calls(parley_url, gateway.through("long", b"message_stop"), 5),
    }
    results.update(overheads(gateway, requests, seconds))
    results["rss_mb_after_runs"] = rss_mb(parley.pid)
    return results


def peer_stack(
    stack: ExitStack, env: dict[str, str], cases: dict[str, Any], to_worker: Connection, worker_base: str,
    litellm: str, requests: int, seconds: float,
) -> dict[str, Any]:  # fmt: skip
    progress("the peer: LiteLLM's proxy on the same worker")
    port, version = start_litellm(stack, litellm, worker_base, env)
    peer = Gateway(cases, to_worker, worker_base, connect(stack, port), f"http://127.0.0.1:{port}", PEER_KEY)
    side_by_side(20, peer.direct("small"), peer.through("small"), "total_seconds", "peer")  # warm-up
    out: dict[str, Any] = {
        "name": f"LiteLLM {version}",
        "small": side_by_side(
            max(50, requests // 5), peer.direct("small"), peer.through("small"), "total_seconds", "peer"
        ),
        "claude_code": side_by_side(
            50, peer.direct("claude_code"), peer.through("claude_code"), "total_seconds", "peer"
        ),
    }
    if shutil.which("wrk"):
        out["rps"] = wrk_rps(f"{peer.url}/v1/messages", cases["small"]["anthropic"], peer.headers, seconds, 3)
    return out


# -- make dev's own stack -------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc/*/status: no psutil)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if re.search(r"^PPid:\s+(\d+)$", status.read_text(), re.M).group(1) == str(pid):  # type: ignore[union-attr]
                found.append(int(status.parent.name))
        except (OSError, AttributeError):  # it ended meanwhile
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        return re.search(r"^State:\s+Z", Path(f"/proc/{pid}/status").read_text(), re.M) is None
    except OSError:
        return False


def dynamodb_local_child(pid: int) -> tuple[int, str]:
    """The DynamoDB Local (java) that `parley dev` started, and its endpoint (from its command line)."""
    for child in _children(pid):
        args = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if b"-port" in args and any(arg.endswith(b"DynamoDBLocal.jar") for arg in args):
            return child, f"http://127.0.0.1:{int(args[args.index(b'-port') + 1])}"
    raise RuntimeError(f"parley dev (pid {pid}) has no DynamoDB Local child")


def start_make_dev(stack: ExitStack, folder: Path, worker_base: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`parley dev` as `make dev` runs it, with a fresh PARLEY_DATA_DIR and no AWS_ENDPOINT_URL_DYNAMODB
    (so it starts its own DynamoDB Local, on disk), its output in a file. Returns it, its port and its log."""
    port = _free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("AWS_ENDPOINT_URL_DYNAMODB", "PARLEY_USAGE_LOG")
    }
    env.update(
        PARLEY_DATA_DIR=str(folder / "data"),
        PARLEY_PORT=str(port),
        PARLEY_DEV_KEY=DEV_KEY,
        PARLEY_WORKER_URL=f"{worker_base}/instant/v1",
        PARLEY_WORKER_MODEL=WORKER_MODEL,
        PARLEY_MODEL="bench-instant",
    )
    log = folder / "make-dev.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("parley")), "dev"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )

    _stop_at_exit(stack, process, 30)  # if the run fails before its own SIGTERM
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", lambda: process.poll() is None, 120)
    except RuntimeError as error:
        raise RuntimeError(f"{error}; parley dev printed:\n{log.read_text(errors='replace')[-4000:]}") from None
    return process, port, log


def sustained(call: Callable[[], Timing], n: int, window: int, sample: Callable[[], Any]) -> dict[str, Any]:
    """n sequential requests; the p50 of the last `window` against the first `window`, and the slowest.
    `sample()` is noted (untimed) after every `window` requests."""
    totals, samples = [], []
    for index in range(n):
        timing = call()
        if timing.status != 200:
            raise RuntimeError(f"sustained run, request {index}: HTTP {timing.status}: {timing.body[:300]!r}")
        totals.append(timing.total_seconds * 1000)
        if (index + 1) % window == 0:
            samples.append(sample())
    first, last = statistics.median(totals[:window]), statistics.median(totals[-window:])
    slowest = sorted(range(n), key=lambda index: -totals[index])[:10]
    return {
        "requests": n,
        "window": window,
        "first_p50_ms": first,
        "last_p50_ms": last,
        "ratio": last / first,
        "p99_ms": percentile(totals, 99),
        "max_ms": max(totals),
        "first_request_ms": totals[0],  # it builds Parley's services and fills its caches
        "max_after_first_ms": max(totals[1:]),
        "over_100_ms": sum(total > 100 for total in totals),
        "slowest": [{"request": index, "ms": round(totals[index], 2)} for index in slowest],
        "p50_ms_every_window": [round(statistics.median(totals[i : i + window]), 3) for i in range(0, n, window)],
        "samples": samples,
    }


def journal_state(folder: Path) -> dict[str, Any]:
    """The usage journal's folder on disk: its size, and the bytes its metering loop has not metered
    yet (past each slot's checkpoint, "segment offset": io/usage_journal.py)."""
    files = [path for path in folder.rglob("*") if path.is_file()]
    unmetered = 0
    for slot in folder.glob("slot-*"):
        try:
            segment, offset = map(int, (slot / "checkpoint").read_text().split())
        except (OSError, ValueError):
            segment, offset = 0, 0
        for path in slot.glob("*.usage"):
            number, size = int(path.stem), path.stat().st_size
            unmetered += size if number > segment else size - offset if number == segment else 0
    return {
        "bytes": sum(path.stat().st_size for path in files),
        "segments": sum(path.suffix == ".usage" for path in files),
        "unmetered_bytes": unmetered,
    }


def wait_metered(folder: Path, seconds: float = 60.0) -> float | None:
    """Seconds until the journal's loop has metered everything in it (None: not within `seconds`)."""
    started = time.monotonic()
    while journal_state(folder)["unmetered_bytes"]:
        if time.monotonic() - started > seconds:
            return None
        time.sleep(0.05)
    return time.monotonic() - started


def stop_on_sigterm(process: subprocess.Popen[bytes], java: int) -> dict[str, Any]:
    """SIGTERM, as Ctrl-C or a service manager does: how long until it and its java have exited."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code: int | None = process.wait(60)
    except subprocess.TimeoutExpired:
        code = None
        process.kill()
        process.wait()
    exited = time.monotonic() - started
    while _alive(java) and time.monotonic() - started < exited + 30:
        time.sleep(0.02)
    return {
        "exit_seconds": exited,
        "exit_code": code,
        "java_gone": not _alive(java),
        "java_gone_seconds": time.monotonic() - started if not _alive(java) else None,
    }


def make_dev_stack(
    stack: ExitStack, cases: dict[str, Any], to_worker: Connection, worker_base: str, requests: int, seconds: float,
    sustained_requests: int,
) -> dict[str, Any]:  # fmt: skip
    """`make dev`'s own stack, as a user starts it: a sustained run, then the same overheads as the
    bench's own stack, then SIGTERM."""
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="parley-bench-dev-")))
    progress("make dev's own stack: parley dev (DynamoDB Local on disk, usage journal)")
    process, port, log = start_make_dev(stack, folder, worker_base)
    java, endpoint = dynamodb_local_child(process.pid)
    add_stream_routes(boto3.client("dynamodb", endpoint_url=endpoint), worker_base)  # before any request loads routes
    journal = folder / "data" / "usage"
    url = f"http://127.0.0.1:{port}"
    gateway = Gateway(cases, to_worker, worker_base, connect(stack, port), url, DEV_KEY)

    processes = {"parley_dev": process.pid, "dynamodb_local": java}

    def rss() -> dict[str, float]:
        return {name: rss_mb(pid) for name, pid in processes.items()}

    def cpu() -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in processes.items()}

    def sample() -> dict[str, Any]:  # after every window of the sustained run
        return {"unmetered_bytes": journal_state(journal)["unmetered_bytes"], "cpu_seconds": cpu()}

    def per_request(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
        return {name: round((after[name] - before[name]) * 1000 / n, 3) for name in processes}

    results: dict[str, Any] = {"rss_mb": {"before": rss()}}
    window = min(SUSTAINED_WINDOW, sustained_requests // 2)
    progress(f"sustained run: {sustained_requests:,} sequential small requests, one connection")
    cpu_before = cpu()
    results["sustained"] = steady = sustained(gateway.through("small"), sustained_requests, window, sample)
    samples = steady.pop("samples")
    marks = [cpu_before, *(entry["cpu_seconds"] for entry in samples)]
    steady["unmetered_bytes_every_window"] = [entry["unmetered_bytes"] for entry in samples]
    steady["cpu_ms_per_request_every_window"] = [per_request(a, b, window) for a, b in pairwise(marks)]
    results["journal_after_sustained"] = journal_state(journal)
    results["journal_after_sustained"]["metered_within_s"] = wait_metered(journal)
    # CPU ms per request of parley dev and of DynamoDB Local, metering included (all metered now)
    steady["cpu_ms_per_request"] = per_request(cpu_before, cpu(), sustained_requests)
    results["rss_mb"]["after_sustained"] = rss()

    progress("warming up the other requests")
    warm_up(gateway, requests)
    results.update(overheads(gateway, requests, seconds))
    results["rss_mb"]["after_runs"] = rss()
    results["journal_before_sigterm"] = journal_state(journal)

    progress("SIGTERM to parley dev")
    results["shutdown"] = stop_on_sigterm(process, java)
    results["journal_after_exit"] = journal_state(journal)
    results["dynamodb_data_bytes"] = sum(
        path.stat().st_size for path in (folder / "data" / "dynamodb").rglob("*") if path.is_file()
    )
    results["log_warnings"] = [
        line for line in log.read_text(errors="replace").splitlines() if "WARN" in line.upper() or "Traceback" in line
    ][:20]
    return results


# -- the run --------------------------------------------------------------------------------------


def run(
    requests: int,
    seconds: float,
    meter_via_log: bool = False,
    peer_litellm: str | None = None,
    sustained_requests: int = SUSTAINED_REQUESTS,
) -> dict[str, Any]:
    use_local_aws_defaults()
    load_at_start = os.getloadavg()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cases = payloads()
    with ExitStack() as stack:
        worker_port = _free_port()
        worker = _start(stack, [sys.executable, "-m", "bench.worker", str(worker_port)], env)
        _wait_for_port(worker_port, worker)
        worker_base = f"http://127.0.0.1:{worker_port}"
        to_worker = connect(stack, worker_port)
        with ExitStack() as own:  # stopped before the next stack starts: one gateway at a time
            results = own_stack(own, env, cases, to_worker, worker_base, requests, seconds, meter_via_log)
        if peer_litellm:
            with ExitStack() as peer:
                results["peer"] = peer_stack(peer, env, cases, to_worker, worker_base, peer_litellm, requests, seconds)
        results["make_dev"] = make_dev_stack(
            stack, cases, to_worker, worker_base, requests, seconds, sustained_requests
        )

    progress("import time of the Lambda entry points")
    results["imports"] = {
        "api (functions/api/handler.py)": import_ms("import handler", ROOT / "functions" / "api"),
        "stream (parley.web.app)": import_ms("import parley.web.app", ROOT),
        "stream (uvicorn + parley.web.app)": import_ms("import uvicorn, parley.web.app", ROOT),
    }
    progress("cold import of the API handler from the built layer")
    results["layer_cold_import"] = layer_cold_imports()
    results["machine"] = {**machine(), "load_average": {"start": load_at_start, "end": os.getloadavg()}}
    return results


def machine() -> dict[str, Any]:
    model = ""
    try:
        model = re.search(r"Model name:\s+(.+)", subprocess.run(["lscpu"], capture_output=True, text=True).stdout)
        model = model.group(1).strip() if model else ""  # type: ignore[union-attr]
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(), "system": platform.platform()}


# -- the table ------------------------------------------------------------------------------------

Row = tuple[str, ...]  # (measure, direct, Parley, added or ratio, target), or (section title,)


def ms(value: float) -> str:
    return f"{value:.2f} ms"


def overhead_rows(data: dict[str, Any]) -> Iterator[Row]:
    """What one stack's Parley adds (the results of overheads()); notes the ratios in `data`."""
    for case, label, target in (
        ("small", "small buffered request", 1.0),
        ("claude_code", f"Claude Code request ({data['claude_code']['bytes'] // 1000} KB)", 2.0),
    ):
        for q in ("p50", "p99"):
            direct, parley = data[case]["direct"][f"{q}_ms"], data[case]["parley"][f"{q}_ms"]
            yield (
                f"{label}, {q}",
                ms(direct),
                ms(parley),
                f"+{parley - direct:.2f} ms",
                f"<= +{target:g} ms" if q == "p50" else "",
            )
    ttft = data["ttft"]
    direct, parley = ttft["direct"]["p50_ms"], ttft["parley"]["p50_ms"]
    yield ("time to first token (20 ms/chunk), p50", ms(direct), ms(parley), f"+{parley - direct:.2f} ms", "<= +1 ms")
    long = data["long_stream"]
    direct, parley = long["direct"]["p50_ms"], long["parley"]["p50_ms"]
    per_chunk = (parley - direct) / LONG_CHUNKS * 1000
    data["per_chunk_us"] = per_chunk
    yield (f"{LONG_CHUNKS}-chunk stream, p50", ms(direct), ms(parley), f"{per_chunk:+.1f} us/chunk", "<= 20 us/chunk")
    if "rps" in data:
        rps = data["rps"]
        ratio = rps["ratio"] = rps["parley"] / rps["direct"]
        yield ("requests/s, concurrency 16", f"{rps['direct']:,.0f}", f"{rps['parley']:,.0f}", f"{ratio:.0%}", ">= 50%")


def make_dev_rows(dev: dict[str, Any]) -> Iterator[Row]:
    steady, rss, shutdown = dev["sustained"], dev["rss_mb"], dev["shutdown"]
    n, window = steady["requests"], steady["window"]
    yield (f"sustained {n:,} requests: p50, first {window:,}", "", ms(steady["first_p50_ms"]), "", "")
    yield (
        f"sustained: p50, last {window:,}",
        "",
        ms(steady["last_p50_ms"]),
        f"{steady['ratio']:.2f}x the first",
        "<= 1.2x",
    )
    yield ("sustained: p99", "", ms(steady["p99_ms"]), "", "")
    yield (
        "sustained: slowest",
        "",
        ms(steady["max_ms"]),
        f"{steady['over_100_ms']} over 100 ms (1st: {steady['first_request_ms']:.0f} ms)",
        "0 over 100 ms",
    )
    cpu = steady["cpu_ms_per_request"]
    yield (
        "sustained: CPU per request, parley dev + java",
        "",
        f"{cpu['parley_dev']:.2f} + {cpu['dynamodb_local']:.2f} ms",
        "",
        "",
    )
    for name, label in (("parley_dev", "parley dev"), ("dynamodb_local", "DynamoDB Local (java)")):
        figures = " -> ".join(f"{rss[when][name]:.0f}" for when in ("before", "after_sustained", "after_runs"))
        yield (f"RSS, {label}: start -> sustained -> end", "", f"{figures} MB", "", "bounded")
    journal, backlog = dev["journal_after_sustained"], steady["unmetered_bytes_every_window"]
    metered = journal["metered_within_s"]
    yield (
        f"usage journal: unmetered, every {window:,} requests",
        "",
        f"max {max(backlog) / 1024:,.0f} KB",
        f"last {backlog[-1] / 1024:,.0f} KB, "
        + (f"all metered {metered:.1f} s later" if metered is not None else "not all metered in 60 s"),
        "",
    )
    yield ("usage journal: on disk (a segment rolls at 8 MB)", "", f"{journal['bytes'] / 1024:,.0f} KB", "", "")
    left = dev["journal_after_exit"]["unmetered_bytes"]
    yield (
        "SIGTERM after all the runs: exit",
        "",
        f"{shutdown['exit_seconds']:.2f} s",
        f"exit code {shutdown['exit_code']}, {left / 1024:,.0f} KB unmetered",
        "a few s",
    )
    yield (
        "SIGTERM: DynamoDB Local (java) gone",
        "",
        f"{shutdown['java_gone_seconds']:.2f} s" if shutdown["java_gone"] else "STILL RUNNING",
        "",
        "",
    )
    yield from overhead_rows(dev)


def rows(results: dict[str, Any]) -> Iterator[Row]:
    usage = "usage lines on stdout" if results["meter_via_log"] else "usage journal"
    yield (f"through the bench's own stack (DynamoDB Local in memory, {usage}, instrumented; limited key)",)
    yield from overhead_rows(results)
    peer = results.get("peer")
    if peer:
        for case, label in (("small", "small buffered request"), ("claude_code", "Claude Code request")):
            direct, through_peer = peer[case]["direct"]["p50_ms"], peer[case]["peer"]["p50_ms"]
            added_by_parley = results[case]["parley"]["p50_ms"] - results[case]["direct"]["p50_ms"]
            ratio = (through_peer - direct) / max(added_by_parley, 1e-3)
            peer[case]["ratio"] = ratio
            yield (
                f"{peer['name']}: {label}, p50",
                ms(direct),
                ms(through_peer),
                f"+{through_peer - direct:.2f} ms ({ratio:.0f}x Parley's)",
                "",
            )
        if "rps" in peer and "rps" in results:
            ratio = results["rps"]["parley"] / peer["rps"]
            peer["rps_ratio"] = ratio
            yield (f"{peer['name']}: requests/s", "", f"{peer['rps']:,.0f}", f"Parley {ratio:.1f}x", ">= 10x")
    for name, data in results["imports"].items():
        yield (f"import {name}", "", f"{data['ms']:.0f} ms", "", "<= 300 ms" if "uvicorn" not in name else "")
    layer = results.get("layer_cold_import")
    if layer:
        yield (
            f"cold start: API handler from the layer, python{layer['python']}",
            "",
            f"{layer['bytecode_ms']:.0f} ms",
            f"{layer['source_ms']:.0f} ms without bytecode",
            "",
        )
    yield ("Parley RSS after warm-up", "", f"{results['rss_mb_after_warmup']:.0f} MB", "", "")
    for name, data in results["dynamodb_per_warm_request"].items():
        critical, background = data["critical"], data["background"]
        yield (
            f"DynamoDB per warm request, {name.replace('_', ' ')}",
            "",
            f"{critical['reads']:g} reads, {critical['writes']:g} writes",
            f"after: {background['reads']:g} r, {background['writes']:g} w",
            "0 reads",
        )
    yield ("through make dev's own stack (DynamoDB Local, usage journal; `parley dev`, its dev key)",)
    yield from make_dev_rows(results["make_dev"])


def table(results: dict[str, Any]) -> str:
    header = ("measure", "direct", "Parley", "added / ratio", "target")
    lines = list(rows(results))
    lines.insert(1 if len(lines[0]) == 1 else 0, header)  # under the first section's title
    widths = [max(len(line[i]) for line in lines if len(line) > 1) for i in range(len(header))]
    out = []
    for line in lines:
        if len(line) == 1:  # a section's title
            out.append(f"\n{line[0]}:" if out else f"{line[0]}:")
        else:
            out.append(" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if line is header:
            out.append("-+-".join("-" * width for width in widths))
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="sequential pairs for the small request")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each wrk run")
    parser.add_argument(
        "--sustained",
        type=int,
        default=SUSTAINED_REQUESTS,
        help="sequential requests of the sustained run through make dev's own stack",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--meter-via-log",
        action="store_true",
        help="usage lines on stdout (PARLEY_USAGE_LOG=stdout), as in Lambda, instead of a usage journal",
    )
    parser.add_argument(
        "--peer-litellm",
        default=shutil.which("litellm"),
        help="LiteLLM's proxy executable, to measure the same way as Parley (default: litellm on PATH)",
    )
    args = parser.parse_args()
    results = run(args.requests, args.seconds, args.meter_via_log, args.peer_litellm, args.sustained)
    results["meter_via_log"] = args.meter_via_log
    text = table(results)
    print(text)
    details = results["dynamodb_per_warm_request"]["limited_key_buffered"]
    print(f"\nDynamoDB operations per warm buffered request (limited key): {details}")
    for name, data in results["imports"].items():
        print(f"import {name}: biggest {data['biggest_ms']}")
    steady = results["make_dev"]["sustained"]
    print(f"sustained run, p50 of each {steady['window']:,} requests (ms): {steady['p50_ms_every_window']}")
    print(
        f"sustained run, CPU ms per request of each {steady['window']:,}: {steady['cpu_ms_per_request_every_window']}"
    )
    print(f"sustained run, slowest requests: {steady['slowest']}")
    print(f"\nmachine: {results['machine']}")
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {args.output}")


if __name__ == "__main__":
    main()
