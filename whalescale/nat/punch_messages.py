"""The bodies of the hole-punching messages (punch.py), sans-I/O.

Control message bodies (inside the encrypted session, one whalescale control
kind shared with relay.py, which uses types 16..; integers big-endian):

    NAT_INFO       1 | info
    PUNCH_REQUEST  2 | target node ID (32) | info (the requester's)
    PUNCH          3 | peer node ID (32) | punch ID (u32) | start delay ms (u16) | info
    SEEN_AT        4 | family (4|6) | address (4|16) | port (u16, >= 1)
    info      = nat type (u8) | filtering (u8) | n (u8, 0..8) | n * candidate
    candidate = kind (u8) | family (4|6) | prefix (u8) | address (4|16) | port (u16, >= 1)

`prefix` is the LAN interface's prefix length (1..32 or 1..128) and 0 for
every other kind; an IPV6 candidate has family 6. Duplicate candidates,
unknown values and trailing bytes are MalformedPunch. An anchor sends SEEN_AT to a
member whose authenticated traffic came from a new source: its NAT mapped it anew, which
it cannot see itself. Releases before SEEN_AT count it malformed and drop it.
"""

from __future__ import annotations

import enum
import struct

import attrs

from .bootstrap import (
    Addr,
    MalformedBootstrap,
    address_bytes,
    address_size,
    check_port,
    read_address,
)
from .nattype import Filtering, NatType

# ----- specification ---------------------------------------------------------
NODE_ID_BYTES = 32
MAX_CANDIDATES = 8
_INFO = struct.Struct(">BBB")
_CANDIDATE = struct.Struct(">BBB")
_PORT = struct.Struct(">H")
_PUNCH = struct.Struct(">32sIH")
MAX_BODY_BYTES = 1 + _PUNCH.size + _INFO.size + MAX_CANDIDATES * (_CANDIDATE.size + 16 + 2)

class MessageType(enum.IntEnum):
    NAT_INFO = 1
    PUNCH_REQUEST = 2
    PUNCH = 3
    SEEN_AT = 4


class MalformedPunch(ValueError):
    """A body that is not exactly one well-formed punch message."""


class CandidateKind(enum.IntEnum):
    OBSERVED = 1  # as an anchor saw it (the anchor fills this in)
    MAPPED = 2  # a port mapping (PCP / NAT-PMP / UPnP): accepts anyone
    LAN = 3  # a local interface address, with its prefix
    IPV6 = 4  # a global IPv6 address


@attrs.frozen(slots=True)
class Candidate:
    kind: CandidateKind
    host: str
    port: int
    prefix: int = 0  # LAN only

    @property
    def addr(self) -> Addr:
        return (self.host, self.port)


@attrs.frozen(slots=True)
class NatInfo:
    nat_type: NatType = NatType.UNKNOWN
    filtering: Filtering = Filtering.UNKNOWN
    candidates: tuple[Candidate, ...] = ()

    def of_kind(self, kind: CandidateKind) -> list[Candidate]:
        return [c for c in self.candidates if c.kind == kind]

    def seen_at(self, observed: Addr) -> NatInfo:
        """This info with the OBSERVED candidate replaced by what an anchor saw."""
        kept = tuple(c for c in self.candidates if c.kind != CandidateKind.OBSERVED)
        return attrs.evolve(self, candidates=(
            Candidate(CandidateKind.OBSERVED, *observed), *kept)[:MAX_CANDIDATES])


@attrs.frozen(slots=True)
class NatInfoMessage:
    info: NatInfo


@attrs.frozen(slots=True)
class PunchRequest:
    target: bytes
    info: NatInfo


@attrs.frozen(slots=True)
class Punch:
    peer: bytes
    punch_id: int
    start_delay_s: float  # whole milliseconds on the wire
    info: NatInfo


@attrs.frozen(slots=True)
class SeenAt:
    endpoint: Addr


Message = NatInfoMessage | PunchRequest | Punch | SeenAt


# ----- encode / decode ----------------------------------------------------------

def _encode_info(info: NatInfo) -> bytes:
    if len(info.candidates) > MAX_CANDIDATES:
        raise ValueError(f"more than {MAX_CANDIDATES} candidates")
    out = [_INFO.pack(info.nat_type, info.filtering, len(info.candidates))]
    for c in info.candidates:
        family, packed = address_bytes(c.host)
        out.append(_CANDIDATE.pack(c.kind, family, c.prefix) + packed
                   + _PORT.pack(check_port(c.port)))
    return b"".join(out)


def _read_info(body: bytes, offset: int) -> tuple[NatInfo, int]:
    if len(body) < offset + _INFO.size:
        raise MalformedPunch("info truncated")
    nat_type, filtering, n = _INFO.unpack_from(body, offset)
    try:
        nat, filt = NatType(nat_type), Filtering(filtering)
    except ValueError as exc:
        raise MalformedPunch(f"NAT type {nat_type} / filtering {filtering}") from exc
    if n > MAX_CANDIDATES:
        raise MalformedPunch(f"{n} candidates")
    offset += _INFO.size
    candidates: list[Candidate] = []
    for i in range(n):
        if len(body) < offset + _CANDIDATE.size:
            raise MalformedPunch(f"candidate {i} truncated")
        kind, family, prefix = _CANDIDATE.unpack_from(body, offset)
        try:
            ckind = CandidateKind(kind)
        except ValueError as exc:
            raise MalformedPunch(f"candidate {i}: kind {kind}") from exc
        (host, port), offset = _read_endpoint(body, offset + _CANDIDATE.size, family,
                                              f"candidate {i}")
        if ckind == CandidateKind.LAN:
            if not 1 <= prefix <= 8 * address_size(family):
                raise MalformedPunch(f"candidate {i}: prefix {prefix}")
        elif prefix != 0:
            raise MalformedPunch(f"candidate {i}: prefix on a {ckind.name} candidate")
        if ckind == CandidateKind.IPV6 and family != 6:
            raise MalformedPunch(f"candidate {i}: IPV6 candidate of family {family}")
        candidate = Candidate(ckind, host, port, prefix)
        if candidate in candidates:
            raise MalformedPunch(f"candidate {i} repeated")
        candidates.append(candidate)
    return NatInfo(nat, filt, tuple(candidates)), offset


def _read_endpoint(body: bytes, offset: int, family: int, what: str) -> tuple[Addr, int]:
    """An address of `family` and a port >= 1 at `offset`, and the offset after them."""
    try:
        size = address_size(family)
    except MalformedBootstrap as exc:
        raise MalformedPunch(f"{what}: family {family}") from exc
    if len(body) < offset + size + _PORT.size:
        raise MalformedPunch(f"{what} truncated")
    host = read_address(family, body[offset : offset + size])
    (port,) = _PORT.unpack_from(body, offset + size)
    if port == 0:
        raise MalformedPunch(f"{what}: port 0")
    return (host, port), offset + size + _PORT.size


def encode(message: Message) -> bytes:
    match message:
        case NatInfoMessage(info):
            return bytes((MessageType.NAT_INFO,)) + _encode_info(info)
        case PunchRequest(target, info):
            if len(target) != NODE_ID_BYTES:
                raise ValueError("node ID must be 32 bytes")
            return bytes((MessageType.PUNCH_REQUEST,)) + target + _encode_info(info)
        case Punch(peer, punch_id, delay_s, info):
            delay_ms = round(delay_s * 1000)
            return (bytes((MessageType.PUNCH,)) + _PUNCH.pack(peer, punch_id, delay_ms)
                    + _encode_info(info))
        case SeenAt((host, port)):
            family, packed = address_bytes(host)
            return bytes((MessageType.SEEN_AT, family)) + packed + _PORT.pack(check_port(port))
    raise TypeError(message)  # pragma: no cover


def decode(body: bytes) -> Message:
    if not body or len(body) > MAX_BODY_BYTES:
        raise MalformedPunch(f"body of {len(body)} bytes")
    kind, offset = body[0], 1
    message: Message
    if kind == MessageType.NAT_INFO:
        info, offset = _read_info(body, offset)
        message = NatInfoMessage(info)
    elif kind == MessageType.PUNCH_REQUEST:
        if len(body) < offset + NODE_ID_BYTES:
            raise MalformedPunch("PUNCH_REQUEST truncated")
        target = body[offset : offset + NODE_ID_BYTES]
        info, offset = _read_info(body, offset + NODE_ID_BYTES)
        message = PunchRequest(target, info)
    elif kind == MessageType.PUNCH:
        if len(body) < offset + _PUNCH.size:
            raise MalformedPunch("PUNCH truncated")
        peer, punch_id, delay_ms = _PUNCH.unpack_from(body, offset)
        info, offset = _read_info(body, offset + _PUNCH.size)
        message = Punch(peer, punch_id, delay_ms / 1000, info)
    elif kind == MessageType.SEEN_AT:
        if len(body) < offset + 1:
            raise MalformedPunch("SEEN_AT truncated")
        endpoint, offset = _read_endpoint(body, offset + 1, body[offset], "SEEN_AT")
        message = SeenAt(endpoint)
    else:
        raise MalformedPunch(f"unknown punch message type {kind}")
    if offset != len(body):
        raise MalformedPunch("trailing bytes")
    return message
