"""Parley alone in a process, for the soak test to measure: `python -m tests.soak.serve DYNAMODB_URL
PORT STATS_PATH`. Keys, routes and accounts are the real stores on the given DynamoDB (moto); usage
is recorded in memory (moto's transactions slow down as its tables grow, which would measure moto).
On SIGTERM uvicorn drains, then the usage counts are written to STATS_PATH as JSON."""

from __future__ import annotations

import dataclasses
import json
import signal
import sys

import boto3
import uvicorn

from parley.web.app import create_app
from parley.web.services import Services
from tests.integration.inprocess import MemoryUsage

from .settings import SOAK_SETTINGS


def main() -> None:
    dynamodb_url, port, stats_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    dynamodb = boto3.client("dynamodb", endpoint_url=dynamodb_url, region_name="us-east-1")
    usage = MemoryUsage()
    services = dataclasses.replace(Services.build(SOAK_SETTINGS, dynamodb), usage=usage)

    def write_stats(*_: object) -> None:
        with open(stats_path, "w") as stats:
            json.dump({"recorded": len(usage.events), "duplicates": usage.duplicates}, stats)
        sys.exit(0)

    # uvicorn drains on SIGTERM, restores this handler and raises the signal again.
    signal.signal(signal.SIGTERM, write_stats)
    uvicorn.run(create_app(lambda: services), host="127.0.0.1", port=port, log_level="warning")
    write_stats()


if __name__ == "__main__":
    main()
