"""Micro-benchmark: microseconds per segment to split and coalesce a 64 KB TCP super-packet.

Run with `python -m whalescale.tun.bench_segment [--mtu 1420] [--rounds 200]`. Builds the frame a
VNET_HDR TUN hands us for a TSO send, then times `split` and `coalesce` over it; best of five.
"""

import argparse
import struct
import timeit
from collections.abc import Callable

from whalescale.tun.segment import GSO_TCPV4, VNET_F_NEEDS_CSUM, VNET_HDR, coalesce, split

IPV4_TCP_HEADERS = 20 + 32  # TCP with the timestamps option, as Linux sends it


def tso_frame(payload_bytes: int, gso_size: int) -> bytes:
    """A TCPv4 super-packet as the kernel writes it: full lengths, pseudo-header checksum."""
    total = IPV4_TCP_HEADERS + payload_bytes
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, 1, 0x4000, 64, 6, 0, b"dV\0\1", b"dV\0\2")
    tcp = struct.pack(">HHIIBBHHH", 40000, 5201, 1, 1, 8 << 4, 0x18, 512, 0, 0)
    tcp += bytes((1, 1, 8, 10)) + bytes(8)
    payload = bytes(range(256)) * (payload_bytes // 256) + bytes(payload_bytes % 256)
    vnet = VNET_HDR.pack(VNET_F_NEEDS_CSUM, GSO_TCPV4, IPV4_TCP_HEADERS, gso_size, 20, 16)
    return vnet + ip + tcp + payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mtu", type=int, default=1420)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()

    gso_size = args.mtu - IPV4_TCP_HEADERS
    # The largest whole number of segments that fits an IPv4 packet, as TSO would send.
    frame = tso_frame((65535 - IPV4_TCP_HEADERS) // gso_size * gso_size, gso_size)
    segments = split(frame, args.mtu)
    count = len(segments)

    def per_segment_us(func: Callable[[], object]) -> float:
        best = min(timeit.repeat(func, number=args.rounds, repeat=5))
        return best / args.rounds / count * 1e6

    print(f"{len(frame) - VNET_HDR.size}-byte super-packet, mtu {args.mtu}: {count} segments")
    print(f"split:    {per_segment_us(lambda: split(frame, args.mtu)):.2f} us/segment")
    print(f"coalesce: {per_segment_us(lambda: coalesce(segments)):.2f} us/segment")


if __name__ == "__main__":
    main()
