"""IP packets for the firewall's tests, built field by field (checksums left zero: the
firewall never reads them)."""

from __future__ import annotations

import ipaddress
import struct

SYN, ACK = 0x02, 0x10


def tcp(sport: int, dport: int, flags: int = SYN, payload: bytes = b"") -> tuple[int, bytes]:
    return 6, struct.pack(">HHIIBBHHH", sport, dport, 0, 0, 5 << 4, flags, 65535, 0, 0) + payload


def udp(sport: int, dport: int, payload: bytes = b"") -> tuple[int, bytes]:
    return 17, struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp(kind: int, ident: int = 0, quoting: bytes = b"", *, v6: bool = False) -> tuple[int, bytes]:
    """An ICMP (or ICMPv6) message: an echo's identifier, or the packet an error quotes."""
    return (58 if v6 else 1), struct.pack(">BBHHH", kind, 0, 0, ident, 1) + quoting


def ip4(src: str, dst: str, transport: tuple[int, bytes], *, offset: int = 0,
        more_fragments: bool = False, options: bytes = b"") -> bytes:
    """IPv4; `offset` the fragment offset in 8-byte units."""
    proto, body = transport
    ihl = 5 + len(options) // 4
    flags = (0x2000 if more_fragments else 0x4000 if not offset else 0) | offset
    return (struct.pack(">BBHHHBBH", 0x40 | ihl, 0, ihl * 4 + len(body), 0, flags, 64, proto, 0)
            + ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
            + options + body)


def ip6(src: str, dst: str, transport: tuple[int, bytes], *,
        extensions: tuple[tuple[int, bytes], ...] = ()) -> bytes:
    """IPv6 with extension headers given as (their type, their body after the two first
    bytes, padded here to a multiple of 8); a fragment header (44) is 8 bytes whole."""
    proto, body = transport
    chain = b""
    kinds = [kind for kind, _ in extensions] + [proto]
    for (kind, rest), following in zip(extensions, kinds[1:], strict=True):
        if kind == 44:
            chain += bytes([following, 0]) + rest
        else:
            rest += bytes(-(len(rest) + 2) % 8)
            chain += bytes([following, (len(rest) + 2) // 8 - 1]) + rest
    first = kinds[0]
    return (struct.pack(">IHBB", 6 << 28, len(chain) + len(body), first, 64)
            + ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
            + chain + body)


def fragment6(offset: int, more: bool = False) -> tuple[int, bytes]:
    """An IPv6 fragment header's extension (offset in 8-byte units)."""
    return 44, struct.pack(">HI", offset << 3 | int(more), 7)
