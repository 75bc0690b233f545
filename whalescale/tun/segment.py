"""Segmentation offload done in Python: split TUN super-packets, coalesce received segments.

Theory of operation. A TUN opened with IFF_VNET_HDR and TUNSETOFFLOAD hands us TCP (and, with
USO, UDP) "super-packets" of up to 64 KB, each behind a `virtio_net_hdr` (virtio spec 5.1.6)
saying how the kernel expected a NIC to cut it (`gso_type`, `gso_size`) and where the partial
checksum sits (`csum_start`, `csum_offset`). WireGuard's wire format carries one inner IP packet
per transport message, so `split` does the NIC's job: it cuts the super-packet into plain IP
packets of at most the tunnel MTU, each with final lengths, sequence numbers and checksums.
`coalesce` is the receive twin (Linux GRO): consecutive in-order TCP segments of one flow become
one super-packet written with a GSO header, so the kernel walks its stack once per 64 KB.

Rules of this file: pure functions, no I/O. Everything the kernel or a peer sends is untrusted:
`split` raises only `SegmentError`, and `coalesce` never raises (what it cannot merge passes
through unchanged).

Checksums use the RFC 1071 identity: the one's complement sum of 16-bit words equals the
buffer read as one big-endian integer modulo 0xffff (2**16 is 1 modulo 0xffff), which CPython
computes in C far faster than any per-word Python loop.
"""

import struct
from collections.abc import Sequence

# virtio_net_hdr without num_buffers: flags, gso_type, hdr_len, gso_size, csum_start,
# csum_offset. Little-endian: TUN uses the host order unless TUNSETVNETBE, and hosts are LE.
VNET_HDR = struct.Struct("<BBHHHH")
VNET_HDR_LEN = VNET_HDR.size
VNET_F_NEEDS_CSUM = 1
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80
# A pass-through frame: no GSO and no checksum work left, the kernel verifies it as received.
ZERO_VNET_HDR = bytes(VNET_HDR_LEN)

IPPROTO_TCP = 6
IPPROTO_UDP = 17
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_URG = 0x20
TCP_CWR = 0x80
TCP_CSUM_OFFSET = 16
UDP_CSUM_OFFSET = 6
IPV4_DF = 0x40  # in the high byte of the flags/fragment-offset word
MAX_IP_PACKET = 65535

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_IPV4_LEN_ID = struct.Struct(">HH")


class SegmentError(ValueError):
    """A frame from the TUN cannot be split: the caller counts it as dropped."""


# Folding a long integer in halves is cheaper than one `% 0xffff` on it (CPython divides digit
# by digit with a hardware division); below this many bits the plain modulo wins.
_FOLD_ABOVE_BITS = 2048
_fold_masks: dict[int, int] = {}


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """Return the RFC 1071 sum of `data` reduced modulo 0xffff (0 stands for 0xffff).

    An odd length is padded with a zero byte at the end, as the checksum rules say.
    """
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    bits = n.bit_length()
    while bits > _FOLD_ABOVE_BITS:
        # Halves start on a 16-bit boundary, so adding them adds whole words.
        half = ((bits >> 1) + 15) & ~15
        mask = _fold_masks.get(half)
        if mask is None:
            mask = _fold_masks.setdefault(half, (1 << half) - 1)
        n = (n >> half) + (n & mask)
        bits = half + 1
    return n % 0xFFFF


def chunk_sums(data: memoryview, size: int) -> list[int]:
    """RFC 1071 sums (modulo 0xffff) of consecutive `size`-byte chunks, the last maybe shorter.

    The payload sums are most of split's work; numpy adds all full chunks in one call
    (0.4 us a 1368-byte segment against 3.7 us for `ones_sum` on each).
    """
    full = len(data) // size
    if full and not size & 1:
        import numpy as np  # lazy: ~60 ms of start-up, needed only once a super-packet comes

        words = np.frombuffer(data, dtype="<u2", count=full * size // 2).reshape(full, size // 2)
        # Little-endian words give the byte-swapped sum; times 256 swaps it back modulo 0xffff.
        sums = ((words.sum(axis=1, dtype=np.uint64) % 0xFFFF) * 256 % 0xFFFF).tolist()
    else:
        sums = [ones_sum(data[i * size : (i + 1) * size]) for i in range(full)]
    if len(data) % size:
        sums.append(ones_sum(data[full * size :]))
    return sums


def checksum_of(total: int) -> int:
    """Return the checksum field for a one's complement sum `total` of everything else.

    0xffff rather than 0 when the sum folds to zero: both are valid for TCP and IPv4, and UDP
    reserves 0 for "no checksum" (RFC 768).
    """
    return 0xFFFF - total % 0xFFFF


def split(frame: bytes | bytearray | memoryview, mtu: int) -> list[bytes]:
    """Cut one TUN frame (virtio_net_hdr + IP packet) into IP packets of at most `mtu` bytes.

    Every returned packet carries final checksums. Raises `SegmentError` for anything malformed
    or not cuttable to `mtu` (a non-GSO packet above it, or USO whose datagrams exceed it).
    """
    view = memoryview(frame)
    if len(view) < VNET_HDR_LEN:
        raise SegmentError(f"frame of {len(view)} bytes is shorter than the virtio header")
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(view)
    packet = view[VNET_HDR_LEN:]
    gso = gso_type & ~GSO_ECN
    if gso == GSO_NONE:
        if len(packet) > mtu:
            raise SegmentError(f"packet of {len(packet)} bytes without GSO exceeds mtu {mtu}")
        if flags & VNET_F_NEEDS_CSUM:
            return [_complete_checksum(packet, csum_start, csum_offset)]
        return [bytes(packet)]
    if gso not in (GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4):
        raise SegmentError(f"unsupported gso_type {gso_type:#x}")
    if gso_size == 0:
        raise SegmentError("GSO frame with gso_size 0")
    return _split_gso(packet, gso, gso_size, mtu)


def _complete_checksum(packet: memoryview, csum_start: int, csum_offset: int) -> bytes:
    """Finish a CHECKSUM_PARTIAL packet: the field already holds the pseudo-header sum."""
    field = csum_start + csum_offset
    if field + 2 > len(packet):
        raise SegmentError(f"checksum field at {field} is beyond the {len(packet)}-byte packet")
    out = bytearray(packet)
    # The field's odd offset cannot happen for TCP/UDP; an odd csum_start would misalign words.
    if csum_start & 1 or csum_offset & 1:
        raise SegmentError(f"unaligned checksum at {csum_start}+{csum_offset}")
    _U16.pack_into(out, field, checksum_of(ones_sum(memoryview(out)[csum_start:])))
    return bytes(out)


def _split_gso(packet: memoryview, gso: int, gso_size: int, mtu: int) -> list[bytes]:
    is_tcp = gso != GSO_UDP_L4
    if len(packet) < 1:
        raise SegmentError("empty GSO packet")
    version = packet[0] >> 4
    if version == 4 and gso != GSO_TCPV6:
        l4 = (packet[0] & 0x0F) * 4
        if l4 < 20 or len(packet) < l4:
            raise SegmentError(f"bad IPv4 header length {l4}")
        proto = packet[9]
        addr_sum = ones_sum(packet[12:20])
        ip_id = _U16.unpack_from(packet, 4)[0]
    elif version == 6 and gso != GSO_TCPV4:
        l4 = 40
        if len(packet) < l4:
            raise SegmentError("truncated IPv6 header")
        proto = packet[6]
        addr_sum = ones_sum(packet[8:40])
        ip_id = 0
    else:
        raise SegmentError(f"IP version {version} does not match gso_type {gso}")
    if proto != (IPPROTO_TCP if is_tcp else IPPROTO_UDP):
        # Also catches IPv6 extension headers, which the TUN never puts in front of TSO.
        raise SegmentError(f"next protocol {proto} does not match gso_type {gso}")
    if is_tcp:
        if len(packet) < l4 + 20:
            raise SegmentError("truncated TCP header")
        hdr_end = l4 + (packet[l4 + 12] >> 4) * 4
        if hdr_end < l4 + 20 or hdr_end > len(packet):
            raise SegmentError("bad TCP data offset")
        # TCP may be cut finer than the kernel asked, e.g. when the device MTU is above ours.
        seg_payload = min(gso_size, mtu - hdr_end)
        csum_field = l4 + TCP_CSUM_OFFSET
        seq0 = _U32.unpack_from(packet, l4 + 4)[0]
        tcp_flags = packet[l4 + 13]
    else:
        hdr_end = l4 + 8
        if hdr_end > len(packet):
            raise SegmentError("truncated UDP header")
        # Each USO segment is a datagram of its own: it cannot be cut differently.
        seg_payload = gso_size if hdr_end + gso_size <= mtu else 0
        csum_field = l4 + UDP_CSUM_OFFSET
        seq0 = tcp_flags = 0
    if seg_payload <= 0:
        raise SegmentError(f"headers of {hdr_end} bytes leave no room for gso_size within mtu")
    payload = packet[hdr_end:]
    if not payload:
        raise SegmentError("GSO frame without payload")

    # Zero every field that differs per segment, so the template's sums serve them all and
    # each segment only adds its own lengths, id, sequence number and flags (RFC 1624).
    template = bytearray(packet[:hdr_end])
    if version == 4:
        _U16.pack_into(template, 2, 0)
        _U16.pack_into(template, 4, 0)
        _U16.pack_into(template, 10, 0)
        ip_sum = ones_sum(template[:l4])
    else:
        _U16.pack_into(template, 4, 0)
    _U16.pack_into(template, csum_field, 0)
    if is_tcp:
        _U32.pack_into(template, l4 + 4, 0)
        template[l4 + 13] = 0
    else:
        _U16.pack_into(template, l4 + 4, 0)
    l4_sum = addr_sum + proto + ones_sum(template[l4:])

    last_offset = (len(payload) - 1) // seg_payload * seg_payload
    payload_sums = chunk_sums(payload, seg_payload)
    segments = []
    for index, offset in enumerate(range(0, len(payload), seg_payload)):
        chunk = payload[offset : offset + seg_payload]
        header = template.copy()
        length = hdr_end + len(chunk)
        l4_length = length - l4
        if version == 4:
            # TSO numbers IPv4 ids upwards from the super-packet's (as NICs do).
            seg_id = (ip_id + index) & 0xFFFF
            _IPV4_LEN_ID.pack_into(header, 2, length, seg_id)
            _U16.pack_into(header, 10, checksum_of(ip_sum + length + seg_id))
        else:
            _U16.pack_into(header, 4, l4_length)
        # Pseudo-header length, then the header's own fields. The headers end on a 4-byte
        # boundary, so the payload's sum simply adds.
        total = l4_sum + l4_length + payload_sums[index]
        if is_tcp:
            seq = (seq0 + offset) & 0xFFFFFFFF
            _U32.pack_into(header, l4 + 4, seq)
            # As tcp_gso_segment: FIN and PSH only on the last segment, CWR only on the first.
            seg_flags = tcp_flags
            if offset != last_offset:
                seg_flags &= ~(TCP_FIN | TCP_PSH)
            if index:
                seg_flags &= ~TCP_CWR
            header[l4 + 13] = seg_flags
            total += (seq >> 16) + (seq & 0xFFFF) + seg_flags
        else:
            _U16.pack_into(header, l4 + 4, l4_length)
            total += l4_length
        _U16.pack_into(header, csum_field, checksum_of(total))
        segments.append(b"".join((header, chunk)))
    return segments


class _Run:
    """TCP segments of one flow being merged; the first segment lends its headers."""

    __slots__ = ("closed", "gso_size", "hdr_end", "l4", "next_seq", "packets", "psh", "total")

    def __init__(self, packet: bytes, l4: int, hdr_end: int, seq: int, payload_len: int) -> None:
        self.packets = [packet]
        self.l4 = l4
        self.hdr_end = hdr_end
        self.gso_size = payload_len
        self.next_seq = (seq + payload_len) & 0xFFFFFFFF
        self.total = len(packet)
        self.psh = False
        self.closed = False

    def frame(self) -> bytes:
        first = self.packets[0]
        if len(self.packets) == 1:
            return ZERO_VNET_HDR + first
        l4, hdr_end = self.l4, self.hdr_end
        header = bytearray(first[:hdr_end])
        if l4 == 20:
            _U16.pack_into(header, 2, self.total)
            _U16.pack_into(header, 10, 0)
            _U16.pack_into(header, 10, checksum_of(ones_sum(header[:20])))
            addr_sum, gso_type = ones_sum(header[12:20]), GSO_TCPV4
        else:
            _U16.pack_into(header, 4, self.total - 40)
            addr_sum, gso_type = ones_sum(header[8:40]), GSO_TCPV6
        if self.psh:
            header[l4 + 13] |= TCP_PSH
        # CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum (never 0, the protocol
        # word is in it) and the kernel adds the rest from csum_start.
        pseudo = (addr_sum + IPPROTO_TCP + self.total - l4) % 0xFFFF or 0xFFFF
        _U16.pack_into(header, l4 + TCP_CSUM_OFFSET, pseudo)
        vnet = VNET_HDR.pack(
            VNET_F_NEEDS_CSUM, gso_type, hdr_end, self.gso_size, l4, TCP_CSUM_OFFSET
        )
        parts = [vnet, header]
        parts.extend(memoryview(p)[hdr_end:] for p in self.packets)
        return b"".join(parts)


def coalesce(packets: Sequence[bytes]) -> list[bytes]:
    """Turn received IP packets into TUN frames, merging in-order TCP segments of each flow.

    Each returned frame starts with a virtio_net_hdr: a GSO header for merged runs, zeros for
    everything passed through. Order within a flow is kept; a run sits where its first segment
    arrived. Checksums of merged segments are not verified: the packets were authenticated by
    the tunnel's AEAD and checksummed by the sending peer, so there is no corruption to catch.
    """
    out: list[bytes | _Run] = []
    runs: dict[tuple[bytes, bytes], tuple[_Run, bytes]] = {}
    for packet in packets:
        parsed = _parse_tcp(packet)
        if parsed is None:
            out.append(ZERO_VNET_HDR + packet)
            continue
        flow, same, l4, hdr_end, seq, tcp_flags = parsed
        payload_len = len(packet) - hdr_end
        mergeable = payload_len > 0 and not tcp_flags & (
            TCP_SYN | TCP_FIN | TCP_RST | TCP_URG | TCP_CWR
        )
        current = runs.get(flow)
        if current is not None:
            run, run_same = current
            if (
                mergeable
                and not run.closed
                and same == run_same
                and seq == run.next_seq
                and payload_len <= run.gso_size
                and run.total + payload_len <= MAX_IP_PACKET
            ):
                run.packets.append(packet)
                run.total += payload_len
                run.next_seq = (seq + payload_len) & 0xFFFFFFFF
                # Only the last segment may be short or pushed (Linux GRO flushes there too).
                if payload_len < run.gso_size or tcp_flags & TCP_PSH:
                    run.closed = True
                    run.psh = bool(tcp_flags & TCP_PSH)
                continue
            # Anything else of this flow ends the run, so nothing later can overtake it.
            del runs[flow]
        if not mergeable:
            out.append(ZERO_VNET_HDR + packet)
            continue
        run = _Run(packet, l4, hdr_end, seq, payload_len)
        run.closed = bool(tcp_flags & TCP_PSH)
        runs[flow] = (run, same)
        out.append(run)
    return [item if isinstance(item, bytes) else item.frame() for item in out]


def _parse_tcp(packet: bytes) -> tuple[tuple[bytes, bytes], bytes, int, int, int, int] | None:
    """Return (flow, must-match fields, l4 offset, header end, seq, flags) or None.

    None means "not a TCP segment we may merge": other protocols, IPv4 options or fragments,
    IPv6 extension headers, lengths that disagree with the packet, truncated headers.
    """
    size = len(packet)
    if size < 40:
        return None
    version = packet[0] >> 4
    if version == 4:
        if (
            packet[0] != 0x45
            or packet[9] != IPPROTO_TCP
            or _U16.unpack_from(packet, 2)[0] != size
            or _U16.unpack_from(packet, 6)[0] & 0x3FFF  # MF or a fragment offset
        ):
            return None
        l4 = 20
        addresses = packet[12:20]
        # TOS, DF and TTL must agree: the merged packet carries the first one's.
        ip_same = packet[1:2] + bytes((packet[6] & IPV4_DF, packet[8]))
    elif version == 6:
        if size < 60 or packet[6] != IPPROTO_TCP or _U16.unpack_from(packet, 4)[0] != size - 40:
            return None
        l4 = 40
        addresses = packet[8:40]
        ip_same = packet[0:4] + packet[7:8]  # traffic class, flow label, hop limit
    else:
        return None
    hdr_end = l4 + (packet[l4 + 12] >> 4) * 4
    if hdr_end < l4 + 20 or hdr_end > size:
        return None
    tcp_flags = packet[l4 + 13]
    # Ack, data offset, flags other than PSH, window and options must match for a merge.
    tcp_same = (
        packet[l4 + 8 : l4 + 13]
        + bytes((tcp_flags & ~TCP_PSH,))
        + packet[l4 + 14 : l4 + 16]
        + packet[l4 + 20 : hdr_end]
    )
    flow = (addresses, packet[l4 : l4 + 4])
    seq = _U32.unpack_from(packet, l4 + 4)[0]
    return flow, ip_same + tcp_same, l4, hdr_end, seq, tcp_flags
