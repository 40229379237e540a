"""A bounded soak: mixed streaming and buffered load through uvicorn on loopback for
PARLEY_SOAK_SECONDS (10 in `make test`, 60 with `make soak`), against Parley in its own process.

Reports throughput, errors and the server's RSS growth; asserts zero unexpected errors, every
request metered exactly once, and bounded RSS growth after warm-up.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from parley.core.metering import day_of
from parley.io.keys import KeyStore
from parley.io.routes import Route, RouteStore, Worker
from parley.io.tables import create_tables
from tests.anthropic_stream import assert_well_formed
from tests.fakeworker import Answer, FakeWorker, ToolCall
from tests.integration.helpers import parse_sse
from tests.stack import free_port, wait_until_healthy

from .settings import SOAK_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
SECONDS = float(os.environ.get("PARLEY_SOAK_SECONDS", "10"))
WARMUP_SECONDS = 2.0
CONCURRENCY = 8
MAX_RSS_GROWTH_MB = 25.0
MODEL = "soak-model"
SUMMARIES: list[str] = []  # printed in the session summary
TOOL = {"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
ANSWERS = [
    Answer(text="The quick brown fox jumps over the lazy dog. " * 6),
    Answer(text="Let me look.", tool_calls=[ToolCall("lookup", {"q": "soak"})]),
    Answer(text="short", flavour="llamacpp"),
    Answer(reasoning="thinking it over", text="done", flavour="sglang"),
    Answer(text="ollama says hi", flavour="ollama"),
]


@dataclass
class Report:
    requests: int = 0
    streamed: int = 0
    errors: list[str] = field(default_factory=list)
    rss_mb: list[tuple[float, float]] = field(default_factory=list)
    recorded: int = 0
    aggregated: int = 0

    def rss_growth_mb(self) -> float:
        after_warmup = [rss for at, rss in self.rss_mb if at >= WARMUP_SECONDS]
        return after_warmup[-1] - after_warmup[0] if len(after_warmup) > 1 else 0.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def soak_worker() -> Iterator[FakeWorker]:
    with FakeWorker() as fake:
        # Enough scripted answers for the whole run (an empty queue answers "ok").
        fake.enqueue(*(ANSWERS * int(400 * max(SECONDS, 10))))
        yield fake


@pytest.fixture(scope="module")
def server(
    dynamodb: Any, soak_worker: FakeWorker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    journal = tmp_path_factory.mktemp("soak-usage")
    create_tables(dynamodb, SOAK_SETTINGS.table_names)
    routes = RouteStore(dynamodb, SOAK_SETTINGS.routes_table)
    routes.put(Route(model=MODEL, workers=(Worker(base_url=soak_worker.base_url, model="fake"),)))
    key, record = KeyStore(dynamodb, SOAK_SETTINGS.keys_table).create(account="soak", name="soak")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.soak.serve", dynamodb.meta.endpoint_url, str(port), str(journal)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'shared'}"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, lambda: process.poll() is None, 30)
        yield {"url": url, "key": key, "key_id": record.key_id, "process": process}
    finally:
        process.terminate()
        process.wait(timeout=60)


def metered(dynamodb: Any, key_id: str) -> tuple[int, int]:
    """(usage records in the records table, requests in the key's aggregate for today)."""
    records, pages = 0, dynamodb.get_paginator("scan")
    for page in pages.paginate(TableName=SOAK_SETTINGS.usage_records_table, Select="COUNT"):
        records += page["Count"]
    today = f"day#{day_of(time.time())}"
    item = dynamodb.get_item(
        TableName=SOAK_SETTINGS.usage_table, Key={"pk": {"S": f"key#{key_id}"}, "sk": {"S": today}}
    ).get("Item", {})
    return records, int(item.get("requests", {}).get("N", 0))


async def one_request(client: httpx.AsyncClient, number: int, report: Report) -> None:
    streamed = number % 2 == 0
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": f"request {number}"}],
        "tools": [TOOL],
    }
    if number % 3 == 0:
        body["thinking"] = {"type": "enabled", "budget_tokens": 1024}
        body["max_tokens"] = 2048
    try:
        if streamed:
            body["stream"] = True
            async with client.stream("POST", "/v1/messages", json=body) as response:
                payload = await response.aread()
            assert response.status_code == 200, payload[:300]
            assert_well_formed([(event.event or "", event.json()) for event in parse_sse(payload)])
            report.streamed += 1
        else:
            response = await client.post("/v1/messages", json=body)
            assert response.status_code == 200, response.text[:300]
            message = response.json()
            assert message["type"] == "message" and message["content"], message
    except Exception as exc:  # every failure is counted and shown, none stops the load
        report.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
    report.requests += 1


async def load(url: str, key: str, pid: int, report: Report) -> None:
    started = time.monotonic()
    counter = iter(range(10**9))
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits) as client:

        async def user() -> None:
            while time.monotonic() - started < SECONDS:
                await one_request(client, next(counter), report)

        async def sample() -> None:
            while time.monotonic() - started < SECONDS:
                report.rss_mb.append((time.monotonic() - started, rss_mb(pid)))
                await asyncio.sleep(0.5)
            report.rss_mb.append((time.monotonic() - started, rss_mb(pid)))

        await asyncio.gather(sample(), *(user() for _ in range(CONCURRENCY)))


def test_soak(server, dynamodb):
    report = Report()
    process = server["process"]
    asyncio.run(load(server["url"], server["key"], process.pid, report))
    process.terminate()  # uvicorn drains; the metering loop writes what the journal still holds
    assert process.wait(timeout=60) == 0
    report.recorded, report.aggregated = metered(dynamodb, server["key_id"])

    summary = (
        f"soak: {SECONDS:.0f} s, {report.requests} requests ({report.streamed} streamed), "
        f"{report.requests / SECONDS:.0f} req/s, {len(report.errors)} errors, "
        f"server RSS {report.rss_mb[0][1]:.0f} MB -> {report.rss_mb[-1][1]:.0f} MB "
        f"(+{report.rss_growth_mb():.1f} MB after {WARMUP_SECONDS:.0f} s warm-up), "
        f"{report.recorded} usage records in DynamoDB Local, {report.aggregated} in the key's aggregate"
    )
    SUMMARIES.append(summary)
    print(summary)
    assert not report.errors, report.errors[:10]
    assert report.requests > 0
    assert report.recorded == report.requests, "usage lost or doubled"
    assert report.aggregated == report.requests, "the aggregate is the sum of the records"
    assert report.rss_growth_mb() < MAX_RSS_GROWTH_MB, summary
