"""DNS queries made by hand and responses taken apart, for the responder's tests and the
name server's: a mesh with a node of two addresses, one of one, a WireGuard peer."""

from __future__ import annotations

import ipaddress
import struct

from whalescale.identity import Identity
from whalescale.node import dns_message as dns

MESH = f"""\
[mesh]
name = "home"
suffix = "home.arpa"
prefixes = ["100.96.0.0/16", "fd7a::/64"]

[[node]]
name = "nas"
public_key = "{Identity.generate().public_b64}"
address = ["100.96.0.1", "fd7a::1"]
routes = ["192.168.1.0/24"]

[[node]]
name = "laptop"
public_key = "{Identity.generate().public_b64}"
address = "100.96.0.2"

[[wireguard]]
name = "phone"
public_key = "{Identity.generate().public_b64}"
address = "100.96.0.9"
"""
PEER = ipaddress.ip_address("100.96.0.2")


def query(name: str, qtype: int = dns.TYPE_A, *, qid: int = 0x1234, flags: int = dns.RD,
          qclass: int = dns.CLASS_IN, edns_size: int | None = None, edns_version: int = 0
          ) -> bytes:
    wire = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".") if label)
    opt = b""
    if edns_size is not None:
        opt = b"\x00" + struct.pack("!HHBBHH", dns.TYPE_OPT, edns_size, 0, edns_version, 0, 0)
    return (struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 1 if opt else 0) + wire + b"\x00"
            + struct.pack("!HH", qtype, qclass) + opt)


def parsed(response: bytes) -> tuple[int, int, list[tuple[int, str]], int]:
    """(flags, rcode, [(type, address)], ttl of the first answer or 0) of a response to
    a question made by `query`."""
    qid, flags, qd, an, ns, _ar = struct.unpack_from("!HHHHHH", response)
    assert qid == 0x1234 and qd == 1 and ns == 0
    offset = 12
    while response[offset]:
        offset += response[offset] + 1
    offset += 5
    answers, ttl = [], 0
    for _ in range(an):
        pointer, rtype, rclass, ttl, rdlen = struct.unpack_from("!HHHIH", response, offset)
        assert pointer == 0xC00C and rclass == dns.CLASS_IN
        rdata = response[offset + 12:offset + 12 + rdlen]
        answers.append((rtype, str(ipaddress.ip_address(rdata))))
        offset += 12 + rdlen
    return flags, flags & 0xF, answers, ttl
