"""The gossip record (design.txt §3.6): where a peer can be reached, signed.

A record says "peer P has these endpoints", numbered by a per-signer sequence
number (never a timestamp, anti-patterns 2.3). Self-attested records are signed
by P itself and are authoritative; observations are signed by a third party
that saw P at an address and are advisory only (anti-patterns 3.3).

Wire format (all integers big-endian; the signature covers DOMAIN + body):

    body      = peer_id (32) | seq (u64) | flags (u8) | signer (32)
                | n (u8, 0..8) | n * endpoint
    endpoint  = kind (u8) | address (4 or 16) | port (u16, 1..65535)
    record    = body | signature (64, Ed25519 by signer)

flags: bit 0 = self_attested, other bits zero. `kind` names the path type and
address family together (_KIND_TO_ENDPOINT). Everything is exact: an unknown
flag or kind, a duplicate endpoint, a seq with the top bit set, trailing bytes
-> MalformedRecord. The signer is on the wire even when it must equal peer_id,
so a record claiming self-attestation under someone else's key is told apart
from plain garbage (gossip counts it as forged_self_attestation).
"""

from __future__ import annotations

import enum
import ipaddress
import struct

import attrs

from ..identity import Identity
from ..identity import verify as verify_signature

DOMAIN = b"whalescale-gossip-v1"
PEER_ID_BYTES = 32
SIGNATURE_BYTES = 64
MAX_ENDPOINTS = 8
# u64 on the wire with the top bit reserved zero, so SQLite's signed INTEGER
# (mesh/cache.py) can hold every seq we accept.
MAX_SEQ = 2**63 - 1
_FLAG_SELF_ATTESTED = 0x01

_HEAD = struct.Struct(">32sQB32sB")  # peer_id, seq, flags, signer, n
_PORT = struct.Struct(">H")
MAX_RECORD_BYTES = _HEAD.size + MAX_ENDPOINTS * (1 + 16 + 2) + SIGNATURE_BYTES  # 290


class MalformedRecord(ValueError):
    """Bytes that are not exactly one well-formed record."""


class PathType(enum.Enum):
    """How a peer is reached at an endpoint; the LKG cache stores the same values."""

    IPV4 = "ipv4"
    IPV6 = "ipv6"
    LAN = "lan"


# kind byte <-> (path type, IP version): IPV4/IPV6 paths carry their own family,
# a LAN path may be either.
_KIND_TO_ENDPOINT: dict[int, tuple[PathType, int]] = {
    1: (PathType.IPV4, 4),
    2: (PathType.IPV6, 6),
    3: (PathType.LAN, 4),
    4: (PathType.LAN, 6),
}
_ENDPOINT_TO_KIND = {v: k for k, v in _KIND_TO_ENDPOINT.items()}


def _canonical_host(host: str) -> str:
    address = ipaddress.ip_address(host)  # ValueError for anything but an IP literal
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        raise ValueError(f"{host!r}: a scoped address means nothing to another node")
    return str(address)


def _check_endpoint(instance: GossipEndpoint, _attr: object, _value: object) -> None:
    if not 1 <= instance.port <= 65535:
        raise ValueError(f"port {instance.port} out of range 1..65535")
    version = ipaddress.ip_address(instance.host).version
    if (instance.path_type, version) not in _ENDPOINT_TO_KIND:
        raise ValueError(f"{instance.path_type.name} path with an IPv{version} address")


@attrs.frozen(slots=True)
class GossipEndpoint:
    host: str = attrs.field(converter=_canonical_host)  # an IP literal, canonical form
    port: int = attrs.field(validator=_check_endpoint)
    path_type: PathType = attrs.field(validator=attrs.validators.instance_of(PathType))


@attrs.frozen(slots=True)
class EndpointRecord:
    peer_id: bytes  # the Ed25519 public key of the peer described
    endpoints: tuple[GossipEndpoint, ...]
    seq: int  # per signer, strictly increasing
    self_attested: bool
    signer: bytes  # == peer_id when self_attested; the observer's key otherwise
    signature: bytes  # Ed25519 by signer over DOMAIN + body


def _encode_body(peer_id: bytes, endpoints: tuple[GossipEndpoint, ...], seq: int,
                 self_attested: bool, signer: bytes) -> bytes:
    if len(peer_id) != PEER_ID_BYTES or len(signer) != PEER_ID_BYTES:
        raise ValueError("peer_id and signer must be 32-byte Ed25519 public keys")
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"seq {seq} out of range 0..{MAX_SEQ}")
    if len(endpoints) > MAX_ENDPOINTS:
        raise ValueError(f"{len(endpoints)} endpoints, at most {MAX_ENDPOINTS}")
    if len(set(endpoints)) != len(endpoints):
        raise ValueError("duplicate endpoint")
    flags = _FLAG_SELF_ATTESTED if self_attested else 0
    parts = [_HEAD.pack(peer_id, seq, flags, signer, len(endpoints))]
    for ep in endpoints:
        address = ipaddress.ip_address(ep.host)
        parts += [bytes((_ENDPOINT_TO_KIND[ep.path_type, address.version],)),
                  address.packed, _PORT.pack(ep.port)]
    return b"".join(parts)


def encode_record(record: EndpointRecord) -> bytes:
    if len(record.signature) != SIGNATURE_BYTES:
        raise ValueError("signature must be 64 bytes")
    return _encode_body(record.peer_id, record.endpoints, record.seq, record.self_attested,
                        record.signer) + record.signature


def read_record(data: bytes, offset: int = 0) -> tuple[EndpointRecord, int]:
    """Decode one record starting at `offset`; return it and the offset after it."""
    if len(data) - offset < _HEAD.size:
        raise MalformedRecord("truncated header")
    peer_id, seq, flags, signer, n = _HEAD.unpack_from(data, offset)
    if flags & ~_FLAG_SELF_ATTESTED:
        raise MalformedRecord(f"unknown flags {flags:#04x}")
    if seq > MAX_SEQ:
        raise MalformedRecord("seq has the reserved top bit set")
    if n > MAX_ENDPOINTS:
        raise MalformedRecord(f"{n} endpoints, at most {MAX_ENDPOINTS}")
    pos = offset + _HEAD.size
    endpoints = []
    for _ in range(n):
        if pos >= len(data):
            raise MalformedRecord("truncated endpoint")
        kind = _KIND_TO_ENDPOINT.get(data[pos])
        if kind is None:
            raise MalformedRecord(f"unknown endpoint kind {data[pos]}")
        path_type, version = kind
        size = 4 if version == 4 else 16
        end = pos + 1 + size + _PORT.size
        if end > len(data):
            raise MalformedRecord("truncated endpoint")
        raw = data[pos + 1 : pos + 1 + size]
        address = ipaddress.IPv4Address(raw) if version == 4 else ipaddress.IPv6Address(raw)
        (port,) = _PORT.unpack_from(data, pos + 1 + size)
        if port == 0:
            raise MalformedRecord("port 0")
        endpoints.append(GossipEndpoint(str(address), port, path_type))
        pos = end
    if len(set(endpoints)) != len(endpoints):
        raise MalformedRecord("duplicate endpoint")
    if len(data) - pos < SIGNATURE_BYTES:
        raise MalformedRecord("truncated signature")
    signature = bytes(data[pos : pos + SIGNATURE_BYTES])
    record = EndpointRecord(bytes(peer_id), tuple(endpoints), seq,
                            bool(flags & _FLAG_SELF_ATTESTED), bytes(signer), signature)
    return record, pos + SIGNATURE_BYTES


def decode_record(data: bytes) -> EndpointRecord:
    """Exactly one record, nothing after it; MalformedRecord for anything else."""
    record, end = read_record(data)
    if end != len(data):
        raise MalformedRecord(f"{len(data) - end} trailing bytes")
    return record


def _sign(identity: Identity, peer_id: bytes, endpoints: tuple[GossipEndpoint, ...],
          seq: int, self_attested: bool) -> EndpointRecord:
    endpoints = tuple(endpoints)
    body = _encode_body(peer_id, endpoints, seq, self_attested, identity.public)
    return EndpointRecord(peer_id, endpoints, seq, self_attested, identity.public,
                          identity.sign(DOMAIN + body))


def sign_self(identity: Identity, endpoints: tuple[GossipEndpoint, ...] | list[GossipEndpoint],
              seq: int) -> EndpointRecord:
    """Our own, authoritative declaration of our endpoints."""
    return _sign(identity, identity.public, tuple(endpoints), seq, self_attested=True)


def sign_observation(observer: Identity, peer_id: bytes,
                     endpoints: tuple[GossipEndpoint, ...] | list[GossipEndpoint],
                     seq: int) -> EndpointRecord:
    """A third-party observation: `observer` saw `peer_id` at `endpoints` (advisory)."""
    if peer_id == observer.public:
        raise ValueError("an observation is about someone else; use sign_self")
    return _sign(observer, peer_id, tuple(endpoints), seq, self_attested=False)


def verify(record: EndpointRecord) -> bool:
    """The signature is the signer's, and a self-attested record is signed by its peer."""
    if record.self_attested != (record.signer == record.peer_id):
        return False
    try:
        body = _encode_body(record.peer_id, record.endpoints, record.seq,
                            record.self_attested, record.signer)
    except (ValueError, KeyError):
        return False
    return verify_signature(record.signer, DOMAIN + body, record.signature)
