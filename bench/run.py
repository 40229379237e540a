"""`make bench`: Parley's overhead, side by side with calling the worker directly.

Starts, each in its own process: the embedded DynamoDB (moto, as `make dev` starts it), the fast
fake worker (bench/worker.py) and Parley under uvicorn exactly as the streaming function runs it
(bench/instrumented.py adds a DynamoDB call counter). Seeds routes and keys with the same code as
`make dev`, then measures, with the same client and the same Chat Completions body both ways:

- added p50/p99 latency, small buffered request and Claude Code's ~75 KB first request;
- added time to first token on a stream paced at one chunk every 20 ms;
- added cost per chunk (a 500-chunk stream: whole-stream time through Parley minus direct);
- requests per second at concurrency 16, instant worker, with wrk;
- import time of each Lambda entry point (`python -X importtime`), Parley's RSS after warm-up;
- DynamoDB calls on a warm request's critical path, and after it;
- with `--peer-litellm` (or `litellm` on PATH; `make bench-peer` installs it), LiteLLM's proxy
  on the same worker, the same way: its added latency and requests/s, as ratios to Parley's.

Prints one table with the ratios and writes bench/results.json.

    python -m bench.run [--requests N] [--seconds S] [--peer-litellm PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
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
# A production key has limits: these are never reached, but every check they imply runs.
BENCH_LIMITS = Limits(requests_per_minute=10**9, tokens_per_minute=10**12, monthly_spend_usd=10.0**9)


# -- processes ------------------------------------------------------------------------------------


def _start(stack: ExitStack, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop() -> None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()

    stack.callback(stop)
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


# -- the run --------------------------------------------------------------------------------------


def run(
    requests: int,
    seconds: float,
    meter_before_end: bool = False,
    meter_via_log: bool = False,
    peer_litellm: str | None = None,
) -> dict[str, Any]:
    use_local_aws_defaults()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if meter_before_end:  # usage written before each response's last byte
        env["PARLEY_METER_AFTER_RESPONSE"] = "0"
    if meter_via_log:  # as in Lambda: a usage line on stdout, for the metering function
        env["PARLEY_METER_VIA_LOG"] = "1"
    with ExitStack() as stack:
        dynamodb_port, worker_port, parley_port = _free_port(), _free_port(), _free_port()
        moto = _start(
            stack,
            [
                sys.executable,
                "-c",
                "import time; from parley.local.stack import start_embedded_dynamodb as s; "
                f"s({dynamodb_port}); time.sleep(1e9)",
            ],
            env,
        )
        worker = _start(stack, [sys.executable, "-m", "bench.worker", str(worker_port)], env)
        _wait_for_port(dynamodb_port, moto)
        _wait_for_port(worker_port, worker)
        env["AWS_ENDPOINT_URL_DYNAMODB"] = f"http://127.0.0.1:{dynamodb_port}"

        settings = Settings()
        dynamodb = boto3.client("dynamodb", endpoint_url=env["AWS_ENDPOINT_URL_DYNAMODB"])
        worker_base = f"http://127.0.0.1:{worker_port}"
        seeded = seed(
            dynamodb,
            settings,
            Worker(f"{worker_base}/instant/v1", WORKER_MODEL, max_output_tokens=MAX_OUTPUT_TOKENS),
            "bench-instant",
            None,
            demo=False,
        )
        routes = RouteStore(dynamodb, settings.routes_table)
        for mode in ("paced", "long"):
            routes.put(
                Route(f"bench-{mode}", (Worker(f"{worker_base}/{mode}/v1", WORKER_MODEL, max_output_tokens=8192),))
            )
        limited_key, _ = KeyStore(dynamodb, settings.keys_table).create("bench", "limited", limits=BENCH_LIMITS)

        parley = _start(
            stack,
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.instrumented:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(parley_port),
                "--no-access-log",
            ],
            env,
        )
        parley_url = f"http://127.0.0.1:{parley_port}"
        wait_until_healthy(parley_url, lambda: parley.poll() is None, 30)

        cases = payloads()
        to_worker = Connection("127.0.0.1", worker_port)
        to_parley = Connection("127.0.0.1", parley_port)
        stack.callback(to_worker.close)
        stack.callback(to_parley.close)
        parley_headers = {
            "x-api-key": limited_key,
            "anthropic-version": "2023-06-01",
            "content-type": "application/json",
        }
        worker_headers = {"content-type": "application/json"}

        def direct(case: str, marker: bytes | None = None) -> Callable[[], Timing]:
            body, path = cases[case]["chat"], cases[case]["worker_path"]
            headers = {**worker_headers, "accept": "text/event-stream"} if marker else worker_headers
            return lambda: to_worker.post(path, body, headers, marker)

        def through(case: str, marker: bytes | None = None, key: str = limited_key) -> Callable[[], Timing]:
            body = cases[case]["anthropic"]
            headers = {**parley_headers, "x-api-key": key}
            return lambda: to_parley.post("/v1/messages", body, headers, marker)

        results: dict[str, Any] = {}
        progress = lambda what: print(f"bench: {what}", file=sys.stderr, flush=True)  # noqa: E731

        progress("warming up")
        side_by_side(max(50, requests // 10), direct("small"), through("small"), "total_seconds")
        side_by_side(20, direct("claude_code"), through("claude_code"), "total_seconds")
        results["rss_mb_after_warmup"] = rss_mb(parley.pid)

        progress("DynamoDB calls per warm request")
        results["dynamodb_per_warm_request"] = {
            "limited_key_buffered": dynamodb_calls(parley_url, through("small"), 20),
            "unlimited_key_buffered": dynamodb_calls(parley_url, through("small", key=seeded.key), 20),
            "limited_key_stream": dynamodb_calls(parley_url, through("long", b"message_stop"), 5),
        }

        progress(f"latency, small buffered request ({requests} pairs)")
        results["small"] = side_by_side(requests, direct("small"), through("small"), "total_seconds")
        progress(f"latency, Claude Code's first request ({len(cases['claude_code']['anthropic']):,} bytes)")
        results["claude_code"] = side_by_side(
            max(100, requests // 4), direct("claude_code"), through("claude_code"), "total_seconds"
        )
        results["claude_code"]["bytes"] = len(cases["claude_code"]["anthropic"])
        progress("time to first token, a chunk every 20 ms")
        results["ttft"] = side_by_side(
            30, direct("paced", b'"content"'), through("paced", b"content_block_delta"), "marker_seconds"
        )
        progress(f"per-chunk cost, {LONG_CHUNKS}-chunk stream")
        results["long_stream"] = side_by_side(
            30, direct("long", b"[DONE]"), through("long", b"message_stop"), "total_seconds"
        )
        results["rss_mb_after_runs"] = rss_mb(parley.pid)

        if shutil.which("wrk"):
            progress(f"requests per second at concurrency 16 (wrk, {seconds:g} s x 3 each)")
            results["rps"] = {
                "direct": wrk_rps(
                    worker_base + cases["small"]["worker_path"], cases["small"]["chat"], worker_headers, seconds, 3
                ),
                "parley": wrk_rps(f"{parley_url}/v1/messages", cases["small"]["anthropic"], parley_headers, seconds, 3),
            }
        else:
            progress("wrk is not installed: no requests-per-second figures")

        if peer_litellm:
            progress("the peer: LiteLLM's proxy on the same worker")
            peer_port, version = start_litellm(stack, peer_litellm, worker_base, env)
            to_peer = Connection("127.0.0.1", peer_port)
            stack.callback(to_peer.close)
            peer_headers = {**parley_headers, "x-api-key": PEER_KEY}

            def peer(case: str) -> Callable[[], Timing]:
                return lambda: to_peer.post("/v1/messages", cases[case]["anthropic"], peer_headers)

            side_by_side(20, direct("small"), peer("small"), "total_seconds", "peer")  # warm-up
            results["peer"] = {
                "name": f"LiteLLM {version}",
                "small": side_by_side(max(50, requests // 5), direct("small"), peer("small"), "total_seconds", "peer"),
                "claude_code": side_by_side(50, direct("claude_code"), peer("claude_code"), "total_seconds", "peer"),
            }
            if shutil.which("wrk"):
                results["peer"]["rps"] = wrk_rps(
                    f"http://127.0.0.1:{peer_port}/v1/messages", cases["small"]["anthropic"], peer_headers, seconds, 3
                )

    progress("import time of the Lambda entry points")
    results["imports"] = {
        "api (functions/api/handler.py)": import_ms("import handler", ROOT / "functions" / "api"),
        "stream (parley.web.app)": import_ms("import parley.web.app", ROOT),
        "stream (uvicorn + parley.web.app)": import_ms("import uvicorn, parley.web.app", ROOT),
    }
    progress("cold import of the API handler from the built layer")
    results["layer_cold_import"] = layer_cold_imports()
    results["machine"] = machine()
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


def rows(results: dict[str, Any]) -> Iterator[tuple[str, str, str, str, str]]:
    """(measure, direct, Parley, added or ratio, target)."""

    def ms(value: float) -> str:
        return f"{value:.2f} ms"

    for case, label, target in (
        ("small", "small buffered request", 1.0),
        ("claude_code", f"Claude Code request ({results['claude_code']['bytes'] // 1000} KB)", 2.0),
    ):
        data = results[case]
        for q in ("p50", "p99"):
            direct, parley = data["direct"][f"{q}_ms"], data["parley"][f"{q}_ms"]
            yield (
                f"{label}, {q}",
                ms(direct),
                ms(parley),
                f"+{parley - direct:.2f} ms",
                f"<= +{target:g} ms" if q == "p50" else "",
            )
    ttft = results["ttft"]
    direct, parley = ttft["direct"]["p50_ms"], ttft["parley"]["p50_ms"]
    yield ("time to first token (20 ms/chunk), p50", ms(direct), ms(parley), f"+{parley - direct:.2f} ms", "<= +1 ms")
    long = results["long_stream"]
    direct, parley = long["direct"]["p50_ms"], long["parley"]["p50_ms"]
    per_chunk = (parley - direct) / LONG_CHUNKS * 1000
    results["per_chunk_us"] = per_chunk
    yield (f"{LONG_CHUNKS}-chunk stream, p50", ms(direct), ms(parley), f"{per_chunk:+.1f} us/chunk", "<= 20 us/chunk")
    if "rps" in results:
        rps = results["rps"]
        ratio = rps["parley"] / rps["direct"]
        results["rps"]["ratio"] = ratio
        yield ("requests/s, concurrency 16", f"{rps['direct']:,.0f}", f"{rps['parley']:,.0f}", f"{ratio:.0%}", ">= 50%")
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


def table(results: dict[str, Any]) -> str:
    header = ("measure", "direct", "Parley", "added / ratio", "target")
    lines = [header, *rows(results)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines]
    out.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="sequential pairs for the small request")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each wrk run")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--meter-before-end", action="store_true", help="write usage to DynamoDB before each response's last byte"
    )
    parser.add_argument(
        "--meter-via-log", action="store_true", help="write usage as log lines, as the Lambda functions do"
    )
    parser.add_argument(
        "--peer-litellm",
        default=shutil.which("litellm"),
        help="LiteLLM's proxy executable, to measure the same way as Parley (default: litellm on PATH)",
    )
    args = parser.parse_args()
    results = run(args.requests, args.seconds, args.meter_before_end, args.meter_via_log, args.peer_litellm)
    results["meter_before_end"], results["meter_via_log"] = args.meter_before_end, args.meter_via_log
    text = table(results)
    print(text)
    details = results["dynamodb_per_warm_request"]["limited_key_buffered"]
    print(f"\nDynamoDB operations per warm buffered request (limited key): {details}")
    for name, data in results["imports"].items():
        print(f"import {name}: biggest {data['biggest_ms']}")
    print(f"\nmachine: {results['machine']}")
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {args.output}")


if __name__ == "__main__":
    main()
