"""CloudWatch Logs subscription deliveries, built the way CloudWatch Logs sends them to Lambda."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any


def subscription_event(messages: list[str], log_group: str = "/aws/lambda/parley-api") -> dict[str, Any]:
    payload = {
        "messageType": "DATA_MESSAGE",
        "owner": "123456789012",
        "logGroup": log_group,
        "logStream": "2026/11/22/[$LATEST]0123456789abcdef",
        "subscriptionFilters": ["parley-usage"],
        "logEvents": [
            {"id": str(36_000_000 + n), "timestamp": 1_795_000_000_000 + n, "message": message}
            for n, message in enumerate(messages)
        ],
    }
    return {"awslogs": {"data": base64.b64encode(gzip.compress(json.dumps(payload).encode())).decode()}}
