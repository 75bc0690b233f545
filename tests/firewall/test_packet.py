"""What the firewall reads of a packet (firewall/packet.py): a table of packets, and
hypothesis feeding it whatever a peer could put inside the tunnel."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.firewall.packets import fragment6, icmp, ip4, ip6, tcp, udp
from whalescale.firewall.packet import ICMP, NO_PORT, TCP, UDP, parse, quoted

A4, B4 = "100.96.0.1", "100.96.0.2"
A6, B6 = "fd77:7773::1", "fd77:7773::2"


@pytest.mark.parametrize(("packet", "proto", "sport", "dport", "has_transport"), [
    (ip4(A4, B4, tcp(40000, 22)), TCP, 40000, 22, True),
    (ip4(A4, B4, udp(5353, 53)), UDP, 5353, 53, True),
    (ip4(A4, B4, tcp(40000, 22), options=b"\x01\x01\x01\x00"), TCP, 40000, 22, True),
    (ip4(A4, B4, icmp(8, ident=77)), ICMP, 8, 77, True),  # ICMP: type, echo identifier
    (ip4(A4, B4, icmp(3)), ICMP, 3, NO_PORT, True),  # an error has no identifier
    # a first fragment has the ports, a later one none
    (ip4(A4, B4, udp(1, 2), more_fragments=True), UDP, 1, 2, True),
    (ip4(A4, B4, udp(1, 2), offset=185), UDP, NO_PORT, NO_PORT, False),
    (ip4(A4, B4, (6, b"\x9c\x40")), TCP, NO_PORT, NO_PORT, False),  # truncated TCP
    (ip4(A4, B4, (47, b"\x00" * 8)), 47, NO_PORT, NO_PORT, True),  # GRE: no ports
    (ip6(A6, B6, tcp(40000, 443)), TCP, 40000, 443, True),
    (ip6(A6, B6, icmp(128, ident=9, v6=True)), ICMP, 128, 9, True),  # ICMPv6 reads as ICMP
    (ip6(A6, B6, udp(1, 2), extensions=((0, b""), (60, b"\x01\x02"))), UDP, 1, 2, True),
    (ip6(A6, B6, udp(1, 2), extensions=(fragment6(0, more=True),)), UDP, 1, 2, True),
    (ip6(A6, B6, udp(1, 2), extensions=(fragment6(100),)), UDP, NO_PORT, NO_PORT, False),
    (ip6(A6, B6, (0, b"\x11\x05" + bytes(6))), 17, NO_PORT, NO_PORT, False),  # chain cut
])
def test_the_header_is_read_where_it_is(packet: bytes, proto: int, sport: int, dport: int,
                                        has_transport: bool) -> None:
    header = parse(packet)
    assert header is not None
    assert (header.proto, header.sport, header.dport) == (proto, sport, dport)
    assert (header.transport >= 0) == has_transport
    assert ipaddress.ip_address(header.src) in (ipaddress.ip_address(A4),
                                                ipaddress.ip_address(A6))


@pytest.mark.parametrize("packet", [b"", b"\x45", b"\x46" + bytes(20), b"\x60" + bytes(30),
                                    b"\x75" + bytes(40), b"\x41" + bytes(30)])
def test_what_is_not_an_ip_header_is_none(packet: bytes) -> None:
    assert parse(packet) is None


def test_an_icmp_error_quotes_the_packet_we_sent() -> None:
    ours = ip4(B4, A4, udp(5000, 53))
    error = ip4(A4, B4, icmp(3, quoting=ours[:28]))
    header = parse(error)
    assert header is not None
    inner = quoted(error, header)
    assert inner is not None and (inner.src, inner.sport, inner.dport) == (
        ipaddress.ip_address(B4).packed, 5000, 53)


@given(st.binary(max_size=120))
def test_any_bytes_parse_or_are_none(data: bytes) -> None:
    header = parse(data)
    if header is not None:
        assert header.version in (4, 6) and len(header.src) == len(header.dst)
        if header.transport >= 0:
            assert header.transport + 4 <= len(data)


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A well-formed packet of any kind, then cut short and some bytes overwritten."""
    transport = draw(st.sampled_from([tcp(1, 2), udp(3, 4), icmp(8, 5), icmp(3, quoting=bytes(28)),
                                      (47, bytes(8))]))
    if draw(st.booleans()):
        packet = ip4(A4, B4, transport, offset=draw(st.sampled_from([0, 1])))
    else:
        extensions = draw(st.lists(st.sampled_from([(0, b""), (43, b"\x00" * 6), (60, b""),
                                                    (51, b"\x00" * 10), fragment6(0, True),
                                                    fragment6(3)]), max_size=9))
        packet = ip6(A6, B6, transport, extensions=tuple(extensions))
    packet = bytearray(packet[:draw(st.integers(1, len(packet)))])
    for _ in range(draw(st.integers(0, 4))):
        packet[draw(st.integers(0, len(packet) - 1))] = draw(st.integers(0, 255))
    return bytes(packet)


@given(damaged())
def test_damaged_packets_never_raise_and_ports_come_from_inside_the_packet(data: bytes) -> None:
    header = parse(data)
    if header is not None and header.transport >= 0:
        assert header.transport + 4 <= len(data)
        if header.proto in (TCP, UDP):
            assert data[header.transport + 2] << 8 | data[header.transport + 3] == header.dport
        if header.proto == ICMP:
            assert quoted(data, header) is None or header.transport + 8 < len(data)
