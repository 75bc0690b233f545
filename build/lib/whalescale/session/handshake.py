"""WireGuard's Noise_IKpsk2 handshake on top of `noiseprotocol` (whitepaper §5.4.2-5.4.3).

noiseprotocol does every cryptographic step; this module only fixes
WireGuard's construction (protocol name, prologue, all-zero PSK) and takes
the two transport keys out once the handshake completes. Those keys are read
from noiseprotocol's internal cipher states because its own transport API
keeps a hidden counter with no replay window; pyproject pins the version and
tests/session/test_handshake.py checks the attributes still exist.
"""

from __future__ import annotations

import struct
import warnings

import attrs
from cryptography.exceptions import InvalidTag
from noise.connection import Keypair, NoiseConnection
from noise.exceptions import NoiseInvalidMessage

PROTOCOL_NAME = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
PROLOGUE = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
ZERO_PSK = bytes(32)
INITIATION_NOISE_SIZE = 108
RESPONSE_NOISE_SIZE = 48
TIMESTAMP_SIZE = 12
_TAI64_EPOCH = 0x400000000000000A



class HandshakeFailed(ValueError):
    """A handshake message that does not decrypt or authenticate."""


@attrs.frozen(slots=True, repr=False)
class TransportKeys:
    send: bytes
    receive: bytes

    def __repr__(self) -> str:
        return "TransportKeys(<secret>)"


def tai64n(unix_time: float) -> bytes:
    seconds = int(unix_time)
    nanos = int((unix_time - seconds) * 1e9)
    return struct.pack(">QI", _TAI64_EPOCH + seconds, nanos)


def _connection(initiator: bool, static_private: bytes, ephemeral_private: bytes,
                remote_static: bytes | None = None) -> NoiseConnection:
    conn = NoiseConnection.from_name(PROTOCOL_NAME)
    if initiator:
        conn.set_as_initiator()
    else:
        conn.set_as_responder()
    conn.set_keypair_from_private_bytes(Keypair.STATIC, static_private)
    conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral_private)
    if remote_static is not None:
        conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, remote_static)
    conn.set_psks(psk=ZERO_PSK)
    conn.set_prologue(PROLOGUE)
    # We inject the ephemeral key so the core stays deterministic under test;
    # noiseprotocol warns about that on every handshake.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        conn.start_handshake()
    return conn


def _transport_keys(conn: NoiseConnection) -> TransportKeys:
    proto = conn.noise_protocol
    return TransportKeys(send=proto.cipher_state_encrypt.k, receive=proto.cipher_state_decrypt.k)


class InitiatorHandshake:
    """One handshake we started: message 1 out, message 2 in."""

    def __init__(self, static_private: bytes, remote_static: bytes, ephemeral_private: bytes
                 ) -> None:
        self._conn = _connection(True, static_private, ephemeral_private, remote_static)

    def write_initiation(self, timestamp: bytes) -> bytes:
        return bytes(self._conn.write_message(timestamp))

    def read_response(self, noise: bytes) -> TransportKeys:
        try:
            payload = self._conn.read_message(noise)
        except (NoiseInvalidMessage, InvalidTag, ValueError) as exc:
            raise HandshakeFailed("response does not decrypt") from exc
        if payload or not self._conn.handshake_finished:
            raise HandshakeFailed("response carries an unexpected payload")
        return _transport_keys(self._conn)


@attrs.frozen(slots=True)
class InitiationContents:
    initiator_static: bytes
    timestamp: bytes


class ResponderHandshake:
    """One handshake a peer started: message 1 in, message 2 out."""

    def __init__(self, static_private: bytes, ephemeral_private: bytes) -> None:
        self._conn = _connection(False, static_private, ephemeral_private)

    def read_initiation(self, noise: bytes) -> InitiationContents:
        try:
            payload = bytes(self._conn.read_message(noise))
        except (NoiseInvalidMessage, InvalidTag, ValueError) as exc:
            raise HandshakeFailed("initiation does not decrypt") from exc
        if len(payload) != TIMESTAMP_SIZE:
            raise HandshakeFailed(f"initiation timestamp of {len(payload)} bytes")
        # Must be read now: finishing the handshake discards the handshake state.
        remote = self._conn.noise_protocol.handshake_state.rs.public_bytes
        return InitiationContents(initiator_static=remote, timestamp=payload)

    def write_response(self) -> tuple[bytes, TransportKeys]:
        noise = bytes(self._conn.write_message(b""))
        return noise, _transport_keys(self._conn)
