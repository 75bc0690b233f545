"""Transport keys of one completed handshake: seal and open messages (whitepaper §5.4.6).

The nonce is WireGuard's: four zero bytes and the 64-bit little-endian
counter. Plaintext is padded to a multiple of 16 bytes (never beyond the
MTU); the receiver trims it back by the inner IP header's length.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..wire.messages import TRANSPORT_HEADER, TRANSPORT_HEADER_SIZE, MessageType
from .handshake import TransportKeys
from .replay import ReplayWindow

_NONCE = struct.Struct("<4xQ")
_HEADER = TRANSPORT_HEADER
_TRANSPORT = int(MessageType.TRANSPORT)
_PADDING = [b"\0" * n for n in range(16)]


class Keypair:
    __slots__ = (
        "_open", "_seal", "born", "initiator", "local_index", "remote_index",
        "replay", "send_counter",
    )

    def __init__(self, keys: TransportKeys, *, local_index: int, remote_index: int,
                 initiator: bool, born: float) -> None:
        self._seal = ChaCha20Poly1305(keys.send).encrypt
        self._open = ChaCha20Poly1305(keys.receive).decrypt
        self.local_index = local_index
        self.remote_index = remote_index
        self.initiator = initiator
        self.born = born
        self.send_counter = 0
        self.replay = ReplayWindow()

    def seal(self, packets: list[bytes], mtu: int) -> list[bytes]:
        """One transport message per packet (an empty packet is a keepalive).

        The hot path: one call per batch, names bound to locals.
        """
        counter = self.send_counter
        encrypt, nonce, header = self._seal, _NONCE.pack, _HEADER.pack
        receiver, padding = self.remote_index, _PADDING
        out = []
        for packet in packets:
            pad = -len(packet) % 16
            if pad and len(packet) + pad <= mtu:
                packet = packet + padding[pad]
            out.append(header(_TRANSPORT, receiver, counter)
                       + encrypt(nonce(counter), packet, None))
            counter += 1
        self.send_counter = counter
        return out

    def open(self, datagram: bytes, counter: int) -> bytes | None:
        """The padded plaintext, or None when the tag or the counter is bad."""
        try:
            plain = self._open(_NONCE.pack(counter), datagram[TRANSPORT_HEADER_SIZE:], None)
        except InvalidTag:
            return None
        # Only authenticated counters may move the window (whitepaper §5.4.6).
        if not self.replay.accept(counter):
            return None
        return plain
