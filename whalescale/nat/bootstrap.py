"""The pre-session bootstrap protocol: PATH_PROBE / PATH_PROBE_REPLY (design §3.4, §4.2).

A node learns the endpoint its NAT gives it (its "observed endpoint") by probing
anchors on their well-known UDP port, the same port WireGuard messages use.

Wire format (integers big-endian; no field is optional, every length exact):

    header       = 0x57 ('W') | version (1) | type (u8) | x (u8)
    PATH_PROBE   = header(type 1, x 0) | nonce (16) | zero padding (20)      40 bytes
    PATH_PROBE_REPLY = header(type 2, x = family 4|6) | nonce (16)
                       | port (u16, >= 1) | address (4 or 16)           26 or 38 bytes
    LAN_HELLO    = header(type 3, x 0) | nonce (16) | tag (16)
                   | zero padding (112)                                 148 bytes
    (legacy: the same without the padding, 36 bytes; still understood)

LAN_HELLO is LAN discovery: broadcast on each local IPv4 network, so two nodes
behind one router find each other without an anchor and without hairpin NAT. The
tag is BLAKE2s(node ID, key = nonce): a member of the mesh recognises the sender
by trying its members' IDs; anyone else sees random bytes, different every time.
A hello only makes the receiver send a WireGuard initiation to its source, which
authenticates the sender before anything else happens.

Demultiplexing the shared port: WireGuard's messages start with a type 1..4 and
three reserved bytes (zero, or a relay channel, see relay.py); ours start with
0x57, which WireGuard will never use as a type (wire/port.py tells them apart).

What a probe carries, and why (anti-patterns 3.8): a random nonce and nothing
else. The reply is about the address the datagram came from, not about who sent
it, so no node ID travels in the clear: an observer learns that an address
talks to an anchor (which the IP header tells anyway), not which node it is.
Authentication is Noise_IK's job, right after. The nonce binds a reply to its
probe (an off-path forger must guess 128 bits) and gives the RTT.

Amplification (design "Denial of service"): no answer is larger than what it
answers, so a spoofed source is reflected at most 1:1. A reply (<= 38 bytes) is
never larger than the probe (40 bytes); the responder also passes each source
through a token bucket (session/ratelimit.py). A LAN_HELLO is answered with a
WireGuard initiation (148 bytes), so it is padded to that size. Releases before
the padding send and accept only the 36-byte hello: a legacy hello is still
understood, but answered with a legacy hello (36 bytes) instead of an
initiation, which makes the old node send the initiation itself (lan.py).

Sans-I/O like session/engine.py: `Prober` (the client) and `Responder` (the
anchor) append (datagram, address) to `outbox`, take `now`, give a deadline;
anything malformed is counted in `counters` under a reason, never raised.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import struct
from collections import Counter
from collections.abc import Callable

import attrs

from ..session.ratelimit import TokenBuckets
from ..wire.messages import INITIATION_SIZE
from ..wire.port import BOOTSTRAP_MAGIC as MAGIC

Addr = tuple[str, int]

# ----- specification ---------------------------------------------------------
VERSION = 1
NONCE_BYTES = 16
TAG_BYTES = 16
_HEADER = struct.Struct(">BBBB")
PROBE_BYTES = _HEADER.size + NONCE_BYTES + 20  # padded so no reply is larger
_PORT = struct.Struct(">H")
MAX_REPLY_BYTES = _HEADER.size + NONCE_BYTES + _PORT.size + 16
assert MAX_REPLY_BYTES <= PROBE_BYTES
LEGACY_LAN_HELLO_BYTES = _HEADER.size + NONCE_BYTES + TAG_BYTES
LAN_HELLO_BYTES = INITIATION_SIZE  # padded to the initiation it may be answered with
MAX_BOOTSTRAP_BYTES = max(PROBE_BYTES, LAN_HELLO_BYTES)

# ----- implementation --------------------------------------------------------
PROBE_TIMEOUT_S = 2.0
MAX_PENDING = 256  # probes in flight; beyond it the oldest is forgotten


class MessageType(enum.IntEnum):
    PATH_PROBE = 1
    PATH_PROBE_REPLY = 2
    LAN_HELLO = 3


class MalformedBootstrap(ValueError):
    """A datagram that is not exactly one well-formed bootstrap message."""


@attrs.frozen(slots=True)
class PathProbe:
    nonce: bytes


@attrs.frozen(slots=True)
class PathProbeReply:
    nonce: bytes
    observed: Addr  # the source IP:port the replier saw


@attrs.frozen(slots=True)
class LanHello:
    nonce: bytes
    tag: bytes
    padded: bool = True  # False: a release before the padding sent it (36 bytes)

    def is_from(self, node_id: bytes) -> bool:
        return hmac.compare_digest(self.tag, lan_tag(node_id, self.nonce))


def lan_tag(node_id: bytes, nonce: bytes) -> bytes:
    return hashlib.blake2s(node_id, key=nonce, digest_size=TAG_BYTES,
                           person=b"ws-lan-h").digest()


Message = PathProbe | PathProbeReply | LanHello


# ----- addresses on the wire (also used by punch_messages.py) ----------------

def address_bytes(host: str) -> tuple[int, bytes]:
    """(family 4|6, packed address) of an IP literal."""
    ip = ipaddress.ip_address(host)
    return ip.version, ip.packed


def address_size(family: int) -> int:
    if family == 4:
        return 4
    if family == 6:
        return 16
    raise MalformedBootstrap(f"address family {family}")


def read_address(family: int, packed: bytes) -> str:
    ip = ipaddress.ip_address(packed)
    if ip.version != family:  # pragma: no cover - sizes already tie the two
        raise MalformedBootstrap("address family mismatch")
    return str(ip)


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise MalformedBootstrap(f"port {port}")
    return port


# ----- encode / decode ------------------------------------------------------

def encode_probe(probe: PathProbe) -> bytes:
    if len(probe.nonce) != NONCE_BYTES:
        raise ValueError("nonce must be 16 bytes")
    return (_HEADER.pack(MAGIC, VERSION, MessageType.PATH_PROBE, 0) + probe.nonce
            + bytes(PROBE_BYTES - _HEADER.size - NONCE_BYTES))


def encode_reply(reply: PathProbeReply) -> bytes:
    if len(reply.nonce) != NONCE_BYTES:
        raise ValueError("nonce must be 16 bytes")
    family, packed = address_bytes(reply.observed[0])
    return (_HEADER.pack(MAGIC, VERSION, MessageType.PATH_PROBE_REPLY, family) + reply.nonce
            + _PORT.pack(check_port(reply.observed[1])) + packed)


def encode_lan_hello(node_id: bytes, nonce: bytes, *, padded: bool = True) -> bytes:
    """`padded=False`: the legacy 36-byte form, only to answer a legacy hello."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError("nonce must be 16 bytes")
    hello = (_HEADER.pack(MAGIC, VERSION, MessageType.LAN_HELLO, 0) + nonce
             + lan_tag(node_id, nonce))
    return hello + bytes(LAN_HELLO_BYTES - len(hello)) if padded else hello


def decode(datagram: bytes) -> Message:
    if len(datagram) < _HEADER.size or len(datagram) > MAX_BOOTSTRAP_BYTES:
        raise MalformedBootstrap(f"datagram of {len(datagram)} bytes")
    magic, version, kind, x = _HEADER.unpack_from(datagram)
    if magic != MAGIC:
        raise MalformedBootstrap(f"magic {magic:#x}")
    if version != VERSION:
        raise MalformedBootstrap(f"version {version}")
    nonce = datagram[_HEADER.size : _HEADER.size + NONCE_BYTES]
    if kind == MessageType.PATH_PROBE:
        if x != 0 or len(datagram) != PROBE_BYTES:
            raise MalformedBootstrap("PATH_PROBE of the wrong shape")
        if any(datagram[_HEADER.size + NONCE_BYTES :]):
            raise MalformedBootstrap("PATH_PROBE padding is not zero")
        return PathProbe(nonce)
    if kind == MessageType.PATH_PROBE_REPLY:
        offset = _HEADER.size + NONCE_BYTES
        if len(datagram) != offset + _PORT.size + address_size(x):
            raise MalformedBootstrap("PATH_PROBE_REPLY of the wrong length")
        (port,) = _PORT.unpack_from(datagram, offset)
        host = read_address(x, datagram[offset + _PORT.size :])
        return PathProbeReply(nonce, (host, check_port(port)))
    if kind == MessageType.LAN_HELLO:
        if x != 0 or len(datagram) not in (LEGACY_LAN_HELLO_BYTES, LAN_HELLO_BYTES):
            raise MalformedBootstrap("LAN_HELLO of the wrong shape")
        if any(datagram[LEGACY_LAN_HELLO_BYTES:]):
            raise MalformedBootstrap("LAN_HELLO padding is not zero")
        return LanHello(nonce, datagram[_HEADER.size + NONCE_BYTES : LEGACY_LAN_HELLO_BYTES],
                        padded=len(datagram) == LAN_HELLO_BYTES)
    raise MalformedBootstrap(f"unknown type {kind}")


# ----- the anchor's side ------------------------------------------------------

class Responder:
    """Answers PATH_PROBEs with the source address they came from."""

    def __init__(self, buckets: TokenBuckets | None = None) -> None:
        self._buckets = buckets or TokenBuckets()
        self.outbox: list[tuple[bytes, Addr]] = []
        self.counters: Counter[str] = Counter()

    def receive(self, datagram: bytes, source: Addr, now: float) -> None:
        # The bucket comes first: a flood of garbage costs no parsing.
        if not self._buckets.take(source[0], now):
            self.counters["rate_limited"] += 1
            return
        try:
            message = decode(datagram)
        except MalformedBootstrap:
            self.counters["malformed"] += 1
            return
        if not isinstance(message, PathProbe):
            self.counters["unexpected_reply"] += 1
            return
        self.counters["answered"] += 1
        self.outbox.append((encode_reply(PathProbeReply(message.nonce, source)), source))


# ----- the prober's side -------------------------------------------------------

@attrs.frozen(slots=True)
class Observation:
    """Target `target` saw our socket `local` as `observed`."""

    local: Addr
    target: Addr
    observed: Addr
    rtt_s: float


@attrs.frozen(slots=True)
class ProbeTimedOut:
    local: Addr
    target: Addr


ProbeEvent = Observation | ProbeTimedOut


@attrs.frozen(slots=True)
class _Pending:
    local: Addr
    target: Addr
    sent_at: float


class Prober:
    """Sends PATH_PROBEs, matches replies by nonce, reports observations.

    `probe(local, targets, now)` queues one probe per target from the socket
    bound at `local`; the shell sends each (datagram, target) of `outbox` from
    that socket, hands back every bootstrap datagram it reads with
    `receive(datagram, source, local, now)`, and calls `handle_timer(now)` at
    `next_deadline()`. `events` holds Observations and ProbeTimedOuts.
    """

    def __init__(self, *, random_bytes: Callable[[int], bytes],
                 timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self._random_bytes = random_bytes
        self.timeout_s = timeout_s
        self._pending: dict[bytes, _Pending] = {}  # nonce -> probe; insertion = send order
        self.outbox: list[tuple[bytes, Addr]] = []
        self.events: list[ProbeEvent] = []
        self.counters: Counter[str] = Counter()

    def probe(self, local: Addr, targets: list[Addr], now: float) -> None:
        for target in targets:
            nonce = self._random_bytes(NONCE_BYTES)
            if len(self._pending) >= MAX_PENDING:
                oldest = next(iter(self._pending))
                gone = self._pending.pop(oldest)
                self.events.append(ProbeTimedOut(gone.local, gone.target))
                self.counters["pending_overflow"] += 1
            self._pending[nonce] = _Pending(local, target, now)
            self.outbox.append((encode_probe(PathProbe(nonce)), target))

    def receive(self, datagram: bytes, source: Addr, local: Addr, now: float) -> None:
        try:
            message = decode(datagram)
        except MalformedBootstrap:
            self.counters["malformed"] += 1
            return
        if not isinstance(message, PathProbeReply):
            self.counters["unexpected_probe"] += 1
            return
        pending = self._pending.get(message.nonce)
        if pending is None:
            self.counters["unknown_nonce"] += 1
            return
        if pending.target != source or pending.local != local:
            self.counters["wrong_path"] += 1  # keep waiting for the real one
            return
        del self._pending[message.nonce]
        self.counters["observed"] += 1
        self.events.append(Observation(local, source, message.observed, now - pending.sent_at))

    def next_deadline(self) -> float | None:
        if not self._pending:
            return None
        return min(p.sent_at for p in self._pending.values()) + self.timeout_s

    def handle_timer(self, now: float) -> None:
        for nonce, pending in list(self._pending.items()):
            if now >= pending.sent_at + self.timeout_s:
                del self._pending[nonce]
                self.counters["timed_out"] += 1
                self.events.append(ProbeTimedOut(pending.local, pending.target))
