"""What probes may reach: the denied address ranges of http, prometheus and grpc probes, and the HTTP session and
resolver that enforce them (grpc probes use the resolver alone: ``probes/grpc.py`` says why).

A probe runs from the operator's pod, with the operator's network position: left alone, an http probe could call
the cloud's metadata service (169.254.169.254) and put the answer in a TestRun's status. The session therefore
checks addresses twice, at the two points where a name becomes a connection:

- its resolver resolves each name once and refuses it when any address it resolves to is denied; aiohttp connects
  to exactly the addresses the resolver returned and never resolves the name again, so a DNS answer that changes
  between the check and the connection (rebinding) cannot slip past;
- its socket factory sees the address of every socket before it connects, IP literals included (aiohttp does
  not resolve those), and refuses a denied one. No byte is sent to a denied address.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.connector import AddrInfoType, SocketFactoryType

from coordinator.domain.addresses import SETTING, IPNetwork, denied_by


class AddressDenied(Exception):
    """A connection to a denied address was about to be made (and was not)."""

    def __init__(self, host: str, address: str, network: IPNetwork) -> None:
        via = f"{host} resolves to {address}, which is" if host != address else f"{address} is"
        super().__init__(f"{via} in the denied range {network} ({SETTING})")
        self.host = host
        self.address = address
        self.network = network


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` (the system's resolver by default) and refuses a name with any denied address."""

    def __init__(self, denied: Sequence[IPNetwork], inner: AbstractResolver | None = None) -> None:
        self.denied = tuple(denied)
        self.inner = inner if inner is not None else aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        resolved = await self.inner.resolve(host, port, family)
        for entry in resolved:
            network = denied_by(entry["host"], self.denied)
            if network is not None:
                raise AddressDenied(host, entry["host"], network)
        return resolved

    async def close(self) -> None:
        await self.inner.close()


def guarded_socket_factory(denied: Sequence[IPNetwork]) -> SocketFactoryType:
    """A socket factory for aiohttp that refuses to make a socket for a denied address (before it connects)."""
    networks = tuple(denied)

    def make(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, address = addr_info
        network = denied_by(str(address[0]), networks)
        if network is not None:
            raise AddressDenied(str(address[0]), str(address[0]), network)
        return socket.socket(family=family, type=type_, proto=proto)

    return make


def guarded_session(denied: Sequence[IPNetwork], resolver: AbstractResolver | None = None) -> aiohttp.ClientSession:
    """An HTTP session that never connects to a denied address. ``resolver`` replaces the system's (tests).

    No DNS cache (each sample resolves afresh, and is checked afresh); no proxy from the environment (a proxy
    would make the dialled address the proxy's, and the check meaningless).
    """
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(denied, resolver),
        socket_factory=guarded_socket_factory(denied),
        use_dns_cache=False,
    )
    return aiohttp.ClientSession(connector=connector, trust_env=False)
