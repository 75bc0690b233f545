"""The flows this node sent into the tunnel: what makes the firewall stateful.

A packet coming back on a flow we sent on lately passes whatever the rules say, as
conntrack's "established" does: replies to connections we opened, and the answers a
peer sends to our pings. A flow is the 5-tuple for TCP and UDP (in the direction we
sent it), the echo identifier for ICMP; an ICMP error passes when the packet it quotes
belongs to one of our flows (Packet Too Big must reach us, or path MTU discovery fails).

Keys are (protocol, source + destination address + source + destination port), so that
for an IPv4 packet without options the bytes are `packet[12:24]` as they stand: the
sending side's fast path (filter.py) slices them without reading the header.

Numbers (implementation choices, not a spec):
- idle timeouts: TCP 7,440 s, above Linux's default TCP keepalive interval of 7,200 s
  (`tcp_keepalive_time`), so an idle connection with keepalives never expires (conntrack
  keeps established TCP 5 days); UDP 180 s, nebula's default and above conntrack's
  120 s for a UDP stream, longer than the keepalives of UDP protocols (25 s for
  WireGuard's, 30 s idle for QUIC's); ICMP 30 s, conntrack's: an echo reply comes
  within seconds.
- at most MAX_FLOWS flows (~250 bytes of Python objects each, ~4 MB): when full, the
  expired go, then the least recently used eighth. An evicted flow that is still alive
  comes back with the next packet we send on it, which is what its replies answer.
"""

from __future__ import annotations

import heapq

from .packet import ECHO_REPLY, ECHO_REQUEST, ICMP, NO_PORT, TCP, UDP, Header, is_icmp_error, quoted

FlowKey = tuple[int, bytes]
IDLE_TIMEOUT_S = {TCP: 7440.0, UDP: 180.0, ICMP: 30.0}
MAX_FLOWS = 16384


def _ports(first: int, second: int) -> bytes:
    return first.to_bytes(2, "big") + second.to_bytes(2, "big")


def sent_key(header: Header) -> FlowKey | None:
    """The flow a packet we send opens or refreshes, None if it is none we track."""
    if header.proto in (TCP, UDP) and header.sport != NO_PORT:
        return header.proto, header.src + header.dst + _ports(header.sport, header.dport)
    if header.proto == ICMP and header.sport == ECHO_REQUEST[header.version] \
            and header.dport != NO_PORT:
        return ICMP, header.src + header.dst + header.dport.to_bytes(2, "big")
    return None


def answered_key(packet: bytes, header: Header) -> FlowKey | None:
    """The flow of ours an arriving packet would answer, None if it answers none."""
    if header.proto in (TCP, UDP) and header.sport != NO_PORT:
        return header.proto, header.dst + header.src + _ports(header.dport, header.sport)
    if header.proto == ICMP and header.sport == ECHO_REPLY[header.version] \
            and header.dport != NO_PORT:
        return ICMP, header.dst + header.src + header.dport.to_bytes(2, "big")
    if is_icmp_error(header):
        inner = quoted(packet, header)
        # the quoted packet is one we sent to the error's sender, or through it
        return sent_key(inner) if inner is not None and inner.src == header.dst else None
    return None


class Flows:
    """Flow key -> when we last sent on it, bounded."""

    def __init__(self, max_flows: int = MAX_FLOWS) -> None:
        self.max_flows = max_flows
        self.seen: dict[FlowKey, float] = {}
        self.evicted = 0  # live flows pushed out by a full table (status shows it)

    def __len__(self) -> int:
        return len(self.seen)

    def sent(self, key: FlowKey, now: float) -> None:
        seen = self.seen
        if key not in seen and len(seen) >= self.max_flows:
            self._make_room(now)
        seen[key] = now

    def answers(self, key: FlowKey, now: float) -> bool:
        """Whether a packet on `key` answers a flow we sent on within its idle timeout."""
        at = self.seen.get(key)
        return at is not None and now - at <= IDLE_TIMEOUT_S[key[0]]

    def expire(self, now: float) -> None:
        seen = self.seen
        for key in [k for k, at in seen.items() if now - at > IDLE_TIMEOUT_S[k[0]]]:
            del seen[key]

    def _make_room(self, now: float) -> None:
        self.expire(now)
        if len(self.seen) >= self.max_flows:
            oldest = heapq.nsmallest(max(1, self.max_flows // 8), self.seen.items(),
                                     key=lambda item: item[1])
            for key, _ in oldest:
                del self.seen[key]
            self.evicted += len(oldest)
