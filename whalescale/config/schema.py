"""The mesh as typed records: what the rest of whalescale reads after loading.

Records hold decoded values (key bytes, ipaddress objects, resolved ports), so
nothing downstream parses text again. Build them with `load_mesh`/`parse_mesh`,
which check everything these classes assume.
"""

from __future__ import annotations

import ipaddress

import attrs

TunnelAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@attrs.frozen
class Endpoint:
    """A UDP endpoint; host is an IP literal or a DNS name (lower-case), which the agent
    resolves at start, every minute and when the peer goes silent."""

    host: str
    port: int

    @property
    def named(self) -> bool:
        return not _is_ip(self.host)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@attrs.frozen
class Node:
    """A whalescale node, identified by its Ed25519 public key (the node ID)."""

    name: str
    public_key: bytes
    addresses: tuple[TunnelAddress, ...]
    endpoints: tuple[Endpoint, ...]
    anchor: bool
    port: int
    interfaces: tuple[str, ...]
    metrics: Endpoint | None = None  # where its agent serves Prometheus metrics, if anywhere
    backup_interfaces: tuple[str, ...] = ()  # multipath: used only while the others fail


@attrs.frozen
class WireGuardPeer:
    """A vanilla WireGuard peer: an X25519 public key and a single path."""

    name: str
    public_key: bytes
    addresses: tuple[TunnelAddress, ...]
    allowed_ips: tuple[Network, ...]
    endpoint: Endpoint | None
    keepalive_s: int


Peer = Node | WireGuardPeer


@attrs.frozen
class Mesh:
    name: str
    port: int
    keepalive_s: int
    mtu: int
    prefixes: tuple[Network, ...]
    nodes: tuple[Node, ...]
    wireguard: tuple[WireGuardPeer, ...]

    def node_by_key(self, ed_public: bytes) -> Node | None:
        return next((n for n in self.nodes if n.public_key == ed_public), None)

    def anchors(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.anchor)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
