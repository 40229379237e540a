"""`parley routes add|list|remove` against the embedded DynamoDB, as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from parley.io.routes import RouteStore, Timeouts
from parley.io.tables import create_tables

TABLE = "cli-routes"


@pytest.fixture(scope="module")
def routes_env(dynamodb) -> dict[str, str]:
    create_tables(dynamodb, {"routes": TABLE})
    return {**os.environ, "AWS_ENDPOINT_URL_DYNAMODB": dynamodb.meta.endpoint_url, "PARLEY_ROUTES_TABLE": TABLE}


def parley(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "parley.cli", "routes", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_a_route_with_two_workers_and_its_timeouts(dynamodb, routes_env):
    done = parley(
        routes_env,
        "add",
        "qwen",
        "--worker",
        "url=http://gpu1:8000/v1,model=Qwen/Qwen3-8B,weight=3,tokenize,key=ssm:/parley/gpu",
        "--worker",
        "url=http://gpu2:8000,model=Qwen/Qwen3-8B,api=anthropic,images=false,max_output_tokens=8192",
        "--alias",
        "claude-*",
        "--first-byte-timeout",
        "30",
    )
    assert done.returncode == 0, done.stderr
    route = next(r for r in RouteStore(dynamodb, TABLE).load() if r.model == "qwen")
    first, second = route.workers
    assert (first.weight, first.tokenize, first.api_key_ref) == (3.0, True, "ssm:/parley/gpu")
    assert (second.api, second.images, second.max_output_tokens) == ("anthropic", False, 8192)
    assert route.timeouts == Timeouts(first_byte=30.0) and route.aliases == ("claude-*",)
    listed = parley(routes_env, "list").stdout
    assert "http://gpu1:8000/v1" in listed and "http://gpu2:8000" in listed and "anthropic" in listed
    assert parley(routes_env, "remove", "qwen").returncode == 0
    assert parley(routes_env, "remove", "qwen").returncode == 1, "nothing left to remove"


@pytest.mark.parametrize(
    "url", ["http://gpu.example.com/v1", "https://127.0.0.1/v1", "https://169.254.169.254/v1", "https://[::1]/v1"]
)
def test_an_accounts_own_worker_must_be_public_https(dynamodb, routes_env, url):
    done = parley(routes_env, "add", "mine", "--account", "acct-1", "--worker", f"url={url},model=m")
    assert done.returncode != 0 and ("https" in done.stderr or "non-public" in done.stderr), done.stderr
    assert not [r for r in RouteStore(dynamodb, TABLE).load() if r.model == "mine"]


def test_a_routes_batch_slots_and_batch_price(dynamodb, routes_env):
    worker = "url=http://gpu1:8000/v1,model=Qwen/Qwen3-8B"
    done = parley(routes_env, "add", "bulk", "--worker", worker, "--batch-slots", "12", "--batch-price-factor", "0.4")
    assert done.returncode == 0, done.stderr
    assert parley(routes_env, "add", "live", "--worker", worker, "--batch-slots", "0").returncode == 0
    routes = {r.model: r for r in RouteStore(dynamodb, TABLE).load()}
    assert (routes["bulk"].batch_slots, routes["bulk"].prices.batch_factor) == (12, 0.4)
    assert routes["live"].batch_slots == 0 and routes["live"].prices.batch_factor == 0.5, "half price by default"
    listed = parley(routes_env, "list").stdout
    assert "12 slots, 0.4x price" in listed and "off" in listed
    refused = parley(routes_env, "add", "odd", "--worker", worker, "--batch-price-factor", "1.5")
    assert (
        refused.returncode != 0
        and refused.stderr.strip() == "parley routes add: the batch price factor must be from 0 to 1"
    )
    for model in ("bulk", "live"):
        assert parley(routes_env, "remove", model).returncode == 0
