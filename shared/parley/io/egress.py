"""Where an account's own workers may point: public HTTPS endpoints only.

A URL is checked when the worker is registered (`check_public_worker_url`) and again on every
connection (`PublicOnlyBackend`): the host is resolved, every address must be public (not
private, loopback, link-local — the cloud metadata service among them — multicast, reserved,
shared or unspecified), and the connection is made to the address that was checked, so a DNS
answer that changes between the check and the connect (rebinding) cannot reach inside.
Operator routes are not checked: operators may point anywhere.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Callable, Iterable

import httpcore
import httpx

from ..core.errors import InvalidRequestError, PermissionDeniedError

__all__ = ["PublicOnlyBackend", "check_public_worker_url", "is_public_address", "public_only_transport"]

Resolver = Callable[[str, int], Iterable[str]]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def system_resolver(host: str, port: int) -> list[str]:
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.is_global and not ip.is_multicast


def _public_addresses(host: str, port: int, resolve: Resolver) -> list[str]:
    try:
        addresses = list(dict.fromkeys(resolve(host, port)))
    except (OSError, UnicodeError):
        raise PermissionDeniedError(f"The worker host {host!r} could not be resolved.") from None
    if not addresses:
        raise PermissionDeniedError(f"The worker host {host!r} could not be resolved.")
    refused = [address for address in addresses if not is_public_address(address)]
    if refused:
        raise PermissionDeniedError(
            f"The worker host {host!r} resolves to a non-public address ({refused[0]}); "
            "an account's own workers must be public HTTPS endpoints."
        )
    return addresses


def check_public_worker_url(url: str, resolve: Resolver = system_resolver) -> None:
    """Raise unless `url` is an https URL, without credentials, whose host resolves to public
    addresses only."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise InvalidRequestError(f"worker url: {url!r} is not a URL") from None
    if parsed.scheme != "https":
        raise InvalidRequestError("worker url: an account's own workers must use https")
    if parsed.userinfo:
        raise InvalidRequestError("worker url: credentials in the URL are not allowed; use an API key reference")
    if not parsed.host:
        raise InvalidRequestError(f"worker url: {url!r} has no host")
    _public_addresses(parsed.host, parsed.port or 443, resolve)


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to public addresses it resolved itself.
    TLS still verifies the certificate against the host name (httpcore sends it as SNI)."""

    def __init__(self, resolve: Resolver = system_resolver, inner: httpcore.AsyncNetworkBackend | None = None):
        self._resolve = resolve
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        import anyio

        addresses = await anyio.to_thread.run_sync(_public_addresses, host, port, self._resolve)
        return await self._inner.connect_tcp(addresses[0], port, timeout, local_address, socket_options)

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise PermissionDeniedError("Unix sockets are not allowed for an account's own workers.")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def public_only_transport(max_connections: int, resolve: Resolver = system_resolver) -> httpx.AsyncHTTPTransport:
    transport = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    )
    # httpx exposes no network backend option; its pool is rebuilt with the checking backend.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        network_backend=PublicOnlyBackend(resolve),
    )
    return transport
