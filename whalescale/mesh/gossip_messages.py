"""Gossip payloads on the wire: UPDATE, DIGEST, SUMMARY, REQUEST (encode and decode).

Wire format (first byte = type; integers big-endian; payload <= 1200 bytes):

    UPDATE  1 | n (u8, >= 1) | n * record (records.py)
    DIGEST  2 | count (u32) | k (u8: 1 = root, 16 = buckets) | k * hash (8)
    SUMMARY 3 | complete (u16 bucket mask) | n (u16) | n * (peer_id 32 | seq u64)
    REQUEST 4 | n (u8, >= 1) | n * peer_id (32)

A SUMMARY lists whole buckets whose bit is set in `complete` (a peer absent
from such a bucket is one the sender lacks); a bucket too large for one
payload is sent partially, with its bit clear.
"""

from __future__ import annotations

import enum
import hashlib
import struct

import attrs

from . import records
from .records import EndpointRecord, MalformedRecord

# ----- specification ---------------------------------------------------------
MAX_PAYLOAD_BYTES = 1200  # one gossip payload fits a control message in one datagram
BUCKETS = 16  # digest buckets, by the first nibble of peer_id
BUCKET_HASH_BYTES = 8
DIGEST_PERSON = b"ws-gossip-dgst1"
DIGEST = struct.Struct(">BIB")
SUMMARY = struct.Struct(">BHH")
ENTRY = struct.Struct(">32sQ")
MAX_SUMMARY_ENTRIES = (MAX_PAYLOAD_BYTES - SUMMARY.size) // ENTRY.size  # 29
MAX_REQUEST_IDS = (MAX_PAYLOAD_BYTES - 2) // records.PEER_ID_BYTES  # 37


class MessageType(enum.IntEnum):
    UPDATE = 1
    DIGEST = 2
    SUMMARY = 3
    REQUEST = 4


class MalformedMessage(ValueError):
    """A gossip payload that is not exactly one well-formed message."""


@attrs.frozen(slots=True)
class Update:
    records: tuple[tuple[EndpointRecord, bytes], ...]  # each with its exact bytes


@attrs.frozen(slots=True)
class Digest:
    count: int  # self-attested records held, for logs
    hashes: tuple[bytes, ...]  # the root alone, or one per bucket

    @property
    def root(self) -> bytes:
        if len(self.hashes) == 1:
            return self.hashes[0]
        return hashlib.blake2b(b"".join(self.hashes), digest_size=BUCKET_HASH_BYTES,
                               person=DIGEST_PERSON).digest()


@attrs.frozen(slots=True)
class Summary:
    complete: int  # bit i set: bucket i is listed whole
    entries: tuple[tuple[bytes, int], ...]


@attrs.frozen(slots=True)
class Request:
    peer_ids: tuple[bytes, ...]


Message = Update | Digest | Summary | Request


def decode_message(payload: bytes) -> Message:
    if not payload or len(payload) > MAX_PAYLOAD_BYTES:
        raise MalformedMessage(f"payload of {len(payload)} bytes")
    kind = payload[0]
    if kind == MessageType.UPDATE:
        if len(payload) < 2 or payload[1] == 0:
            raise MalformedMessage("UPDATE without records")
        found, offset = [], 2
        for _ in range(payload[1]):
            try:
                record, end = records.read_record(payload, offset)
            except MalformedRecord as exc:
                raise MalformedMessage(f"UPDATE record {len(found)}: {exc}") from exc
            found.append((record, payload[offset:end]))
            offset = end
        if offset != len(payload):
            raise MalformedMessage("UPDATE has trailing bytes")
        return Update(tuple(found))
    if kind == MessageType.DIGEST:
        if len(payload) < DIGEST.size:
            raise MalformedMessage("DIGEST truncated")
        _, count, k = DIGEST.unpack_from(payload)
        if k not in (1, BUCKETS) or len(payload) != DIGEST.size + k * BUCKET_HASH_BYTES:
            raise MalformedMessage("DIGEST of the wrong length")
        hashes = payload[DIGEST.size:]
        return Digest(count, tuple(hashes[i : i + BUCKET_HASH_BYTES]
                                   for i in range(0, len(hashes), BUCKET_HASH_BYTES)))
    if kind == MessageType.SUMMARY:
        if len(payload) < SUMMARY.size:
            raise MalformedMessage("SUMMARY truncated")
        _, complete, n = SUMMARY.unpack_from(payload)
        if len(payload) != SUMMARY.size + n * ENTRY.size:
            raise MalformedMessage("SUMMARY of the wrong length")
        return Summary(complete, tuple(ENTRY.unpack_from(payload, SUMMARY.size + i * ENTRY.size)
                                       for i in range(n)))
    if kind == MessageType.REQUEST:
        size = records.PEER_ID_BYTES
        if len(payload) < 2 or payload[1] == 0 or len(payload) != 2 + payload[1] * size:
            raise MalformedMessage("REQUEST of the wrong length")
        return Request(tuple(payload[2 + i * size : 2 + (i + 1) * size]
                             for i in range(payload[1])))
    raise MalformedMessage(f"unknown message type {kind}")


def encode_digest(digest: Digest) -> bytes:
    return DIGEST.pack(MessageType.DIGEST, digest.count, len(digest.hashes)) + b"".join(
        digest.hashes)


def encode_summary(summary: Summary) -> bytes:
    return SUMMARY.pack(MessageType.SUMMARY, summary.complete, len(summary.entries)) + b"".join(
        ENTRY.pack(peer_id, seq) for peer_id, seq in summary.entries)


def encode_request(request: Request) -> bytes:
    return bytes((MessageType.REQUEST, len(request.peer_ids))) + b"".join(request.peer_ids)


def bucket_of(peer_id: bytes) -> int:
    return peer_id[0] >> 4


