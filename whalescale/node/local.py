"""What the operating system told the node of its own addresses (the shell reads them
with netlink): where it can be reached, its LAN and IPv6 punching candidates, and
which peers sit on a directly connected network."""

from __future__ import annotations

import ipaddress

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def is_lan(host: str, interfaces: list[Interface]) -> bool:
    address = ipaddress.ip_address(host)
    return any(address in i.network for i in interfaces if i.version == address.version)


def lan_and_ipv6(interfaces: list[Interface]) -> tuple[list[tuple[str, int]], list[str]]:
    """Our private IPv4 addresses with their prefix lengths, and our IPv6 addresses
    (link-local ones are already left out): the LAN and IPv6 punching candidates."""
    lan = [(str(i.ip), i.network.prefixlen) for i in interfaces
           if i.version == 4 and i.ip.is_private]
    ipv6 = [str(i.ip) for i in interfaces if i.version == 6]
    return lan, ipv6
