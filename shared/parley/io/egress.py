"""Where an account's own workers may point: public HTTPS endpoints only.

A URL is checked when the worker is registered (`check_public_worker_url`) and again on every
connection (`public_only_connector`): the host is resolved, every address must be public (not
private, loopback, link-local — the cloud metadata service among them — multicast, reserved,
shared or unspecified), and the connection is made to the address that was checked, so a DNS
answer that changes between the check and the connect (rebinding) cannot reach inside. The
socket itself is refused for any other address, literal IPs in the URL included.
Operator routes are not checked: operators may point anywhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from ..core.errors import InvalidRequestError, PermissionDeniedError
from .worker import connection_pool_options

__all__ = [
    "PublicOnlyResolver",
    "check_public_worker_url",
    "is_public_address",
    "public_only_connector",
    "public_socket",
]

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
        parsed = urlsplit(url)
        port = parsed.port
    except ValueError:
        raise InvalidRequestError(f"worker url: {url!r} is not a URL") from None
    if parsed.scheme != "https":
        raise InvalidRequestError("worker url: an account's own workers must use https")
    if parsed.username is not None or parsed.password is not None:
        raise InvalidRequestError("worker url: credentials in the URL are not allowed; use an API key reference")
    if not parsed.hostname:
        raise InvalidRequestError(f"worker url: {url!r} has no host")
    _public_addresses(parsed.hostname, port or 443, resolve)


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver, answering only public addresses; aiohttp connects to what it answers.
    TLS still verifies the certificate against the host name (sent as SNI)."""

    def __init__(self, resolve: Resolver = system_resolver) -> None:
        self._resolve = resolve

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        addresses = await asyncio.to_thread(_public_addresses, host, port, self._resolve)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        pass


def public_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """The last gate: a socket for a public address only (literal IPs in a URL skip resolvers)."""
    family, kind, proto, _, address = addr_info
    if not is_public_address(address[0]):
        raise PermissionDeniedError(
            f"The worker address {address[0]} is a non-public address; "
            "an account's own workers must be public HTTPS endpoints."
        )
    return socket.socket(family=family, type=kind, proto=proto)


def public_only_connector(max_connections: int, resolve: Resolver = system_resolver) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(
        **connection_pool_options(max_connections), resolver=PublicOnlyResolver(resolve), socket_factory=public_socket
    )
