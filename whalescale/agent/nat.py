"""The shell's side of NAT traversal: what only the operating system can tell
(which local address routes to an anchor, our LAN and IPv6 addresses, the default
gateway). The decisions are nat/traversal.py's."""

from __future__ import annotations

import ipaddress
import socket

from pyroute2 import IPRoute

from .addresses import Interface

Addr = tuple[str, int]


def routes(targets: list[Addr], port: int) -> list[tuple[Addr, Addr]]:
    """(our address towards the target with our port, target) for each routable target.

    A connected UDP socket makes the kernel pick the source address without
    sending anything: that is the address a reply's observation is compared with.
    """
    found = []
    for target in targets:
        family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(target)
            except OSError:
                continue  # no route to it from here (e.g. an IPv6 anchor, no IPv6)
            found.append(((probe.getsockname()[0], port), target))
    return found


def lan_and_ipv6(interfaces: list[Interface]) -> tuple[list[tuple[str, int]], list[str]]:
    """Our private IPv4 addresses with their prefix lengths, and our IPv6 addresses
    (link-local ones are already left out): the LAN and IPv6 punching candidates."""
    lan = [(str(i.ip), i.network.prefixlen) for i in interfaces
           if i.version == 4 and i.ip.is_private]
    ipv6 = [str(i.ip) for i in interfaces if i.version == 6]
    return lan, ipv6


def default_gateway() -> str | None:
    """The IPv4 default route's gateway: where PCP, NAT-PMP and UPnP requests go."""
    with IPRoute() as ipr:
        for route in ipr.get_default_routes(family=socket.AF_INET):
            gateway = route.get_attr("RTA_GATEWAY")
            if gateway is not None:
                return str(ipaddress.ip_address(gateway))
    return None
