"""What the firewall reads of an IP packet: addresses, protocol, ports, ICMP type.

The packets come from the tunnel (decrypted, their length checked against the IP
header by the engine) or from our own TUN, but their insides are the sender's to
choose: `parse` reads every offset with a length check and returns None for what it
cannot read, never raising (fuzzed in tests/firewall/test_packet.py).

Ports are known only where the transport header is: not in a non-first fragment, not
in a truncated header, not for protocols other than TCP and UDP. Such packets carry
`NO_PORT`, and a rule with ports never matches them (rules.py says why that is safe).
"""

from __future__ import annotations

from typing import NamedTuple

TCP, UDP, ICMP = 6, 17, 1  # ICMPv6 (58) is read as ICMP: one rule covers both families
_ICMPV6 = 58
NO_PORT = -1
# The ICMP messages that quote a packet we sent (RFC 792, RFC 4443 section 2.1): a
# reply to our own flow. Echo requests and replies are told apart by type.
ICMP_ERRORS_V4 = frozenset({3, 4, 5, 11, 12})
ICMP_ERRORS_V6 = frozenset({1, 2, 3, 4})
ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}
# IPv6 extension headers walked to the upper layer (RFC 8200 section 4): hop-by-hop,
# routing, destination options, fragment, authentication. ESP hides the rest.
_HOP_BY_HOP, _ROUTING, _FRAGMENT, _AUTH, _DEST_OPTS = 0, 43, 44, 51, 60
_EXTENSIONS = frozenset({_HOP_BY_HOP, _ROUTING, _FRAGMENT, _AUTH, _DEST_OPTS})
_MAX_EXTENSIONS = 8  # a chain longer than this is read as an unknown protocol


class Header(NamedTuple):
    """One packet as the firewall sees it. `sport`/`dport` are NO_PORT where the packet
    carries none; for ICMP `sport` is the type and `dport` the echo identifier (NO_PORT
    unless an echo). `transport` is the offset of the transport header, -1 if absent."""

    version: int
    src: bytes
    dst: bytes
    proto: int
    sport: int
    dport: int
    transport: int


def parse(packet: bytes) -> Header | None:
    """The header of `packet`, or None if not even its IP header is whole."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or len(packet) < ihl:
            return None
        proto = packet[9]
        src, dst = packet[12:16], packet[16:20]
        first = not ((packet[6] & 0x1F) or packet[7])  # fragment offset zero
        return _transport(packet, 4, src, dst, proto, ihl if first else -1)
    if version == 6 and len(packet) >= 40:
        src, dst = packet[8:24], packet[24:40]
        proto, offset = _upper_layer(packet)
        return _transport(packet, 6, src, dst, ICMP if proto == _ICMPV6 else proto, offset)
    return None


def _upper_layer(packet: bytes) -> tuple[int, int]:
    """IPv6: the upper-layer protocol and its offset past the extension headers; offset
    -1 in a non-first fragment or a truncated chain."""
    proto, offset = packet[6], 40
    for _ in range(_MAX_EXTENSIONS):
        if proto not in _EXTENSIONS:
            return proto, offset
        if len(packet) < offset + 8:
            return proto, -1
        following = packet[offset]
        if proto == _FRAGMENT:
            if (packet[offset + 2] << 8 | packet[offset + 3]) >> 3:  # not the first
                return following, -1
            size = 8
        elif proto == _AUTH:
            size = (packet[offset + 1] + 2) * 4
        else:
            size = (packet[offset + 1] + 1) * 8
        proto, offset = following, offset + size
    return proto, -1


def _transport(packet: bytes, version: int, src: bytes, dst: bytes, proto: int,
               offset: int) -> Header:
    sport = dport = NO_PORT
    if offset < 0 or len(packet) < offset + 4:
        offset = -1
    elif proto in (TCP, UDP):
        sport = packet[offset] << 8 | packet[offset + 1]
        dport = packet[offset + 2] << 8 | packet[offset + 3]
    elif proto == ICMP:
        sport = packet[offset]
        if sport in (ECHO_REQUEST[version], ECHO_REPLY[version]) and len(packet) >= offset + 6:
            dport = packet[offset + 4] << 8 | packet[offset + 5]
    return Header(version, src, dst, proto, sport, dport, offset)


def is_icmp_error(header: Header) -> bool:
    return header.proto == ICMP and header.sport in (
        ICMP_ERRORS_V4 if header.version == 4 else ICMP_ERRORS_V6)


def quoted(packet: bytes, header: Header) -> Header | None:
    """The packet an ICMP error quotes (after its 8-byte ICMP header), if readable."""
    return parse(packet[header.transport + 8:]) if header.transport >= 0 else None
