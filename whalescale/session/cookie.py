"""mac1, mac2 and cookie replies (whitepaper §5.3, §5.4.7).

mac1 proves the sender knows our static public key and is always checked, so
a scanner that does not know it costs us one BLAKE2s. Under load we also
demand mac2, keyed with a cookie bound to the sender's IP and port: a peer
must have received our cookie reply at that address, which stops spoofed
floods from reaching the expensive Diffie-Hellman work.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from nacl import bindings, exceptions

from ..wire.messages import MAC_SIZE

LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"
# Specification: cookies and the responder's secret live two minutes.
COOKIE_REFRESH_S = 120.0
_ZERO_MAC = bytes(MAC_SIZE)


def _hash(data: bytes) -> bytes:
    return hashlib.blake2s(data).digest()


def _mac(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, digest_size=MAC_SIZE, key=key).digest()


def mac1_key(static_public: bytes) -> bytes:
    return _hash(LABEL_MAC1 + static_public)


def cookie_key(static_public: bytes) -> bytes:
    return _hash(LABEL_COOKIE + static_public)


def source_bytes(addr: tuple[str, int]) -> bytes:
    return f"{addr[0]}|{addr[1]}".encode()


class CookieChecker:
    """Our side as the receiver of handshake messages: checks macs, makes cookies."""

    def __init__(self, own_static_public: bytes, random_bytes: Callable[[int], bytes]) -> None:
        self._mac1_key = mac1_key(own_static_public)
        self._cookie_key = cookie_key(own_static_public)
        self._random_bytes = random_bytes
        self._secret = b""
        self._secret_born = float("-inf")
        # the last source's cookie: under load a mac2 check that fails is followed by a
        # reply to the same source, which would otherwise compute it again
        self._last: tuple[tuple[str, int], bytes] | None = None

    def mac1_ok(self, message: bytes, mac1_offset: int) -> bool:
        body = message[:mac1_offset]
        mac1 = message[mac1_offset : mac1_offset + MAC_SIZE]
        return hmac.compare_digest(_mac(self._mac1_key, body), mac1)

    def mac2_ok(self, message: bytes, mac1_offset: int, addr: tuple[str, int], now: float) -> bool:
        mac2_offset = mac1_offset + MAC_SIZE
        expected = _mac(self._cookie(addr, now), message[:mac2_offset])
        return hmac.compare_digest(expected, message[mac2_offset : mac2_offset + MAC_SIZE])

    def make_reply(self, message: bytes, mac1_offset: int, addr: tuple[str, int], now: float
                   ) -> tuple[bytes, bytes]:
        """(nonce, encrypted cookie) for a cookie reply to `message` from `addr`."""
        nonce = self._random_bytes(24)
        mac1 = message[mac1_offset : mac1_offset + MAC_SIZE]
        sealed = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            self._cookie(addr, now), mac1, nonce, self._cookie_key
        )
        return nonce, sealed

    def _cookie(self, addr: tuple[str, int], now: float) -> bytes:
        if now - self._secret_born >= COOKIE_REFRESH_S:
            self._secret = self._random_bytes(32)
            self._secret_born = now
            self._last = None
        if self._last is None or self._last[0] != addr:
            self._last = (addr, _mac(self._secret, source_bytes(addr)))
        return self._last[1]


class CookieGenerator:
    """Our side as the sender of handshake messages to one peer: adds mac1/mac2."""

    def __init__(self, peer_static_public: bytes) -> None:
        self._mac1_key = mac1_key(peer_static_public)
        self._cookie_key = cookie_key(peer_static_public)
        self._cookie = b""
        self._cookie_born = float("-inf")
        self._last_mac1 = b""

    def seal(self, body: bytes, now: float) -> bytes:
        """Append mac1 and mac2 to a handshake message body."""
        mac1 = _mac(self._mac1_key, body)
        self._last_mac1 = mac1
        if self._cookie and now - self._cookie_born < COOKIE_REFRESH_S:
            mac2 = _mac(self._cookie, body + mac1)
        else:
            mac2 = _ZERO_MAC
        return body + mac1 + mac2

    def consume_reply(self, nonce: bytes, encrypted_cookie: bytes, now: float) -> bool:
        """Take a cookie reply; False when it does not answer our last message."""
        if not self._last_mac1:
            return False
        try:
            cookie = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                encrypted_cookie, self._last_mac1, nonce, self._cookie_key
            )
        except exceptions.CryptoError:
            return False
        self._cookie = cookie
        self._cookie_born = now
        return True
