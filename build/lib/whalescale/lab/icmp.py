"""A minimal ping, run as a script inside a lab namespace (the machine has no `ping`).

Usage: python icmp.py ADDRESS COUNT TIMEOUT_S. Sends COUNT echo requests (RFC 792 for
IPv4, RFC 4443 section 4 for IPv6) on a raw socket and exits 0 as soon as one reply
arrives, 1 if none does within TIMEOUT_S per request.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
import sys
import time

ECHO_REQUEST_V4, ECHO_REPLY_V4 = 8, 0
ECHO_REQUEST_V6, ECHO_REPLY_V6 = 128, 129


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071); the kernel fills it in for ICMPv6 itself."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ping(address: str, count: int, timeout_s: float) -> bool:
    target = ipaddress.ip_address(address)
    v6 = target.version == 6
    family, proto = (
        (socket.AF_INET6, socket.IPPROTO_ICMPV6) if v6 else (socket.AF_INET, socket.IPPROTO_ICMP)
    )
    request_type, reply_type = (
        (ECHO_REQUEST_V6, ECHO_REPLY_V6) if v6 else (ECHO_REQUEST_V4, ECHO_REPLY_V4)
    )
    ident = os.getpid() & 0xFFFF
    with socket.socket(family, socket.SOCK_RAW, proto) as sock:
        for seq in range(count):
            header = struct.pack("!BBHHH", request_type, 0, 0, ident, seq)
            payload = b"whalescale-lab"
            if not v6:
                header = struct.pack(
                    "!BBHHH", request_type, 0, checksum(header + payload), ident, seq
                )
            sock.sendto(header + payload, (address, 0))
            deadline = time.monotonic() + timeout_s
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([sock], [], [], left)[0]:
                    break
                packet, (source, *_) = sock.recvfrom(2048)
                # A raw IPv4 socket hands over the IP header too; IPv6 does not.
                icmp = packet[(packet[0] & 0x0F) * 4 :] if not v6 else packet
                kind, _, _, reply_ident, reply_seq = struct.unpack("!BBHHH", icmp[:8])
                from_target = ipaddress.ip_address(source.split("%")[0]) == target
                if (kind, reply_ident, reply_seq) == (reply_type, ident, seq) and from_target:
                    return True
    return False


if __name__ == "__main__":
    address, count, timeout_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    sys.exit(0 if ping(address, count, timeout_s) else 1)
