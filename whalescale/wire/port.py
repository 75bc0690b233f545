"""The one UDP port a node listens on, and how its datagrams are told apart.

Three protocols share it (design §3.5-3.6), told apart by the first four bytes:

- WireGuard (types 1..4, three zero reserved bytes): the session engine's.
- Relayed WireGuard: a WireGuard type with a relay channel in the reserved
  bytes (nat/relay.py); an anchor forwards it, an end untags it for its engine.
- Bootstrap (first byte 0x57, outside WireGuard's types): PATH_PROBE, its reply
  and LAN_HELLO (nat/bootstrap.py).

A relayed peer appears to the session engine at an alias address
(`relay_alias(channel)`: in 100::/64, RFC 6666's discard-only prefix, port 0,
so a datagram leaking past the node goes nowhere); the node translates
between the alias and (anchor endpoint, tag) on the way out and in.
"""

from __future__ import annotations

import enum
import ipaddress

Addr = tuple[str, int]

BOOTSTRAP_MAGIC = 0x57  # 'W'
WIREGUARD_TYPES = frozenset((1, 2, 3, 4))
MAX_CHANNEL = 2**24 - 1
_ALIAS_NET = ipaddress.IPv6Network("100::/64")  # RFC 6666 discard-only


class Queue(enum.IntEnum):
    """Which of the port's two sockets a datagram waits in; the kernel steers by this
    (agent/steering.py compiles it into a classic BPF program), so transport data, the
    bulk of the traffic, never queues behind handshakes, probes or a flood of them. The
    values are the sockets' places in their reuseport group."""

    CONTROL = 0  # handshakes, cookies, bootstrap, anything unknown (and empty datagrams)
    DATA = 1  # WireGuard transport data, relay-tagged or not


TRANSPORT_TYPE = 4  # WireGuard's transport-data message type (wire/messages.py)


def queue_of(datagram: bytes) -> Queue:
    return Queue.DATA if datagram[:1] == bytes((TRANSPORT_TYPE,)) else Queue.CONTROL


class Protocol(enum.Enum):
    WIREGUARD = "wireguard"
    RELAYED = "relayed"
    BOOTSTRAP = "bootstrap"


def protocol_of(datagram: bytes) -> Protocol:
    if datagram and datagram[0] == BOOTSTRAP_MAGIC:
        return Protocol.BOOTSTRAP
    if len(datagram) >= 4 and datagram[0] in WIREGUARD_TYPES and datagram[1:4] != b"\0\0\0":
        return Protocol.RELAYED
    return Protocol.WIREGUARD  # WireGuard's parser counts and drops what is not one of its


# ----- the relay channel tag ------------------------------------------------------

def relay_channel(datagram: bytes) -> int:
    """The relay channel a WireGuard datagram is tagged with; 0 if none (or not WireGuard)."""
    if len(datagram) < 4 or datagram[0] not in WIREGUARD_TYPES:
        return 0
    return int.from_bytes(datagram[1:4], "big")


def tag(datagram: bytes, channel: int) -> bytes:
    if len(datagram) < 4 or datagram[0] not in WIREGUARD_TYPES or any(datagram[1:4]):
        raise ValueError("only an untagged WireGuard message can be tagged")
    if not 1 <= channel <= MAX_CHANNEL:
        raise ValueError(f"channel {channel}")
    return datagram[:1] + channel.to_bytes(3, "big") + datagram[4:]


def untag(datagram: bytes) -> bytes:
    return datagram[:1] + bytes(3) + datagram[4:]


# ----- the relay alias ------------------------------------------------------------

def relay_alias(channel: int) -> Addr:
    return (str(_ALIAS_NET.network_address + channel), 0)


def channel_of_alias(addr: Addr) -> int:
    """The channel an alias stands for; 0 if `addr` is a real endpoint."""
    try:
        ip = ipaddress.ip_address(addr[0])
    except ValueError:
        return 0
    if addr[1] != 0 or ip not in _ALIAS_NET:
        return 0
    channel = int(ip) - int(_ALIAS_NET.network_address)
    return channel if 1 <= channel <= MAX_CHANNEL else 0


def endpoint_text(addr: Addr) -> str:
    """`host:port`, or `[host]:port` for IPv6, as logs and status write endpoints."""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
