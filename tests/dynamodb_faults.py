"""Faults a real DynamoDB cannot be asked for, injected at the client with botocore's event hooks,
so they work against any DynamoDB (DynamoDB Local here):

- `throttle(operation, n)`: the next n calls fail before they are sent, as DynamoDB fails under
  load (transactions cancelled with ThrottlingError, other calls ProvisionedThroughputExceeded);
- `lose_acknowledgement(operation, n)`: the next n calls land, and then their answer is lost
  (a read timeout after DynamoDB applied the write);
- `server_error(operation, n)`: the next n calls fail with a 500 before they are sent;
- `hold(operation)`: calls wait until `release()` (a store that is slow right now).

Hooks are per client: give the stack under test a client of its own (tests.stack.dynamodb_client).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError

__all__ = ["DynamoDBFaults"]


def _failure(status: int, code: str, message: str, reasons: list[str] | None = None) -> tuple[AWSResponse, dict]:
    parsed: dict[str, Any] = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}},
    }
    if reasons is not None:
        parsed["CancellationReasons"] = [{"Code": reason} for reason in reasons]
    return AWSResponse("http://dynamodb.faults", status, {}, None), parsed


class DynamoDBFaults:
    def __init__(self, client: Any) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._pending: Counter[tuple[str, str]] = Counter()
        self.injected: Counter[str] = Counter()
        self._held: set[str] = set()
        self._release = threading.Event()
        client.meta.events.register("before-call.dynamodb", self._before_call)
        client.meta.events.register("after-call.dynamodb", self._after_call)

    def _take(self, kind: str, operation: str) -> bool:
        with self._lock:
            if self._pending[(kind, operation)] > 0:
                self._pending[(kind, operation)] -= 1
                self.injected[kind] += 1
                return True
            return False

    def throttle(self, operation: str, times: int = 1) -> None:
        self._pending[("throttle", operation)] += times

    def lose_acknowledgement(self, operation: str, times: int = 1) -> None:
        self._pending[("lost", operation)] += times

    def server_error(self, operation: str, times: int = 1) -> None:
        self._pending[("server", operation)] += times

    def hold(self, operation: str) -> None:
        self._release.clear()
        self._held.add(operation)

    def release(self) -> None:
        self._held.clear()
        self._release.set()

    def pending(self) -> int:
        with self._lock:
            return sum(self._pending.values())

    def _before_call(self, model: Any, **_: Any) -> tuple[AWSResponse, dict] | None:
        operation = model.name
        if operation in self._held:
            self._release.wait(60)
        if self._take("throttle", operation):
            if operation == "TransactWriteItems":
                return _failure(400, "TransactionCanceledException", "Throttled", ["ThrottlingError"])
            return _failure(400, "ProvisionedThroughputExceededException", "Rate of requests exceeds the allowed")
        if self._take("server", operation):
            return _failure(500, "InternalServerError", "Internal server error")
        return None

    def _after_call(self, model: Any, **_: Any) -> None:
        if self._take("lost", model.name):
            raise ReadTimeoutError(endpoint_url="http://dynamodb.faults")
