"""The agent's DNS answers for the mesh's names, sans-I/O: bytes and a source address in,
bytes (or nothing) out. The shell (agent/name_server.py) owns the sockets.

What it answers, for class IN (it is authoritative for the suffix and nothing else,
and never recursive: it must not become an open resolver):
- NAME.SUFFIX of a node or WireGuard peer: its tunnel addresses, A and AAAA (ANY gets
  both); another type of a known name, or the suffix itself: NODATA (NOERROR, no
  answer), so the resolver does not conclude the name is gone;
- any other name under the suffix: NXDOMAIN;
- anything else: REFUSED, so a resolver with several servers moves on to the next.
A malformed query, a response, or a query from outside the mesh (TunnelNames.from_mesh)
gets no answer: dropped and counted.

Never an amplifier: a UDP answer is at most 512 bytes, or the EDNS size the query
offers up to `MAX_UDP_BYTES`; a bigger one goes out empty with TC set. Sources are
mesh peers, whose source addresses cryptokey routing has already checked, or this host.
"""

from __future__ import annotations

from collections import Counter

from ..config import Mesh
from . import dns_message as dns
from .tunnel_names import IPAddress, TunnelNames

# A reload changes the answers: a short TTL lets every resolver's cache catch up within
# a minute, and a query costs the mesh next to nothing (a local socket, or one peer).
TTL_S = 60
# The DNS Flag Day 2020 size: a UDP answer that fits in any path's MTU unfragmented.
MAX_UDP_BYTES = 1232
MAX_TCP_BYTES = 65535  # a TCP message's 16-bit length (RFC 1035 §4.2.2)


class DnsResponder:
    """Answers queries for the names of one mesh; `set_mesh` after a reload."""

    def __init__(self, mesh: Mesh) -> None:
        self.names = TunnelNames.of(mesh)
        self.counters: Counter[str] = Counter()  # answers by rcode, drops by reason

    def set_mesh(self, mesh: Mesh) -> None:
        self.names = TunnelNames.of(mesh)

    def answer_udp(self, data: bytes, source: IPAddress) -> bytes | None:
        return self._answer(data, source, tcp=False)

    def answer_tcp(self, data: bytes, source: IPAddress) -> bytes | None:
        """One message of a TCP stream (without its length prefix)."""
        return self._answer(data, source, tcp=True)

    def _answer(self, data: bytes, source: IPAddress, *, tcp: bool) -> bytes | None:
        if not self.names.from_mesh(source):
            self.counters["dropped_not_from_mesh"] += 1
            return None
        try:
            query = dns.parse_query(data)
        except dns.MalformedQuery:
            self.counters["dropped_malformed"] += 1
            return None
        if query.opcode != 0:
            self.counters["notimp"] += 1
            return dns.encode_header_only(query, dns.RCODE_NOTIMP)
        if query.edns is not None and query.edns.version != 0:
            rcode, answers = dns.RCODE_BADVERS, []
        else:
            rcode, answers = self._lookup(query)
        self.counters[_RCODE_NAMES.get(rcode, str(rcode))] += 1
        if tcp:
            limit = MAX_TCP_BYTES
        elif query.edns is None:
            limit = dns.PLAIN_UDP_BYTES
        else:  # RFC 6891 §6.2.5: below 512 is taken as 512
            limit = min(max(query.edns.udp_size, dns.PLAIN_UDP_BYTES), MAX_UDP_BYTES)
        return dns.encode_response(query, rcode, answers, limit=limit,
                                   edns_udp_size=MAX_UDP_BYTES)

    def _lookup(self, query: dns.Query) -> tuple[int, list[dns.Record]]:
        suffix = tuple(self.names.suffix.encode().split(b"."))
        labels = query.labels
        if query.qclass != dns.CLASS_IN or labels[len(labels) - len(suffix):] != suffix:
            return dns.RCODE_REFUSED, []
        if labels == suffix:
            return dns.RCODE_NOERROR, []  # the zone's apex: it exists, holds no address
        addresses = self.names.addresses.get(b".".join(labels).decode("ascii", "replace"))
        if addresses is None:
            return dns.RCODE_NXDOMAIN, []
        wanted = _FAMILIES.get(query.qtype, ())
        return dns.RCODE_NOERROR, [
            dns.Record(dns.TYPE_A if a.version == 4 else dns.TYPE_AAAA, TTL_S, a.packed)
            for a in addresses if a.version in wanted]


_FAMILIES = {dns.TYPE_A: (4,), dns.TYPE_AAAA: (6,), dns.TYPE_ANY: (4, 6)}
_RCODE_NAMES = {dns.RCODE_NOERROR: "noerror", dns.RCODE_NXDOMAIN: "nxdomain",
                dns.RCODE_REFUSED: "refused", dns.RCODE_BADVERS: "badvers"}

