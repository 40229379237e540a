"""The embedded S3 and SQS of local message batches (`make dev`, the tests): moto's server as a
child process on a free port, holding the batch bucket and queue.

Why moto: it is the one engine that speaks both the S3 and the SQS APIs that is installable here
(a Python package, on loopback, no Docker), so boto3 drives the very code AWS runs, through the
standard AWS_ENDPOINT_URL_S3 and AWS_ENDPOINT_URL_SQS. The servers one would rather run (MinIO,
ElasticMQ, S3Mock) are not on PyPI or npm, and fauxqs (npm) needs Node 22. Its data lives in
memory: a batch in progress when `make dev` stops loses its queue messages and objects; ended
batches keep their results in DynamoDB (web/batches.py reads them from there). A queue's
ReceiveMessage slows as the queue grows (about 28 ms at 50 messages, 1.8 s at 4,000), which is
why a message carries a chunk of up to 100 requests, not one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from .dynamodb_local import _die_with_parent, _free_port, stop_child

__all__ = ["BATCH_BUCKET", "BATCH_QUEUE", "BatchBackends", "BatchBackendsUnavailableError"]

BATCH_BUCKET = "parley-batches"
BATCH_QUEUE = "parley-batches"


class BatchBackendsUnavailableError(RuntimeError):
    pass


@dataclass
class BatchBackends:
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, startup_seconds: float = 30.0) -> "BatchBackends":
        self.port = self.port or _free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            start_new_session=True,
        )
        deadline = time.monotonic() + startup_seconds
        while True:
            if self.process.poll() is not None:
                raise BatchBackendsUnavailableError(f"moto's server exited ({self.process.returncode})")
            with socket.socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise BatchBackendsUnavailableError(f"moto's server did not listen on {self.port}")
            time.sleep(0.05)

    def create(self, s3: object, sqs: object, bucket: str = BATCH_BUCKET, queue: str = BATCH_QUEUE) -> str:
        """The bucket and the queue (kept if there); the queue's URL."""
        s3.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
        return sqs.create_queue(QueueName=queue)["QueueUrl"]  # type: ignore[attr-defined]

    def use(self) -> None:
        """Point boto3's S3 and SQS clients in this process (and its children) at it."""
        os.environ["AWS_ENDPOINT_URL_S3"] = self.endpoint_url
        os.environ["AWS_ENDPOINT_URL_SQS"] = self.endpoint_url

    def stop(self, seconds: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        stop_child(process, seconds)

    def __enter__(self) -> "BatchBackends":
        return self.start() if self.process is None else self

    def __exit__(self, *_: object) -> None:
        self.stop()
