"""Who sends a request, so that admission can give each client its share of the places.

With auth on, a client is its token's subject (`sub`): one caller with many connections, or many
addresses, is still one client. With auth off it is the address the request came from: the peer of the
connection, or, when that peer is a configured trusted proxy (`TRUSTED_PROXIES`, off by default), the
address the proxies say they received it from in `X-Forwarded-For`.

`X-Forwarded-For` is read from the right: each proxy appends the address it received the request from,
so the rightmost address that is not a trusted proxy is the first one no trusted party can have
written. The leftmost is whatever the client put there, which is why a list is not taken at its word.
A header from a peer that is not trusted is ignored altogether.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
FORWARDED_FOR_HEADER = b"x-forwarded-for"
# What is read of X-Forwarded-For: a proxy chain is a handful of addresses; a client cannot make the
# server parse a megabyte of them (headers are capped anyway, this keeps the work per request small).
MAX_FORWARDED_ADDRESSES = 16


class TrustedProxies:
    def __init__(self, networks: Iterable[str]) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def trusts(self, address: str) -> bool:
        parsed = _address(address)
        return parsed is not None and any(parsed in network for network in self.networks)

    def client_address(self, peer: str | None, forwarded_for: Sequence[bytes] = ()) -> str:
        """The address a request came from: its peer, unless the peer is a trusted proxy, then the
        rightmost address of `X-Forwarded-For` (all its lines, in order) that is not a trusted proxy."""
        if peer is None or not self.networks or not forwarded_for or not self.trusts(peer):
            return peer or "unknown"
        hops = [hop.strip() for line in forwarded_for for hop in line.decode("latin-1").split(",")]
        for hop in reversed(hops[-MAX_FORWARDED_ADDRESSES:]):
            if _address(hop) is None:
                break  # garbage where an address should be: trust nothing further left
            if not self.trusts(hop):
                return hop
            peer = hop
        return peer


def client_key(claims: dict[str, Any] | None, address: str) -> str:
    """The key admission shares places by: the token's subject, else the address."""
    subject = claims.get("sub") if claims else None
    if isinstance(subject, str) and subject:
        return "sub:" + subject
    return "addr:" + address


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
