"""This host's own addresses, read with netlink, and netlink's word when they change."""

from __future__ import annotations

import ipaddress
import select
from types import TracebackType

import trio
from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR

from ..node.local import Interface


def local_interfaces(exclude: str) -> list[Interface]:
    """Global and private addresses of every interface but `exclude` (our TUN) and loopback."""
    found = []
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for msg in ipr.get_addr():
            if names.get(msg["index"]) in (exclude, "lo"):
                continue
            interface = ipaddress.ip_interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
            if interface.ip.is_link_local or interface.ip.is_loopback:
                continue
            found.append(interface)
    return sorted(found, key=lambda i: (i.version, str(i)))


def addresses_of(names: tuple[str, ...]) -> list[tuple[str, Interface]]:
    """(interface name, address) of the named interfaces: IPv6 first (multipath tries
    those paths first), then in the order named."""
    with IPRoute() as ipr:
        by_index = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        found = []
        for msg in ipr.get_addr():
            name = by_index.get(msg["index"])
            interface = ipaddress.ip_interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
            if name in names and not interface.ip.is_link_local:
                found.append((name, interface))
    return sorted(found, key=lambda f: (f[1].version == 4, names.index(f[0]), str(f[1])))


class AddressEvents:
    """A netlink socket subscribed to address changes (no poll: the kernel tells us)."""

    def __init__(self) -> None:
        self._ipr = IPRoute()
        self._ipr.bind(groups=RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)

    async def wait(self) -> None:
        """Until an address was added or removed (a burst of them counts once)."""
        await trio.lowlevel.wait_readable(self._ipr.fileno())
        while True:
            self._ipr.get()
            await trio.sleep(0.05)  # the rest of a burst (DHCP, a roam) arrives together
            if not _readable(self._ipr.fileno()):
                return

    def __enter__(self) -> AddressEvents:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._ipr.close()


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])
