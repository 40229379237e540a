"""Parley alone in a process, for the soak test to measure: `python -m tests.soak.serve DYNAMODB_URL
PORT JOURNAL`. Every store is the real one on the given DynamoDB, and usage goes through the usage
journal in JOURNAL and its metering loop, as in `make dev`. On SIGTERM uvicorn drains and the
loop meters what is left before the process exits."""

from __future__ import annotations

import dataclasses
import signal
import sys

import uvicorn

from parley.web.app import create_app
from parley.web.services import Services
from tests.stack import dynamodb_client

from .settings import SOAK_SETTINGS


def main() -> None:
    dynamodb_url, port, journal = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    services = Services.build(dataclasses.replace(SOAK_SETTINGS, usage_log=journal), dynamodb_client(dynamodb_url))
    # uvicorn shuts down gracefully on SIGTERM, then raises it again under this handler: exit 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(create_app(lambda: services), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
