"""CloudFormation custom resource: writes the stack's bootstrap route (parley routes add does
the same by hand). The route's worker key is only ever a reference (secretsmanager:…)."""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

import boto3

from parley.io.routes import Route, RouteStore, Worker


def _route(properties: dict[str, Any]) -> Route:
    worker = Worker(
        base_url=properties["WorkerUrl"],
        model=properties["WorkerModel"],
        api_key_ref=properties.get("WorkerApiKeyRef") or None,
        max_output_tokens=int(properties["MaxOutputTokens"]) if properties.get("MaxOutputTokens") else None,
    )
    aliases = tuple(alias.strip() for alias in properties.get("Aliases") or () if alias.strip())
    return Route(model=properties["Model"], workers=(worker,), aliases=aliases, display_name=properties["Model"])


def _respond(event: dict[str, Any], status: str, physical_id: str, reason: str = "") -> None:
    body = json.dumps(
        {
            "Status": status,
            "Reason": reason or status,
            "PhysicalResourceId": physical_id,
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
        }
    ).encode()
    request = urllib.request.Request(event["ResponseURL"], data=body, method="PUT", headers={"content-type": ""})
    urllib.request.urlopen(request, timeout=30).close()


def handler(event: dict[str, Any], context: Any) -> None:
    store = RouteStore(boto3.client("dynamodb"), os.environ["PARLEY_ROUTES_TABLE"])
    physical_id = event.get("PhysicalResourceId") or event["ResourceProperties"].get("Model", "none")
    try:
        if event["RequestType"] == "Delete":
            store.remove(physical_id)
        else:
            route = _route(event["ResourceProperties"])
            store.put(route)
            if event["RequestType"] == "Update" and physical_id != route.model:
                store.remove(physical_id)  # CloudFormation deletes nothing itself for a new physical id
            physical_id = route.model
    except Exception as exc:
        _respond(event, "FAILED", physical_id, f"{type(exc).__name__}: {exc}")
        return
    _respond(event, "SUCCESS", physical_id)
