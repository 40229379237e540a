"""The SSRF guard for accounts' own workers: only public https endpoints, checked after DNS."""

from __future__ import annotations

import asyncio
import socket

import pytest

from parley.core.errors import InvalidRequestError, PermissionDeniedError
from parley.io.egress import PublicOnlyResolver, check_public_worker_url, is_public_address, public_socket

NOT_PUBLIC = [
    "127.0.0.1",
    "10.1.2.3",
    "172.16.0.9",
    "192.168.1.1",
    "169.254.169.254",  # the EC2 / ECS metadata service
    "100.64.0.1",  # carrier-grade NAT
    "0.0.0.0",
    "224.0.0.1",
    "::1",
    "fd00:ec2::254",  # the EC2 metadata service over IPv6
    "fe80::1",
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_private_loopback_link_local_and_metadata_addresses_are_not_public(address):
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "1.1.1.1"])
def test_public_addresses_are_public(address):
    assert is_public_address(address)


def resolver(table):
    def resolve(host, port):
        if host not in table:
            raise OSError("no such host")
        return table[host]

    return resolve


@pytest.mark.parametrize(
    "url, error",
    [
        ("http://gpu.example.com/v1", InvalidRequestError),
        ("https://user:pw@gpu.example.com/v1", InvalidRequestError),
        ("https://internal.example.com/v1", PermissionDeniedError),
        ("https://mixed.example.com/v1", PermissionDeniedError),
        ("https://nowhere.example.com/v1", PermissionDeniedError),
        ("https://127.0.0.1/v1", PermissionDeniedError),
        ("https://[::1]:8443/v1", PermissionDeniedError),
    ],
)
def test_worker_urls_that_could_reach_inside_are_refused(url, error):
    resolve = resolver(
        {
            "internal.example.com": ["10.0.0.5"],
            "mixed.example.com": ["93.184.216.34", "169.254.169.254"],
            "127.0.0.1": ["127.0.0.1"],
            "::1": ["::1"],
        }
    )
    with pytest.raises(error):
        check_public_worker_url(url, resolve)


def test_a_public_https_worker_is_accepted():
    check_public_worker_url("https://gpu.example.com/v1", resolver({"gpu.example.com": ["93.184.216.34"]}))


def test_connections_go_to_the_address_that_was_checked():
    # A rebinding DNS answers differently each time: aiohttp connects to what the resolver answered.
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    resolver = PublicOnlyResolver(lambda host, port: next(answers))
    [first] = asyncio.run(resolver.resolve("gpu.example.com", 443))
    assert (first["host"], first["hostname"], first["port"]) == ("93.184.216.34", "gpu.example.com", 443)
    with pytest.raises(PermissionDeniedError):
        asyncio.run(resolver.resolve("gpu.example.com", 443))


@pytest.mark.parametrize("address", ["127.0.0.1", "169.254.169.254", "::1"])
def test_no_socket_is_opened_to_a_private_address(address):
    # A literal IP in a URL never reaches a resolver: the socket itself is the last gate.
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with pytest.raises(PermissionDeniedError):
        public_socket((family, socket.SOCK_STREAM, 6, "", (address, 443)))
    public_socket((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443))).close()
