"""Which inner packets may skip the steady delay (sender.py): ICMP and pure TCP ACKs.

Over paths of different delay the sender holds each data packet so that every
path delivers it after the same one-way delay, the slowest used path's
(`DelayLine`, sender.py): the inner flow then sees one steady delay from its
first packet, which a delay-based TCP (BBR: min RTT kept for 10 s, window of
2 x bandwidth x min RTT) and HyStart need. Two kinds of packet need not pay it:

- ICMP and ICMPv6: no congestion control measures them, and a ping that pays
  the slow path's delay when nothing needs the slow path reports a link worse
  than it is;
- a TCP segment without payload, SYN or FIN (a pure ACK): the flow it
  acknowledges measures its RTT as data delay + ACK delay, and the ACK delay
  is steady as long as ACKs always take the fastest path. The handshake (SYN,
  SYN-ACK) is held like data, so the first RTT sample is not below the ones
  that follow.

Everything else (TCP data, UDP, other protocols, anything malformed) is held.
The TUN gives us well-formed packets; a short or odd one is simply held.
"""

from __future__ import annotations

_ICMP, _TCP, _ICMPV6 = 1, 6, 58
_TCP_SYN, _TCP_FIN = 0x02, 0x01


def _pure_ack(packet: bytes, tcp_at: int, ip_end: int) -> bool:
    if len(packet) < tcp_at + 14:
        return False
    data_offset = (packet[tcp_at + 12] >> 4) * 4
    if packet[tcp_at + 13] & (_TCP_SYN | _TCP_FIN):
        return False
    return ip_end - tcp_at - data_offset == 0


def prompt(packet: bytes) -> bool:
    """True for an inner packet that takes the fastest path at once (module docstring)."""
    if len(packet) < 20:
        return False
    version = packet[0] >> 4
    if version == 4:
        proto = packet[9]
        if proto == _ICMP:
            return True
        return proto == _TCP and _pure_ack(packet, (packet[0] & 0x0F) * 4,
                                           int.from_bytes(packet[2:4], "big"))
    if version == 6 and len(packet) >= 40:
        proto = packet[6]  # extension headers are rare inside a tunnel: held
        if proto == _ICMPV6:
            return True
        return proto == _TCP and _pure_ack(packet, 40, 40 + int.from_bytes(packet[4:6], "big"))
    return False
