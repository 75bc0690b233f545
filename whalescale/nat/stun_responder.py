"""A tiny STUN (RFC 8489) binding responder for the lab's "internet" namespace only.

miniupnpd refuses to forward while its WAN address is private, unless a STUN server
shows it an unfiltered 1:1 NAT (`ext_perform_stun=yes`). This answers every binding
request from the socket it arrived on with the source seen, as MAPPED-ADDRESS (which
miniupnpd 2.3.1 reads) and XOR-MAPPED-ADDRESS. CHANGE-REQUEST is ignored: miniupnpd only
checks that all its requests get answers and that the first one comes from the server.

Run: `python -m whalescale.nat.stun_responder [--port 3478]`.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import struct

# Specification (RFC 8489 sections 5, 14.1, 14.2).
MAGIC_COOKIE = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
ATTR_MAPPED_ADDRESS = 0x0001
ATTR_XOR_MAPPED_ADDRESS = 0x0020
FAMILY_IPV4 = 0x01
DEFAULT_PORT = 3478

_HEADER = struct.Struct("!HHI12s")  # type, length, magic cookie, transaction id
_ADDRESS_ATTR = struct.Struct("!HHxBH4s")  # type, length, 0, family, port, address


def binding_response(request: bytes, source: tuple[str, int]) -> bytes | None:
    """The answer to one datagram from `source`, or None when it is no binding request."""
    if len(request) < _HEADER.size:
        return None
    kind, _length, cookie, transaction_id = _HEADER.unpack_from(request)
    if kind != BINDING_REQUEST or cookie != MAGIC_COOKIE:
        return None
    address = ipaddress.IPv4Address(source[0])
    port = source[1]
    mapped = _ADDRESS_ATTR.pack(ATTR_MAPPED_ADDRESS, 8, FAMILY_IPV4, port, address.packed)
    xor_address = (int(address) ^ MAGIC_COOKIE).to_bytes(4, "big")
    xor_mapped = _ADDRESS_ATTR.pack(
        ATTR_XOR_MAPPED_ADDRESS, 8, FAMILY_IPV4, port ^ (MAGIC_COOKIE >> 16), xor_address
    )
    attributes = mapped + xor_mapped
    header = _HEADER.pack(BINDING_SUCCESS, len(attributes), MAGIC_COOKIE, transaction_id)
    return header + attributes


def serve(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    print(f"stun responder on udp port {port}", flush=True)
    while True:
        data, source = sock.recvfrom(2048)
        answer = binding_response(data, source)
        if answer is not None:
            sock.sendto(answer, source)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve(parser.parse_args().port)


if __name__ == "__main__":
    main()
