"""This host's own addresses, read with netlink, and netlink's word when they change."""

from __future__ import annotations

from types import TracebackType

import trio

from ..netlink import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, Netlink, interface_names
from ..node.local import Interface


def _all_addresses() -> list[tuple[str | None, Interface]]:
    names = interface_names()
    with Netlink() as netlink:
        return [(names.get(index), interface) for index, interface in netlink.addresses()]


def local_interfaces(exclude: str) -> list[Interface]:
    """Global and private addresses of every interface but `exclude` (our TUN) and loopback."""
    found = [interface for name, interface in _all_addresses()
             if name not in (exclude, "lo")
             and not (interface.ip.is_link_local or interface.ip.is_loopback)]
    return sorted(found, key=lambda i: (i.version, str(i)))


def addresses_of(names: tuple[str, ...]) -> list[tuple[str, Interface]]:
    """(interface name, address) of the named interfaces: IPv6 first (multipath tries
    those paths first), then in the order named."""
    found = [(name, interface) for name, interface in _all_addresses()
             if name in names and not interface.ip.is_link_local]
    return sorted(found, key=lambda f: (f[1].version == 4, names.index(f[0]), str(f[1])))


class AddressEvents:
    """A netlink socket subscribed to address changes (no poll: the kernel tells us)."""

    def __init__(self) -> None:
        self._netlink = Netlink(groups=RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)

    async def wait(self) -> None:
        """Until an address was added or removed (a burst of them counts once)."""
        await trio.lowlevel.wait_readable(self._netlink.fileno())
        self._netlink.drain()
        while True:
            await trio.sleep(0.05)  # the rest of a burst (DHCP, a roam) arrives together
            if not self._netlink.drain():
                return

    def __enter__(self) -> AddressEvents:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._netlink.close()


