"""This host's own addresses, read with netlink, and netlink's word when they change."""

from __future__ import annotations

from types import TracebackType

import trio

from ..netlink import (
    IFF_RUNNING,
    IFF_UP,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_LINK,
    Netlink,
)
from ..node.local import Interface

_UP_AND_RUNNING = IFF_UP | IFF_RUNNING


def _all_addresses(*, running_only: bool) -> list[tuple[str, Interface]]:
    with Netlink() as netlink:
        links = netlink.links()
        return [(links[index][0], interface) for index, interface in netlink.addresses()
                if index in links
                and (not running_only or links[index][1] & _UP_AND_RUNNING == _UP_AND_RUNNING)]


def local_interfaces(exclude: str) -> list[Interface]:
    """Global and private addresses of every interface that is up and has its carrier,
    but `exclude` (our TUN) and loopback: where our traffic can leave from now."""
    found = [interface for name, interface in _all_addresses(running_only=True)
             if name not in (exclude, "lo")
             and not (interface.ip.is_link_local or interface.ip.is_loopback)]
    return sorted(found, key=lambda i: (i.version, str(i)))


def addresses_of(names: tuple[str, ...]) -> list[tuple[str, Interface]]:
    """(interface name, address) of the named interfaces, up or not (a path socket stays
    bound while its interface is down): IPv6 first (multipath tries those paths first),
    then in the order named."""
    found = [(name, interface) for name, interface in _all_addresses(running_only=False)
             if name in names and not interface.ip.is_link_local]
    return sorted(found, key=lambda f: (f[1].version == 4, names.index(f[0]), str(f[1])))


class AddressEvents:
    """A netlink socket subscribed to address and link changes (no poll: the kernel
    tells us)."""

    def __init__(self) -> None:
        self._netlink = Netlink(groups=RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)

    async def wait(self) -> None:
        """Until an address was added or removed or a link went up or down (a burst of
        them counts once)."""
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


