"""The shell's side of NAT traversal: what only the operating system can tell (which
local address routes to an anchor, the default gateway). The decisions are the node's."""

from __future__ import annotations

import socket

from ..netlink import RT_TABLE_MAIN, Netlink
from .exit_routes import mark

Addr = tuple[str, int]


def routes(targets: list[Addr]) -> list[tuple[str, Addr]]:
    """(our address towards the target, target) for each routable target.

    A connected UDP socket makes the kernel pick the source address without
    sending anything: that is the address a reply's observation is compared with.
    """
    found = []
    for target in targets:
        family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            mark(probe)  # routed as our datagrams will be, outside an exit's tunnel
            try:
                probe.connect(target)
            except OSError:
                continue  # no route to it from here (e.g. an IPv6 anchor, no IPv6)
            found.append((probe.getsockname()[0], target))
    return found


def default_gateway() -> str | None:
    """The IPv4 default route's gateway: where PCP, NAT-PMP and UPnP requests go."""
    with Netlink() as netlink:
        table = netlink.routes(socket.AF_INET)
    for route in table:
        if route.table == RT_TABLE_MAIN and route.network.prefixlen == 0 and route.gateway:
            return route.gateway
    return None
