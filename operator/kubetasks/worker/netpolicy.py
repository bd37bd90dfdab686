"""Where a network built-in may connect (pure: a host and its resolved addresses in, a
refusal or None out).

A task is written by whoever may create Tasks, and it runs inside the cluster with the
worker pod's network position: without a rule, ``kubetasks.http`` would fetch the cloud's
metadata endpoint, the API server or any in-cluster service for them and hand back the
answer in ``status.result``. So by default only public addresses are reached: a host is
refused when ANY of the addresses it resolves to is loopback, link-local, private, shared
(CGNAT), unspecified, multicast, reserved or otherwise not global, or lies in a network the
worker was told to deny (a cluster's Service and pod ranges). The operator opens holes
explicitly with ``--http-allow`` (names or CIDRs), which override every refusal.

The caller resolves once, asks :func:`refusal`, then connects to exactly the addresses it
vetted: resolving again to connect would let a short-TTL DNS answer change in between
(DNS rebinding). Every redirect hop goes through the same check.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from kubetasks.settings import HttpSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: 100.64.0.0/10: carrier-grade NAT, neither private nor global to ``ipaddress``.
_SHARED = ipaddress.ip_network("100.64.0.0/10")
#: 64:ff9b::/96: NAT64, an IPv4 address carried inside an IPv6 one.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

ALLOW_HINT = "allow it with --http-allow"


def refusal(host: str, addresses: Iterable[IPAddress], settings: HttpSettings) -> str | None:
    """Why ``host`` (resolved to ``addresses``) must not be reached, or None when it may.

    ``host`` is the URL's host (a name or an address literal); the message names the first
    offending address and its kind, e.g. ``169.254.169.254 is link-local``.
    """
    name = host.lower().rstrip(".")
    if name in settings.allow_hosts:
        return None
    found = list(addresses)
    if not found:
        return f"{host} resolves to no address"
    for address in found:
        kind = _refused_kind(address, settings)
        if kind is None:
            continue
        literal = _is_literal(host)
        subject = f"{address}" if literal else f"{host} resolves to {address}, which"
        return f"{subject} is {kind} ({ALLOW_HINT})"
    return None


def address_kind(address: IPAddress) -> str | None:
    """The non-public kind of an address (``"loopback"``, ``"link-local"``, ...), or None for
    a global one. An IPv4 address embedded in IPv6 (mapped, 6to4, Teredo, NAT64) counts as
    what it embeds: ``::ffff:169.254.169.254`` is link-local."""
    for embedded in _embedded_ipv4(address):
        kind = address_kind(embedded)
        if kind is not None:
            return kind
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "shared (CGNAT) address space"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "not a public address"
    return None


def _refused_kind(address: IPAddress, settings: HttpSettings) -> str | None:
    if any(address in network for network in settings.allow_networks):
        return None
    kind = address_kind(address)
    if kind is not None:
        return kind
    for network in settings.deny_networks:
        if address in network:
            return f"in a denied network ({network}, --http-deny-cidrs)"
    return None


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [address.ipv4_mapped, address.sixtofour, address.teredo[1] if address.teredo else None]
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [a for a in found if a is not None]


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
