"""The response cache's table (docs/cache.md): answers kept under their key until they expire,
and the leases that let one request call the worker while its duplicates wait (across
instances; `Flights` within one).

An answer is kept zlib-compressed; one larger than `MAX_STORED_BYTES` compressed (DynamoDB's item
limit is 400 KB) is not kept. `expires_at` is the table's TTL attribute; since DynamoDB deletes
expired items only eventually, expiry is checked on every read as well.
"""

from __future__ import annotations

import asyncio
import secrets
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from .tables import MAX_VALUE_BYTES

__all__ = ["GIVEN_UP", "MAX_STORED_BYTES", "CachedAnswer", "Flights", "ResponseCacheTable"]

MAX_STORED_BYTES = MAX_VALUE_BYTES
GIVEN_UP = "given-up"
"""What `claim` answers while the last leader's answer was not kept."""
GIVEN_UP_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    message: dict[str, Any]
    stored_at: float


def _lease(key: str, holder: str, until: float) -> dict[str, Any]:
    return {
        "key": {"S": f"lease#{key}"},
        "holder": {"S": holder},
        "lease_until": {"N": f"{until:.3f}"},
        "expires_at": {"N": str(int(until) + 1)},
    }


class ResponseCacheTable:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._dynamodb = dynamodb
        self._table = table

    def get(self, key: str, now: float) -> CachedAnswer | None:
        item = self._dynamodb.get_item(
            TableName=self._table, Key={"key": {"S": f"answer#{key}"}}, ConsistentRead=True
        ).get("Item")
        if item is None or float(item["expires_at"]["N"]) <= now:
            return None
        message = orjson.loads(zlib.decompress(item["answer"]["B"]))
        return CachedAnswer(message, float(item["stored_at"]["N"]))

    def put(self, key: str, message: dict[str, Any], account: str, ttl_seconds: int, now: float) -> bool:
        """Keep `message` for `ttl_seconds`; False (and nothing kept) when it is too large."""
        answer = zlib.compress(orjson.dumps(message), 6)
        if len(answer) > MAX_STORED_BYTES:
            return False
        self._dynamodb.put_item(
            TableName=self._table,
            Item={
                "key": {"S": f"answer#{key}"},
                "answer": {"B": answer},
                "account": {"S": account},
                "stored_at": {"N": f"{now:.3f}"},
                "expires_at": {"N": str(int(now + ttl_seconds))},
            },
        )
        return True

    def claim(self, key: str, now: float, lease_seconds: float) -> str | None:
        """The lease on calling the worker for `key`: its holder's token for the one request that
        holds it until it is released or `lease_seconds` have passed; None for the others, or
        GIVEN_UP while a leader's answer was just not kept (then nobody waits)."""
        holder = secrets.token_hex(8)
        try:
            self._dynamodb.put_item(
                TableName=self._table,
                Item=_lease(key, holder, now + lease_seconds),
                ConditionExpression="attribute_not_exists(#key) OR lease_until < :now",
                ExpressionAttributeNames={"#key": "key"},
                ExpressionAttributeValues={":now": {"N": f"{now:.3f}"}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self._dynamodb.exceptions.ConditionalCheckFailedException as held:
            lease = held.response.get("Item") or {}
            return GIVEN_UP if lease.get("given_up", {}).get("BOOL") else None
        return holder

    def release(self, key: str, holder: str, kept: bool, now: float) -> None:
        """The lease let go, unless it lapsed and another request holds it now. When the answer
        was not kept, it says so for `GIVEN_UP_SECONDS`: the duplicates waiting on it (on other
        instances) call the worker at once, rather than one after another."""
        condition = {
            "ConditionExpression": "holder = :holder",
            "ExpressionAttributeValues": {":holder": {"S": holder}},
        }
        try:
            if kept:
                self._dynamodb.delete_item(TableName=self._table, Key={"key": {"S": f"lease#{key}"}}, **condition)
                return
            given_up = {**_lease(key, holder, now + GIVEN_UP_SECONDS), "given_up": {"BOOL": True}}
            self._dynamodb.put_item(TableName=self._table, Item=given_up, **condition)
        except self._dynamodb.exceptions.ConditionalCheckFailedException:
            pass


class Flights:
    """This instance's requests calling a worker for a key, for their duplicates to wait on."""

    def __init__(self) -> None:
        self._leaders: dict[str, asyncio.Future[bool]] = {}
        self.waiting = 0  # duplicates waiting now, here (telemetry, tests)

    def leader(self, key: str) -> asyncio.Future[bool] | None:
        return self._leaders.get(key)

    def lead(self, key: str) -> None:
        self._leaders[key] = asyncio.get_running_loop().create_future()

    def land(self, key: str, kept: bool) -> None:
        leader = self._leaders.pop(key, None)
        if leader is not None and not leader.done():
            leader.set_result(kept)

    async def wait(self, waited: asyncio.Future[bool] | None, seconds: float) -> bool | None:
        """Until `waited` lands (or, with none, for `seconds`), at most `seconds`: whether the
        leader kept its answer (None: not known yet)."""
        self.waiting += 1
        try:
            if waited is None:
                await asyncio.sleep(seconds)
                return None
            await asyncio.wait((waited,), timeout=seconds)
            return waited.result() if waited.done() else None
        finally:
            self.waiting -= 1
