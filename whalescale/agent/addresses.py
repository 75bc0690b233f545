"""This host's own addresses, read with netlink: what the node can tell others about itself,
and which peers sit on a directly connected network (LAN)."""

from __future__ import annotations

import ipaddress

from pyroute2 import IPRoute

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


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


def is_lan(host: str, interfaces: list[Interface]) -> bool:
    address = ipaddress.ip_address(host)
    return any(address in i.network for i in interfaces if i.version == address.version)
