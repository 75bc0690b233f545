"""Hand-built IP packets and an independent, word-by-word checksum to judge them with."""

import ipaddress
import struct

from whalescale.tun.segment import GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VNET_F_NEEDS_CSUM, VNET_HDR

MTU = 1420
V4_SRC, V4_DST = ipaddress.ip_address("100.96.0.1"), ipaddress.ip_address("100.96.0.2")
V6_SRC, V6_DST = ipaddress.ip_address("fd7a::1"), ipaddress.ip_address("fd7a::2")
ACK, PSH, FIN, SYN, CWR = 0x10, 0x08, 0x01, 0x02, 0x80
# Timestamps option (NOP NOP TS): TCP headers of 32 bytes, as Linux sends them.
TS_OPTION = bytes((1, 1, 8, 10)) + struct.pack(">II", 1234, 5678)


def naive_sum(data: bytes) -> int:
    """RFC 1071 one's complement sum, word by word, folded with end-around carry."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack(">H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo_header(packet: bytes, proto: int) -> bytes:
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 15) * 4
        return packet[12:20] + struct.pack(">BBH", 0, proto, len(packet) - ihl)
    return packet[8:40] + struct.pack(">IxxxB", len(packet) - 40, proto)


def l4_offset(packet: bytes) -> int:
    return (packet[0] & 15) * 4 if packet[0] >> 4 == 4 else 40


def assert_checksums_valid(packet: bytes) -> None:
    """A valid checksum makes the sum over everything fold to 0xffff."""
    proto = packet[9] if packet[0] >> 4 == 4 else packet[6]
    l4 = l4_offset(packet)
    if packet[0] >> 4 == 4:
        assert naive_sum(packet[:l4]) == 0xFFFF, "IPv4 header checksum"
    assert naive_sum(pseudo_header(packet, proto) + packet[l4:]) == 0xFFFF, "L4 checksum"


def ip_header(version: int, proto: int, payload_len: int) -> bytes:
    """An IP header with a valid IPv4 checksum for `payload_len` bytes of L4 behind it."""
    if version == 6:
        return struct.pack(">IHBB", 6 << 28, payload_len, proto, 64) + V6_SRC.packed + V6_DST.packed
    header = bytearray(
        struct.pack(">BBHHHBBH", 0x45, 0, 20 + payload_len, 7, 0x4000, 64, proto, 0)
        + V4_SRC.packed
        + V4_DST.packed
    )
    struct.pack_into(">H", header, 10, 0xFFFF - naive_sum(bytes(header)))
    return bytes(header)


def tcp_packet(version: int, seq: int, payload: bytes, flags: int = ACK, ack: int = 99) -> bytes:
    """A plain TCP segment with correct checksums, as a peer would send it."""
    tcp = bytearray(struct.pack(">HHIIBBHHH", 40000, 5201, seq, ack, 8 << 4, flags, 512, 0, 0))
    tcp += TS_OPTION + payload
    packet = bytearray(ip_header(version, 6, len(tcp)) + tcp)
    l4 = l4_offset(packet)
    csum = 0xFFFF - naive_sum(pseudo_header(bytes(packet), 6) + bytes(packet[l4:]))
    struct.pack_into(">H", packet, l4 + 16, csum)
    return bytes(packet)


def super_frame(version: int, payload: bytes, gso_size: int, flags: int = ACK | PSH) -> bytes:
    """What the kernel hands a VNET_HDR TUN for a TSO send: partial checksum, full lengths."""
    tcp = bytearray(struct.pack(">HHIIBBHHH", 40000, 5201, 1000, 99, 8 << 4, flags, 512, 0, 0))
    tcp += TS_OPTION + payload
    packet = bytearray(ip_header(version, 6, len(tcp)) + tcp)
    l4 = l4_offset(packet)
    # CHECKSUM_PARTIAL: the field holds the pseudo-header sum, not its complement.
    struct.pack_into(">H", packet, l4 + 16, naive_sum(pseudo_header(bytes(packet), 6)))
    gso_type = GSO_TCPV4 if version == 4 else GSO_TCPV6
    return VNET_HDR.pack(VNET_F_NEEDS_CSUM, gso_type, l4 + 32, gso_size, l4, 16) + packet


def udp_super_frame(payload: bytes, gso_size: int) -> bytes:
    udp = bytearray(struct.pack(">HHHH", 51820, 51821, 8 + len(payload), 0)) + payload
    packet = bytearray(ip_header(4, 17, len(udp)) + udp)
    struct.pack_into(">H", packet, 26, naive_sum(pseudo_header(bytes(packet), 17)))
    return VNET_HDR.pack(VNET_F_NEEDS_CSUM, GSO_UDP_L4, 28, gso_size, 20, 6) + packet
