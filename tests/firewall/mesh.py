"""A small mesh for the firewall's tests: a server whose rules are under test, a laptop
and a tablet with groups, and a vanilla WireGuard printer; owners by tunnel address."""

from __future__ import annotations

import ipaddress

from whalescale.config.schema import Mesh, Node, Rule, WireGuardPeer
from whalescale.firewall.filter import Firewall

ADDRESSES = {"server": ("100.96.0.1", "fd77:7773::1"), "laptop": ("100.96.0.2", "fd77:7773::2"),
             "tablet": ("100.96.0.3", "fd77:7773::3"), "printer": ("100.96.0.9",)}
GROUPS = {"laptop": ("laptops",), "tablet": ("kids", "laptops")}


def _addresses(name: str) -> tuple:
    return tuple(ipaddress.ip_address(a) for a in ADDRESSES[name])


def mesh(rules: tuple[Rule, ...] = (), default: str = "allow") -> Mesh:
    nodes = tuple(
        Node(name, bytes([i]) * 32, _addresses(name), (), False, 51820, (),
             groups=GROUPS.get(name, ()),
             firewall=rules if name == "server" else (),
             firewall_default=default if name == "server" else "allow")
        for i, name in enumerate(("server", "laptop", "tablet")))
    printer = WireGuardPeer("printer", b"\x09" * 32, _addresses("printer"), (), None, 0)
    return Mesh("home", 51820, 25, 1420, (ipaddress.ip_network("100.96.0.0/24"),), nodes,
                (printer,))


def owner(packed: bytes) -> str | None:
    address = str(ipaddress.ip_address(packed))
    return next((n for n, a in ADDRESSES.items() if address in a), None)


def server_firewall(*rules: Rule, default: str = "allow") -> Firewall:
    m = mesh(tuple(rules), default)
    firewall = Firewall()
    firewall.load(m, m.nodes[0], owner)
    return firewall
