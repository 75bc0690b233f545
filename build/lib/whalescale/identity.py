"""Node identity: Ed25519 keys, their X25519 form for Noise, and fingerprints.

The node ID *is* the Ed25519 public key (design.txt §3.1). WireGuard's Noise_IK
needs X25519 statics, so both halves are derived from the Ed25519 key with the
birational map (libsodium's `crypto_sign_ed25519_*_to_curve25519`): a node has
one key, and a vanilla WireGuard peer is told the derived X25519 public key.

Key file format: the 32-byte Ed25519 seed, base64, one line (like `wg genkey`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

import attrs
from nacl import bindings, exceptions, signing

KEY_BYTES = 32
# Fingerprint: 160 bits of a personalised BLAKE2b, so collisions cost 2^80 work
# and matching one given key costs 2^160. See DESIGN.md "Fingerprints".
_FINGERPRINT_BYTES = 20
_FINGERPRINT_PERSON = b"whalescale-fp-v1"


class InvalidKey(ValueError):
    """A key that cannot be read or is not a valid key."""


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def decode_key(text: str, what: str = "key") -> bytes:
    """Decode a base64 32-byte key, or raise InvalidKey saying what was wrong."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidKey(f"{what} is not valid base64") from exc
    if len(raw) != KEY_BYTES:
        raise InvalidKey(f"{what} decodes to {len(raw)} bytes, expected {KEY_BYTES}")
    return raw


def x25519_public_from_ed25519(ed_public: bytes) -> bytes:
    """The X25519 public key a node uses in Noise; raises InvalidKey for a non-point."""
    try:
        return bindings.crypto_sign_ed25519_pk_to_curve25519(ed_public)
    except (exceptions.RuntimeError, exceptions.ValueError, exceptions.TypeError) as exc:
        raise InvalidKey("not a valid Ed25519 public key") from exc


def fingerprint(ed_public: bytes) -> str:
    """Short form for people: 32 base32 characters in groups of four."""
    digest = hashlib.blake2b(
        ed_public, digest_size=_FINGERPRINT_BYTES, person=_FINGERPRINT_PERSON
    ).digest()
    text = base64.b32encode(digest).decode("ascii").lower()
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


@attrs.frozen(repr=False)
class Identity:
    """A node's private identity. repr never shows the secret."""

    signing_key: signing.SigningKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        return cls(signing.SigningKey(seed))

    @property
    def public(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def public_b64(self) -> str:
        return b64(self.public)

    @property
    def x25519_private(self) -> bytes:
        sk64 = bytes(self.signing_key) + self.public
        return bindings.crypto_sign_ed25519_sk_to_curve25519(sk64)

    @property
    def x25519_public(self) -> bytes:
        return x25519_public_from_ed25519(self.public)

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message).signature

    def __repr__(self) -> str:
        return f"Identity({fingerprint(self.public)})"


def verify(ed_public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        signing.VerifyKey(ed_public).verify(message, signature)
    except (exceptions.BadSignatureError, exceptions.ValueError, exceptions.TypeError):
        return False
    return True


def write_key_file(path: Path, identity: Identity) -> None:
    """Create `path` with mode 0600; never overwrite an existing file."""
    seed = bytes(identity.signing_key)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(b64(seed) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_key_file(path: Path) -> Identity:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InvalidKey(f"{path}: cannot read key file: {exc.strerror}") from exc
    return Identity.from_seed(decode_key(text, f"{path}: private key"))
