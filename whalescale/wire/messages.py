"""WireGuard's four message formats, byte for byte (whitepaper §5.4).

Every field is little-endian. Parsing never trusts the length of what arrived:
a datagram whose size does not match its type raises MalformedMessage, which
the engine counts and drops. Parsing does no cryptography; it only slices.
"""

from __future__ import annotations

import struct
from enum import IntEnum

import attrs


class MessageType(IntEnum):
    INITIATION = 1
    RESPONSE = 2
    COOKIE_REPLY = 3
    TRANSPORT = 4


INITIATION_SIZE = 148
RESPONSE_SIZE = 92
COOKIE_REPLY_SIZE = 64
TRANSPORT_HEADER_SIZE = 16
AEAD_TAG_SIZE = 16
TRANSPORT_MIN_SIZE = TRANSPORT_HEADER_SIZE + AEAD_TAG_SIZE
MAC_SIZE = 16
# Each handshake message ends in mac1 || mac2; both cover everything before them.
INITIATION_MAC1_OFFSET = INITIATION_SIZE - 2 * MAC_SIZE
RESPONSE_MAC1_OFFSET = RESPONSE_SIZE - 2 * MAC_SIZE

# type byte and three reserved zero bytes as one <I, receiver index, counter
TRANSPORT_HEADER = struct.Struct("<IIQ")


class MalformedMessage(ValueError):
    """A datagram that is not a well-formed WireGuard message."""


@attrs.frozen(slots=True)
class Initiation:
    sender: int
    noise: bytes  # ephemeral(32) || enc static(48) || enc timestamp(28)
    mac1: bytes
    mac2: bytes
    raw: bytes


@attrs.frozen(slots=True)
class Response:
    sender: int
    receiver: int
    noise: bytes  # ephemeral(32) || enc empty(16)
    mac1: bytes
    mac2: bytes
    raw: bytes


@attrs.frozen(slots=True)
class CookieReply:
    receiver: int
    nonce: bytes  # 24 bytes, XChaCha20-Poly1305
    encrypted_cookie: bytes  # 16 + tag 16


def message_type(datagram: bytes) -> MessageType:
    """The type of a datagram, checking the three reserved bytes are zero."""
    if len(datagram) < 4 or datagram[1:4] != b"\0\0\0":
        raise MalformedMessage("short datagram or non-zero reserved bytes")
    try:
        return MessageType(datagram[0])
    except ValueError as exc:
        raise MalformedMessage(f"unknown message type {datagram[0]}") from exc


def _expect_size(datagram: bytes, size: int, what: str) -> None:
    if len(datagram) != size:
        raise MalformedMessage(f"{what} of {len(datagram)} bytes, expected {size}")


def parse_initiation(datagram: bytes) -> Initiation:
    _expect_size(datagram, INITIATION_SIZE, "initiation")
    (sender,) = struct.unpack_from("<I", datagram, 4)
    return Initiation(
        sender=sender,
        noise=datagram[8:INITIATION_MAC1_OFFSET],
        mac1=datagram[INITIATION_MAC1_OFFSET : INITIATION_MAC1_OFFSET + MAC_SIZE],
        mac2=datagram[INITIATION_MAC1_OFFSET + MAC_SIZE :],
        raw=datagram,
    )


def parse_response(datagram: bytes) -> Response:
    _expect_size(datagram, RESPONSE_SIZE, "response")
    sender, receiver = struct.unpack_from("<II", datagram, 4)
    return Response(
        sender=sender,
        receiver=receiver,
        noise=datagram[12:RESPONSE_MAC1_OFFSET],
        mac1=datagram[RESPONSE_MAC1_OFFSET : RESPONSE_MAC1_OFFSET + MAC_SIZE],
        mac2=datagram[RESPONSE_MAC1_OFFSET + MAC_SIZE :],
        raw=datagram,
    )


def parse_cookie_reply(datagram: bytes) -> CookieReply:
    _expect_size(datagram, COOKIE_REPLY_SIZE, "cookie reply")
    (receiver,) = struct.unpack_from("<I", datagram, 4)
    return CookieReply(receiver=receiver, nonce=datagram[8:32], encrypted_cookie=datagram[32:])


def build_initiation_body(sender: int, noise: bytes) -> bytes:
    """Initiation up to mac1; the cookie layer appends mac1 and mac2."""
    return struct.pack("<II", MessageType.INITIATION, sender) + noise


def build_response_body(sender: int, receiver: int, noise: bytes) -> bytes:
    return struct.pack("<III", MessageType.RESPONSE, sender, receiver) + noise


def build_cookie_reply(receiver: int, nonce: bytes, encrypted_cookie: bytes) -> bytes:
    return struct.pack("<II", MessageType.COOKIE_REPLY, receiver) + nonce + encrypted_cookie
