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
class Rule:
    """One inbound firewall rule of a node: the first rule that matches a packet decides.
    `sources` are node and group names (empty: any node); `ports` inclusive ranges of
    destination ports (empty: any; only with tcp or udp)."""

    action: str  # "allow" | "deny"
    sources: tuple[str, ...] = ()
    proto: str = "any"  # "any" | "tcp" | "udp" | "icmp"
    ports: tuple[tuple[int, int], ...] = ()

    def __str__(self) -> str:
        who = ",".join(self.sources) or "*"
        ports = ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.ports)
        return f"{self.action} from {who} {self.proto}" + (f" port {ports}" if ports else "")


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
    # Networks behind this node that it forwards for; `standby_routes` it carries only
    # while the node whose `routes` name the same network is unreachable.
    routes: tuple[Network, ...] = ()
    standby_routes: tuple[Network, ...] = ()
    accept_routes: bool = True  # route other nodes' networks (unless we sit in them)
    exit: bool = False  # offers itself as an exit node (forwards and masquerades)
    exit_node: str | None = None  # sends its default route through this node
    kill_switch: bool = False  # after a crash while using an exit: block, not restore
    groups: tuple[str, ...] = ()
    firewall: tuple[Rule, ...] = ()
    firewall_default: str = "allow"  # what no rule matched gets


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
    suffix: str = ""  # node names resolve as NAME.SUFFIX; the loader defaults it to `name`

    def node_by_key(self, ed_public: bytes) -> Node | None:
        return next((n for n in self.nodes if n.public_key == ed_public), None)

    def anchors(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.anchor)

    def node_by_name(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
