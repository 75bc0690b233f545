"""Whalescale's own messages inside a WireGuard session.

A transport message's plaintext is normally an IP packet, whose first nibble
is 4 or 6. Ours start with MARKER (0x01: version nibble 0), so they can
never be mistaken for IP, and a vanilla WireGuard peer would drop them as
"not IP". We still send them only to peers the mesh file lists as whalescale
nodes: a vanilla peer never sees a byte it does not understand.

Layout: MARKER u8 | kind u8 | body length u16 (big-endian) | body. The
length is needed because WireGuard pads every plaintext to 16 bytes.
"""

from __future__ import annotations

import struct
from enum import IntEnum

MARKER = 0x01
_HEADER = struct.Struct(">BBH")
HEADER_SIZE = _HEADER.size
MAX_BODY = 1200  # fits any tunnel MTU >= 1280 with room for IP-less framing
MAX_PING_BODY = 64  # a PING is echoed as is: keep it small


class Kind(IntEnum):
    GOSSIP = 1
    PING = 2
    PONG = 3
    PATH_ANNOUNCE = 4  # multipath (multipath/link.py)
    PATH_PROBE = 5
    PATH_PROBE_REPLY = 6
    MP_HEARTBEAT = 7
    MP_FEEDBACK = 8
    TRAVERSAL = 9  # hole punching (nat/punch_messages.py, 1..) and relay (nat/relay.py, 16..)
    # Addresses used only while the others fail (multipath/link.py). A release before
    # it counts it as malformed and drops it: it then never uses our backup paths.
    PATH_ANNOUNCE_BACKUP = 10


class MalformedControl(ValueError):
    """A plaintext that claims to be a control message but is not one."""


def encode(kind: Kind, body: bytes) -> bytes:
    if len(body) > MAX_BODY:
        raise ValueError(f"control body of {len(body)} bytes exceeds {MAX_BODY}")
    return _HEADER.pack(MARKER, kind, len(body)) + body


def decode(plaintext: bytes) -> tuple[Kind, bytes]:
    if len(plaintext) < HEADER_SIZE:
        raise MalformedControl("control message shorter than its header")
    marker, kind, length = _HEADER.unpack_from(plaintext)
    if marker != MARKER:
        raise MalformedControl(f"marker {marker:#x}")
    if HEADER_SIZE + length > len(plaintext):
        raise MalformedControl(f"body of {length} bytes in a {len(plaintext)}-byte message")
    if any(plaintext[HEADER_SIZE + length :]):
        raise MalformedControl("non-zero bytes after the body (WireGuard pads with zeros)")
    try:
        return Kind(kind), plaintext[HEADER_SIZE : HEADER_SIZE + length]
    except ValueError as exc:
        raise MalformedControl(f"unknown control kind {kind}") from exc
