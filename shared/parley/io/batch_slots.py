"""How many of a route's worker slots batches may use at once, across every instance: leases in
the batches table, one item per slot.

    pk=slot#<route>#<n>  sk=slot   holder, lease_until (epoch seconds), expires_at (TTL)

(one partition per slot: a busy route's slots do not share one partition's write limit)

A batch request takes a free slot of its route (`try_take`: a conditional write that succeeds
when the slot is free or its lease has run out) before it calls a worker and gives it back
after (`give_back`). A process that crashes holding a slot loses it only until the lease runs
out, which is longer than the route's longest call.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = ["RouteSlots", "SlotLease"]


@dataclass(frozen=True, slots=True)
class SlotLease:
    route_key: str
    slot: int
    holder: str


class RouteSlots:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._dynamodb = dynamodb
        self._table = table

    def try_take(self, route_key: str, slots: int, lease_seconds: float) -> SlotLease | None:
        """A free slot of the route's `slots`, taken for `lease_seconds`; None when all are taken."""
        holder = uuid.uuid4().hex
        now = time.time()
        order = list(range(slots))
        random.shuffle(order)  # instances do not all fight over slot 0
        for slot in order:
            try:
                self._dynamodb.put_item(
                    TableName=self._table,
                    Item={
                        **_key(route_key, slot),
                        "holder": {"S": holder},
                        "lease_until": {"N": f"{now + lease_seconds:.3f}"},
                        "expires_at": {"N": str(int(now + lease_seconds) + 3600)},
                    },
                    ConditionExpression="attribute_not_exists(pk) OR lease_until < :now",
                    ExpressionAttributeValues={":now": {"N": f"{now:.3f}"}},
                )
            except self._dynamodb.exceptions.ConditionalCheckFailedException:
                continue
            return SlotLease(route_key, slot, holder)
        return None

    def give_back(self, lease: SlotLease) -> None:
        """Free the slot, unless its lease ran out and another holder has it now."""
        try:
            self._dynamodb.delete_item(
                TableName=self._table,
                Key=_key(lease.route_key, lease.slot),
                ConditionExpression="holder = :holder",
                ExpressionAttributeValues={":holder": {"S": lease.holder}},
            )
        except self._dynamodb.exceptions.ConditionalCheckFailedException:
            pass

    def taken(self, route_key: str, slots: int) -> int:
        """How many of the route's `slots` are leased now."""
        answer = self._dynamodb.batch_get_item(
            RequestItems={
                self._table: {"Keys": [_key(route_key, slot) for slot in range(slots)], "ConsistentRead": True}
            }
        )
        now = time.time()
        return sum(float(item["lease_until"]["N"]) >= now for item in answer["Responses"].get(self._table, []))


def _key(route_key: str, slot: int) -> dict[str, Any]:
    return {"pk": {"S": f"slot#{route_key}#{slot}"}, "sk": {"S": "slot"}}
