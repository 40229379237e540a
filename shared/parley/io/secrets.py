"""Worker API keys from their references; routes store references, never keys.

    env:NAME                    the environment variable NAME (local stacks)
    secretsmanager:ARN_OR_NAME  an AWS Secrets Manager secret's string
    ssm:NAME                    an SSM Parameter Store parameter (SecureString decrypted)

Values are cached per instance (`cache_seconds`, read again in the background from half that
age on while in use) and fetched off the event loop.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from ..core.errors import ApiError
from .background import refresh_in_background
from .expiring import ExpiringCache

__all__ = ["SecretResolver"]


class SecretResolver:
    def __init__(self, cache_seconds: float = 300.0, secretsmanager: Any = None, ssm: Any = None) -> None:
        self._cache: ExpiringCache[str | None] = ExpiringCache(cache_seconds)
        self._secretsmanager = secretsmanager
        self._ssm = ssm

    async def resolve(self, reference: str | None) -> str | None:
        if not reference:
            return None
        kind, _, name = reference.partition(":")
        if kind == "env":
            return os.environ.get(name) or None
        if kind not in ("secretsmanager", "ssm"):
            raise ApiError(f"The route's worker key reference kind {kind!r} is not supported.")
        value = self._cache.get(reference)
        if value is ExpiringCache.MISSING:
            value = await asyncio.to_thread(self._read, reference)
        elif self._cache.due(reference):
            refresh_in_background(self._read, reference)
        return value  # type: ignore[return-value]

    def _read(self, reference: str) -> str | None:
        kind, _, name = reference.partition(":")
        value = self._fetch(name) if kind == "secretsmanager" else self._fetch_parameter(name)
        self._cache.put(reference, value)
        return value

    def _fetch(self, secret_id: str) -> str | None:
        if self._secretsmanager is None:
            import boto3

            self._secretsmanager = boto3.client("secretsmanager")
        try:
            return self._secretsmanager.get_secret_value(SecretId=secret_id).get("SecretString") or None
        except Exception as exc:  # botocore's errors: the operator must see which secret failed
            raise ApiError(
                f"The worker's API key could not be read from Secrets Manager ({type(exc).__name__})."
            ) from None

    def _fetch_parameter(self, name: str) -> str | None:
        if self._ssm is None:
            import boto3

            self._ssm = boto3.client("ssm")
        try:
            return self._ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"].get("Value") or None
        except Exception as exc:  # botocore's errors: the operator must see which parameter failed
            raise ApiError(
                f"The worker's API key could not be read from SSM Parameter Store ({type(exc).__name__})."
            ) from None
