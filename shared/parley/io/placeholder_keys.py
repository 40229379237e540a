"""Each account's key for stable placeholders (core/placeholders.py), derived, never stored.

An account's key is HMAC-SHA256(the deployment's PII key, account): the same value masks to the
same placeholder on every request of the account, differently from any other account's, and the
only secret is the deployment's key, read from its reference (`PARLEY_PII_KEY_REF`: `env:NAME`,
`secretsmanager:ID` or `ssm:NAME`, as worker keys) and cached like them.
"""

from __future__ import annotations

import hashlib
import hmac

from ..core.errors import ApiError
from .secrets import SecretResolver

__all__ = ["PlaceholderKeys"]

_CONTEXT = b"parley placeholder key\x00"


class PlaceholderKeys:
    def __init__(self, reference: str, secrets: SecretResolver | None = None) -> None:
        self._reference = reference
        self._secrets = secrets or SecretResolver()
        self._derived: dict[tuple[str, str], bytes] = {}

    async def key_for(self, account: str) -> bytes:
        secret = await self._secrets.resolve(self._reference)
        if not secret:
            raise ApiError(
                "This API key's policy masks personal data, but Parley's PII key is not configured "
                "(PARLEY_PII_KEY_REF)."
            )
        derived = self._derived.get((secret, account))
        if derived is None:
            if len(self._derived) > 10_000:
                self._derived.clear()
            derived = self._derived[(secret, account)] = hmac.new(
                secret.encode(), _CONTEXT + account.encode(), hashlib.sha256
            ).digest()
        return derived
