"""`make bench-batches`: how fast Parley runs a message batch (docs/batches.md), and what each of
its requests costs in CPU, Parley's and that of the local backends it drives.

The stack, each part a process of its own on loopback, so that each one's CPU time can be read
from /proc/<pid>/stat: Parley under uvicorn (`python -m uvicorn parley.web.app:app`, configured
through PARLEY_* and AWS_ENDPOINT_URL_* as in a deployment, polling its own batch queue as
`make dev` does), DynamoDB Local (its java process), moto's server for S3 and SQS
(parley.local.batch_backends, its own bucket and queue), and bench/cache.py's instant fake
OpenAI-compatible worker (a pre-rendered vLLM answer of ~50 tokens, tests/fakeworker's renderers).
Two routes on that worker, one with --batch-slots 16 and one with 4 (Parley's per-process
batch_concurrency is its default, 16).

For each route, after a small warm-up batch: a batch of 1,000 requests created with the official
`anthropic` SDK, polled (GET, every --poll-ms) until `processing_status == "ended"`, then its
results read through the SDK (each checked: succeeded, in order, the worker's answer). Figures:

- run: wall time from `client.messages.batches.create` to the poll that saw "ended"; requests/s;
- results: wall time of `client.messages.batches.results` reading all 1,000;
- CPU ms per request, per process: its CPU time (user + system) over the run plus what it spent
  in the --settle-seconds after the results were read (the usage journal's metering, which lags
  the end by up to ~1.5 s), less its idle rate over those seconds, divided by the requests;
  the results' CPU is per result, apart. "idle" is each process's CPU per second with nothing
  asked of it (the queue's long poll, the metering loop, DynamoDB Local's own threads): it runs
  during the batch too and is in the run's figures.

    python -m bench.batches [--requests 1000] [--slots 16,4] [--poll-ms 250] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anthropic
import boto3
import httpx

from parley.io.keys import KeyStore
from parley.io.routes import Route, RouteStore, Worker
from parley.io.tables import create_tables
from parley.local.batch_backends import BatchBackends
from parley.local.dynamodb_local import DynamoDBLocal, _die_with_parent
from parley.settings import Settings

from .cache import SMALL_TEXT, WORKER_MODEL, _aligned, serve_worker

ACCOUNT = "bench-batches"
PREFIX = "bench-batches"  # the tables, the bucket and the queue
AWS_ENV = {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROCESSES = ("parley", "dynamodb", "moto", "worker", "client")
LABELS = {
    "parley": "Parley (uvicorn)",
    "dynamodb": "DynamoDB Local",
    "moto": "moto (S3, SQS)",
    "worker": "fake worker",
    "client": "bench client (SDK)",
}


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of a process, all its threads; None: this process."""
    if pid is None:
        return time.process_time()
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)


class Processes:
    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    @staticmethod
    def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: after[name] - before[name] for name in before}


# -- the stack ------------------------------------------------------------------------------------


def table_names() -> dict[str, str]:
    return {role: f"{PREFIX}-{role.replace('_', '-')}" for role in Settings().table_names}


def seed(dynamodb: Any, worker_base: str, slots: list[int]) -> str:
    """The tables, a route per slot count, a key; the key."""
    names = table_names()
    create_tables(dynamodb, names)
    routes = RouteStore(dynamodb, names["routes"])
    for count in slots:
        worker = Worker(f"{worker_base}/small/v1", WORKER_MODEL, max_output_tokens=8192, tokenize=False)
        routes.put(Route(f"bench-slots-{count}", (worker,), batch_slots=count))
    key, _ = KeyStore(dynamodb, names["keys"]).create(account=ACCOUNT, name="bench")
    return key


def parley_env(dynamodb_url: str, backends_url: str, queue_url: str, folder: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("PARLEY_", "AWS_"))}
    env.update(AWS_ENV)
    env.update({f"PARLEY_{role.upper()}_TABLE": name for role, name in table_names().items()})
    env.update(
        {
            "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_url,
            "AWS_ENDPOINT_URL_S3": backends_url,
            "AWS_ENDPOINT_URL_SQS": backends_url,
            "PARLEY_BATCH_BUCKET": PREFIX,
            "PARLEY_BATCH_QUEUE_URL": queue_url,
            "PARLEY_BATCH_POLL": "1",
            "PARLEY_USAGE_LOG": os.path.join(folder, "usage"),
            "PARLEY_KNOWLEDGE_BASES_URI": os.path.join(folder, "knowledge"),
        }
    )
    return env


def start_parley(stack: ExitStack, env: dict[str, str], folder: str) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    log = open(os.path.join(folder, "parley.log"), "wb")
    stack.callback(log.close)
    command = [sys.executable, "-m", "uvicorn", "parley.web.app:app", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--log-level", "warning", "--no-access-log"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )

    def stop() -> None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    stack.callback(stop)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return url, process
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            tail = Path(folder, "parley.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"Parley did not come up on {url}:\n{tail}")
        time.sleep(0.05)


def start(stack: ExitStack, slots: list[int]) -> tuple[str, str, Processes, str]:
    """DynamoDB Local, moto, the worker and Parley; (Parley's URL, the key, the processes, the log)."""
    os.environ.update(AWS_ENV)  # this process's boto3 clients (seeding) and the servers started here
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="parley-bench-batches-"))
    dynamodb_local = stack.enter_context(DynamoDBLocal())
    backends = stack.enter_context(BatchBackends())
    clients = {
        service: boto3.client(service, endpoint_url=backends.endpoint_url, region_name=AWS_ENV["AWS_DEFAULT_REGION"])
        for service in ("s3", "sqs")
    }
    queue_url = backends.create(clients["s3"], clients["sqs"], bucket=PREFIX, queue=PREFIX)

    context = multiprocessing.get_context("spawn")
    worker_port = free_port()
    worker = context.Process(target=serve_worker, args=(worker_port,), name="bench-batches-worker", daemon=True)
    worker.start()
    stack.callback(lambda: (worker.terminate(), worker.join(5)))

    dynamodb = boto3.client(
        "dynamodb", endpoint_url=dynamodb_local.endpoint_url, region_name=AWS_ENV["AWS_DEFAULT_REGION"]
    )
    key = seed(dynamodb, f"http://127.0.0.1:{worker_port}", slots)
    env = parley_env(dynamodb_local.endpoint_url, backends.endpoint_url, queue_url, folder)
    url, parley = start_parley(stack, env, folder)
    assert dynamodb_local.process is not None and backends.process is not None
    pids = {
        "parley": parley.pid,
        "dynamodb": dynamodb_local.process.pid,
        "moto": backends.process.pid,
        "worker": worker.pid,
        "client": None,
    }
    return url, key, Processes(pids), os.path.join(folder, "parley.log")


# -- a batch --------------------------------------------------------------------------------------


def batch_requests(model: str, count: int, tag: str) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{tag}-{index}",
            "params": {
                "model": model,
                "max_tokens": 256,
                "messages": [{"role": "user", "content": f"Why did rollout {index} fail?"}],
            },
        }
        for index in range(count)
    ]


def run_batch(
    client: anthropic.Anthropic, processes: Processes, model: str, count: int, tag: str, poll: float, settle: float
) -> dict[str, Any]:
    requests = batch_requests(model, count, tag)
    cpu_start = processes.cpu()
    started = time.perf_counter()
    batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    created = time.perf_counter()
    polls = 0
    while batch.processing_status != "ended":
        if time.perf_counter() - started > 600:
            raise RuntimeError(f"{batch.id} did not end in 600 s: {batch}")
        time.sleep(poll)
        batch = client.messages.batches.retrieve(batch.id)
        polls += 1
    ended = time.perf_counter()
    cpu_ended = processes.cpu()
    results = list(client.messages.batches.results(batch.id))
    fetched = time.perf_counter()
    cpu_fetched = processes.cpu()
    time.sleep(settle)  # what the end left behind (the usage journal's metering)
    cpu_settled = processes.cpu()

    counts = batch.request_counts
    if counts.succeeded != count or len(results) != count:
        raise RuntimeError(f"{batch.id}: {counts} and {len(results)} results, not {count} succeeded")
    for index, result in enumerate(results):
        if result.custom_id != f"{tag}-{index}" or result.result.type != "succeeded":
            raise RuntimeError(f"{batch.id}: result {index} is {result.custom_id} {result.result.type}")
        text = result.result.message.content[0]
        if getattr(text, "text", None) != SMALL_TEXT:
            raise RuntimeError(f"{batch.id}: result {index} is not the worker's answer: {text}")
    return {
        "requests": count,
        "create_seconds": created - started,
        "run_seconds": ended - started,
        "results_seconds": fetched - ended,
        "polls": polls,
        "cpu_run": Processes.spent(cpu_start, cpu_ended),
        "cpu_results": Processes.spent(cpu_ended, cpu_fetched),
        "cpu_settle": Processes.spent(cpu_fetched, cpu_settled),
        "settle_seconds": settle,
    }


def idle_rates(processes: Processes, seconds: float) -> dict[str, float]:
    before = processes.cpu()
    time.sleep(seconds)
    return {name: spent / seconds for name, spent in Processes.spent(before, processes.cpu()).items()}


def per_request(entry: dict[str, Any], idle: dict[str, float]) -> dict[str, float]:
    """CPU ms per request: the run and the settle after it, less idle over the settle."""
    out = {}
    for name in PROCESSES:
        spent = entry["cpu_run"][name] + max(0.0, entry["cpu_settle"][name] - idle[name] * entry["settle_seconds"])
        out[name] = spent * 1000 / entry["requests"]
    return out


# -- the table ------------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> str:
    runs = results["runs"]
    names = list(runs)
    header = "\n".join(
        [
            f"# A batch of {results['requests']:,} requests to an instant fake worker, created with the anthropic SDK",
            "# and polled until ended, on loopback on this machine; each route's batch slots as named.",
            "# run: create -> 'ended' (wall); results: reading all results (wall); CPU ms per request: each",
            "# process's user+system CPU over the run and the metering after it (less its idle rate), / requests;",
            "# 'results' CPU is per result read. idle: CPU ms per second with nothing to do (in the run's too).",
        ]
    )
    wall: list[tuple[str, ...]] = [("", *names)]
    wall.append(("run (create -> ended)", *(f"{runs[n]['run_seconds']:.2f} s" for n in names)))
    wall.append(("  of which create", *(f"{runs[n]['create_seconds'] * 1000:.0f} ms" for n in names)))
    wall.append(("requests / s", *(f"{results['requests'] / runs[n]['run_seconds']:.1f}" for n in names)))
    wall.append(("results (all read)", *(f"{runs[n]['results_seconds'] * 1000:.0f} ms" for n in names)))
    wall.append(("polls (GET batch)", *(str(runs[n]["polls"]) for n in names)))

    cpu: list[tuple[str, ...]] = [("CPU ms per request", *names, *(f"results, {n}" for n in names), "idle, ms/s")]
    per = {n: per_request(runs[n], results["idle_cpu_per_second"]) for n in names}
    for process in PROCESSES:
        cpu.append(
            (
                LABELS[process],
                *(f"{per[n][process]:.2f}" for n in names),
                *(f"{runs[n]['cpu_results'][process] * 1000 / results['requests']:.3f}" for n in names),
                f"{results['idle_cpu_per_second'][process] * 1000:.1f}",
            )
        )
    servers = ("parley", "dynamodb", "moto")
    cpu.append(
        (
            "Parley + DynamoDB + moto",
            *(f"{sum(per[n][p] for p in servers):.2f}" for n in names),
            *(f"{sum(runs[n]['cpu_results'][p] for p in servers) * 1000 / results['requests']:.3f}" for n in names),
            f"{sum(results['idle_cpu_per_second'][p] for p in servers) * 1000:.1f}",
        )
    )
    return header + "\n\n" + _aligned(wall) + "\n\n" + _aligned(cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per timed batch")
    parser.add_argument("--slots", default="16,4", help="the routes' batch slots, one timed batch each")
    parser.add_argument("--warmup", type=int, default=100, help="requests of the untimed batch run first per route")
    parser.add_argument("--poll-ms", type=float, default=250.0, help="how often the client asks whether it ended")
    parser.add_argument("--settle-seconds", type=float, default=2.0, help="after the results: metering's lag")
    parser.add_argument("--idle-seconds", type=float, default=3.0, help="how long the idle CPU rates are read")
    parser.add_argument("--output", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    slots = [int(count) for count in args.slots.split(",")]
    load_at_start = os.getloadavg()
    runs: dict[str, Any] = {}
    with ExitStack() as stack:
        print("bench: starting DynamoDB Local, moto, the fake worker and Parley", file=sys.stderr, flush=True)
        url, key, processes, log = start(stack, slots)
        client = anthropic.Anthropic(base_url=url, api_key=key, max_retries=0, timeout=120)
        stack.callback(client.close)
        for count in slots:
            model = f"bench-slots-{count}"
            if args.warmup:
                print(f"bench: {model}: warm-up batch of {args.warmup}", file=sys.stderr, flush=True)
                run_batch(client, processes, model, args.warmup, f"warm{count}", args.poll_ms / 1000, 0.0)
        time.sleep(args.settle_seconds)
        print(f"bench: idle CPU over {args.idle_seconds:.0f} s", file=sys.stderr, flush=True)
        idle = idle_rates(processes, args.idle_seconds)
        for count in slots:
            model = f"bench-slots-{count}"
            print(f"bench: {model}: batch of {args.requests}", file=sys.stderr, flush=True)
            entry = run_batch(
                client, processes, model, args.requests, f"req{count}", args.poll_ms / 1000, args.settle_seconds
            )
            runs[f"slots {count}"] = entry
            print(
                f"bench: {model}: ended in {entry['run_seconds']:.2f} s, results in {entry['results_seconds']:.2f} s",
                file=sys.stderr,
                flush=True,
            )
        errors = [line for line in Path(log).read_text(errors="replace").splitlines() if "ERROR" in line]
    results = {
        "requests": args.requests,
        "runs": runs,
        "idle_cpu_per_second": idle,
        "parley_log_errors": errors[:20],
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "system": platform.platform(),
            "load_average": {"start": load_at_start, "end": os.getloadavg()},
        },
    }
    print(report(results))
    print(f"load average (1 min) {load_at_start[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    if errors:
        print(f"Parley logged {len(errors)} errors, the first: {errors[0]}")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
