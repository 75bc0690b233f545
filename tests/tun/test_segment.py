"""split and coalesce against hand-built TCP/UDP super-packets, checked with a naive checksum."""

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.tun.packets import (
    ACK,
    CWR,
    FIN,
    MTU,
    PSH,
    assert_checksums_valid,
    ip_header,
    l4_offset,
    super_frame,
    tcp_packet,
    udp_super_frame,
)
from whalescale.tun.segment import (
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP_L4,
    VNET_F_NEEDS_CSUM,
    VNET_HDR,
    VNET_HDR_LEN,
    ZERO_VNET_HDR,
    SegmentError,
    coalesce,
    split,
)

PAYLOAD = bytes(range(256)) * 250 + b"odd"  # 64003 bytes: an odd, short last segment


@pytest.mark.parametrize("version", [4, 6])
def test_split_tcp_super_packet_gives_valid_mtu_sized_segments(version: int) -> None:
    gso_size = MTU - (20 if version == 4 else 40) - 32
    segments = split(super_frame(version, PAYLOAD, gso_size), MTU)

    assert len(segments) == -(-len(PAYLOAD) // gso_size)
    l4 = 20 if version == 4 else 40
    data = b""
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        assert len(segment) <= MTU
        assert_checksums_valid(segment)
        if version == 4:
            length, ip_id = struct.unpack_from(">HH", segment, 2)
            assert (length, ip_id) == (len(segment), 7 + index)
        else:
            assert struct.unpack_from(">H", segment, 4)[0] == len(segment) - 40
        seq = struct.unpack_from(">I", segment, l4 + 4)[0]
        assert seq == 1000 + len(data)
        assert segment[l4 + 13] == (ACK | PSH if last else ACK)
        data += segment[l4 + 32 :]
    assert data == PAYLOAD


def test_split_cuts_finer_than_gso_size_when_mtu_demands() -> None:
    segments = split(super_frame(4, PAYLOAD[:8000], 4000), MTU)

    assert [len(s) for s in segments] == [MTU] * 5 + [8000 - 5 * (MTU - 52) + 52]
    for segment in segments:
        assert_checksums_valid(segment)


def test_split_clears_cwr_after_first_and_fin_before_last() -> None:
    segments = split(super_frame(4, PAYLOAD[:3000], 1000, flags=ACK | CWR | FIN), MTU)

    assert [s[33] for s in segments] == [ACK | CWR, ACK, ACK | FIN]


def test_split_udp_l4_gives_one_datagram_per_gso_segment() -> None:
    segments = split(udp_super_frame(PAYLOAD[:5000], 1200), MTU)

    assert [len(s) - 28 for s in segments] == [1200, 1200, 1200, 1200, 200]
    for segment in segments:
        assert_checksums_valid(segment)
        assert struct.unpack_from(">H", segment, 24)[0] == len(segment) - 20
    assert b"".join(s[28:] for s in segments) == PAYLOAD[:5000]


def test_split_refuses_udp_datagrams_above_mtu() -> None:
    with pytest.raises(SegmentError):
        split(udp_super_frame(PAYLOAD[:5000], 1400), MTU)


def test_split_completes_a_partial_checksum_without_gso() -> None:
    frame = bytearray(super_frame(6, PAYLOAD[:500], 1000))
    frame[1] = GSO_NONE

    (packet,) = split(frame, MTU)

    assert_checksums_valid(packet)
    assert packet[40 + 32 :] == PAYLOAD[:500]


def test_split_passes_a_plain_packet_through() -> None:
    packet = tcp_packet(4, 5, b"hello")

    assert split(ZERO_VNET_HDR + packet, MTU) == [packet]


def test_split_refuses_a_plain_packet_above_mtu() -> None:
    with pytest.raises(SegmentError):
        split(ZERO_VNET_HDR + tcp_packet(4, 5, bytes(MTU)), MTU)


@pytest.mark.parametrize("version", [4, 6])
def test_coalesce_of_split_rebuilds_the_super_packet(version: int) -> None:
    gso_size = MTU - (20 if version == 4 else 40) - 32
    payload = PAYLOAD[:60000]
    original = super_frame(version, payload, gso_size)

    (frame,) = coalesce(split(original, MTU))

    flags, gso_type, hdr_len, size, csum_start, csum_offset = VNET_HDR.unpack_from(frame)
    assert (flags, gso_type, size) == (VNET_F_NEEDS_CSUM, original[1], gso_size)
    l4 = l4_offset(frame[VNET_HDR_LEN:])
    assert (hdr_len, csum_start, csum_offset) == (l4 + 32, l4, 16)
    assert frame[VNET_HDR_LEN:] == original[VNET_HDR_LEN:]


def test_coalesce_merges_runs_per_flow_and_passes_the_rest() -> None:
    a = [tcp_packet(4, 1000 + 100 * i, bytes([i]) * 100) for i in range(4)]
    gap = tcp_packet(4, 5000, b"x" * 100)  # not contiguous: starts a new run
    short, after_short = tcp_packet(4, 5100, b"y" * 50), tcp_packet(4, 5150, b"z" * 50)
    fin = tcp_packet(4, 5200, b"", flags=ACK | FIN)
    ping = ip_header(4, 1, 8) + bytes(8)

    frames = coalesce([*a, gap, short, after_short, fin, ping])

    headers = [VNET_HDR.unpack_from(f) for f in frames]
    assert [(h[1], h[3]) for h in headers] == [
        (GSO_TCPV4, 100),  # a[0..3]
        (GSO_TCPV4, 100),  # gap + the short segment, which closes the run
        (GSO_NONE, 0),  # nothing may follow a short segment
        (GSO_NONE, 0),  # fin
        (GSO_NONE, 0),  # ping
    ]
    assert len(frames[0]) == 10 + 52 + 400
    assert frames[2:] == [ZERO_VNET_HDR + p for p in (after_short, fin, ping)]


def test_coalesce_keeps_flow_order_across_a_non_mergeable_segment() -> None:
    first, second = tcp_packet(4, 1000, b"a" * 100), tcp_packet(4, 1100, b"b" * 100)
    urgent = tcp_packet(4, 1200, b"u" * 100, flags=ACK | 0x20)
    later = tcp_packet(4, 1300, b"c" * 100), tcp_packet(4, 1400, b"d" * 100)

    frames = coalesce([first, second, urgent, *later])

    assert [VNET_HDR.unpack_from(f)[1] for f in frames] == [GSO_TCPV4, GSO_NONE, GSO_TCPV4]
    assert frames[1] == ZERO_VNET_HDR + urgent


def test_coalesce_does_not_merge_differing_acks() -> None:
    first, second = tcp_packet(6, 1, b"a" * 10, ack=1), tcp_packet(6, 11, b"b" * 10, ack=2)

    assert coalesce([first, second]) == [ZERO_VNET_HDR + first, ZERO_VNET_HDR + second]


def test_coalesce_caps_super_packets_at_64k() -> None:
    packets = [tcp_packet(4, 1368 * i, bytes(1368)) for i in range(60)]

    frames = coalesce(packets)

    assert all(len(f) - VNET_HDR_LEN <= 65535 for f in frames)
    assert sum(len(f) - VNET_HDR_LEN - 52 for f in frames) == 60 * 1368
    assert len(frames) == 2


@settings(max_examples=400)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=2000))
def test_split_of_garbage_raises_only_segment_error(frame: bytes, mtu: int) -> None:
    with contextlib.suppress(SegmentError):
        split(frame, mtu)


@settings(max_examples=300)
@given(
    st.builds(
        lambda vnet, version, body: vnet + bytes([version]) + body,
        st.tuples(
            st.sampled_from([0, 1]),
            st.sampled_from([GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, 0x81, 9]),
            st.integers(0, 200),
            st.integers(0, 200),
            st.integers(0, 120),
            st.integers(0, 20),
        ).map(lambda fields: VNET_HDR.pack(*fields)),
        st.sampled_from([0x45, 0x46, 0x60, 0x4F]),
        st.binary(max_size=600),
    )
)
def test_split_of_plausible_headers_raises_only_segment_error(frame: bytes) -> None:
    with contextlib.suppress(SegmentError):
        for segment in split(frame, 576):
            assert len(segment) <= 576


def mutate(packet: bytes, data: st.DataObject) -> bytes:
    """Flip a few bytes and maybe truncate: near-misses reach deeper than random bytes."""
    out = bytearray(packet)
    for _ in range(data.draw(st.integers(0, 3))):
        out[data.draw(st.integers(0, len(out) - 1))] = data.draw(st.integers(0, 255))
    return bytes(out[: data.draw(st.integers(0, len(out)))])


@settings(max_examples=300)
@given(st.data())
def test_coalesce_never_raises(data: st.DataObject) -> None:
    seeds = [tcp_packet(v, 1000 + 100 * i, bytes(100)) for v in (4, 6) for i in range(3)]
    packets = data.draw(
        st.lists(st.one_of(st.binary(max_size=80), st.sampled_from(seeds)), max_size=8)
    )
    packets = [mutate(p, data) if p and data.draw(st.booleans()) else p for p in packets]

    frames = coalesce(packets)

    assert len(frames) <= len(packets)
    assert all(len(f) >= VNET_HDR_LEN for f in frames)
