"""Anchor relay, sans-I/O (design §2 "Encrypted Relay as Fallback", §3.6 "Anchor relay").

The anchor forwards the WireGuard datagrams of the two ends' own session: it
holds no key for that pair and never decrypts. How it knows where to forward:

- Channel tag: on the legs end -> anchor -> end, the three reserved bytes of a
  WireGuard message (type 1..4) carry a 24-bit channel ID (0 = not relayed).
  They are not covered by the transport AEAD; the handshake's mac1 does cover
  them, so the receiving end zeroes them (`untag`) before its engine sees the
  datagram, restoring WireGuard's exact bytes. Zero bytes added: the tunnel
  MTU stays what it is. A datagram with type 1..4 and non-zero reserved bytes
  is relayed; one starting 0x57 is bootstrap.py's.
- Channel setup, inside each end's encrypted session with the anchor (the
  control kind shared with punch_messages.py, types 16..; integers big-endian):

      RELAY_OPEN   16 | peer node ID (32)
      RELAY_READY  17 | peer node ID (32) | channel (u32, 1 .. 2**24 - 1)
      RELAY_CLOSE  18 | peer node ID (32)

  A sends RELAY_OPEN(B). The anchor passes the invitation on as RELAY_OPEN(A)
  to B; B answers RELAY_OPEN(A) if it agrees. Only when both ends asked
  (consent: nobody gets relayed traffic they did not ask for) does the anchor
  allocate a channel and send RELAY_READY to each. It forwards a tagged
  datagram only when it comes from one end's current session endpoint, to the
  other end's current session endpoint (looked up at each datagram, so it
  follows roaming). RELAY_CLOSE from either end, or idleness, ends it.

Anchor choice (`choose_anchor`): rendezvous hashing of the unordered pair over
the reachable anchors, so relays spread over anchors and both ends pick the
same one; losing an anchor moves only its own pairs.

Upgrade rule (the ends follow it, `RelayClient`): while relayed, retry a
direct punch with backoff (30 s doubling to 300 s, `RetryDirect` events); when
a handshake completes on a direct path, close the relay at once. (A relay kept
as a standby was tried: any authenticated packet still coming through it moves
the session back onto it, since WireGuard follows the latest source.)

The tag, and the alias address a relayed peer has in the session engine, are
wire/port.py's; `RelayClient.outgoing` and `incoming` translate between the alias
and (anchor endpoint, tag).
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections import Counter
from collections.abc import Callable, Iterable

import attrs

from ..session.ratelimit import TokenBuckets
from ..wire.port import MAX_CHANNEL, channel_of_alias, relay_alias, relay_channel, tag, untag
from .bootstrap import Addr

# ----- specification ---------------------------------------------------------
NODE_ID_BYTES = 32
_READY = struct.Struct(">B32sI")
_ANCHOR_PERSON = b"ws-relay-anchor"


class MessageType(enum.IntEnum):
    RELAY_OPEN = 16
    RELAY_READY = 17
    RELAY_CLOSE = 18


class MalformedRelay(ValueError):
    """A body that is not exactly one well-formed relay message."""


@attrs.frozen(slots=True)
class RelayOpen:
    peer: bytes


@attrs.frozen(slots=True)
class RelayReady:
    peer: bytes
    channel: int


@attrs.frozen(slots=True)
class RelayClose:
    peer: bytes


Message = RelayOpen | RelayReady | RelayClose


def encode(message: Message) -> bytes:
    if len(message.peer) != NODE_ID_BYTES:
        raise ValueError("node ID must be 32 bytes")
    match message:
        case RelayReady(peer, channel):
            if not 1 <= channel <= MAX_CHANNEL:
                raise ValueError(f"channel {channel}")
            return _READY.pack(MessageType.RELAY_READY, peer, channel)
        case RelayOpen(peer):
            return bytes((MessageType.RELAY_OPEN,)) + peer
        case RelayClose(peer):
            return bytes((MessageType.RELAY_CLOSE,)) + peer
    raise TypeError(message)  # pragma: no cover


def decode(body: bytes) -> Message:
    if not body:
        raise MalformedRelay("empty body")
    kind = body[0]
    if kind in (MessageType.RELAY_OPEN, MessageType.RELAY_CLOSE):
        if len(body) != 1 + NODE_ID_BYTES:
            raise MalformedRelay(f"{MessageType(kind).name} of {len(body)} bytes")
        cls = RelayOpen if kind == MessageType.RELAY_OPEN else RelayClose
        return cls(body[1:])
    if kind == MessageType.RELAY_READY:
        if len(body) != _READY.size:
            raise MalformedRelay(f"RELAY_READY of {len(body)} bytes")
        _, peer, channel = _READY.unpack(body)
        if not 1 <= channel <= MAX_CHANNEL:
            raise MalformedRelay(f"channel {channel}")
        return RelayReady(peer, channel)
    raise MalformedRelay(f"unknown relay message type {kind}")


def choose_anchor(a: bytes, b: bytes, reachable: Iterable[bytes]) -> bytes | None:
    """The anchor relaying the pair: highest rendezvous hash among the reachable anchors."""
    pair = b"".join(sorted((a, b)))

    def score(anchor: bytes) -> bytes:
        return hashlib.blake2b(pair + anchor, digest_size=16, person=_ANCHOR_PERSON).digest()

    candidates = [x for x in reachable if x not in (a, b)]
    return max(candidates, key=score, default=None)


# ----- the anchor's side -------------------------------------------------------------

@attrs.frozen(slots=True)
class RelayParams:
    max_channels: int = 256
    max_channels_per_node: int = 8
    half_open_s: float = 10.0  # the invited end has this long to agree
    idle_s: float = 180.0  # nothing forwarded for this long: the channel goes
    opens_per_s: float = 1.0  # RELAY_OPENs accepted from one node
    opens_burst: float = 5.0
    packets_per_s: float = 4000.0  # forwarded per channel (about 45 Mbit/s at 1400 bytes)
    packets_burst: float = 1000.0


@attrs.define
class _Channel:
    ends: tuple[bytes, bytes]  # sorted
    opened: set[bytes]
    created: float
    last_used: float
    channel: int = 0  # 0 until both ends opened


class RelayTable:
    """The anchor's relay: channel setup from control messages, forwarding decisions.

    `receive(from_id, body, now)` takes relay control bodies from authenticated
    sessions; `outbox` holds (to_id, body). `forward(datagram, source, now)`
    says where a tagged datagram goes (None: dropped, counted). Call
    `handle_timer(now)` at `next_deadline()`.
    """

    def __init__(self, members: Iterable[bytes], endpoint_of: Callable[[bytes], Addr | None],
                 *, random_bytes: Callable[[int], bytes],
                 params: RelayParams | None = None) -> None:
        self.members = frozenset(members)
        self._endpoint_of = endpoint_of
        self._random_bytes = random_bytes
        self.params = p = params or RelayParams()
        self._opens = TokenBuckets(p.opens_per_s, p.opens_burst)
        self._packets = TokenBuckets(p.packets_per_s, p.packets_burst)
        self._pairs: dict[tuple[bytes, bytes], _Channel] = {}
        self._channels: dict[int, _Channel] = {}
        self.outbox: list[tuple[bytes, bytes]] = []
        self.counters: Counter[str] = Counter()

    def channels(self) -> int:
        return len(self._channels)

    def receive(self, from_id: bytes, body: bytes, now: float) -> None:
        if from_id not in self.members:
            self.counters["not_a_member"] += 1
            return
        try:
            message = decode(body)
        except MalformedRelay:
            self.counters["malformed"] += 1
            return
        match message:
            case RelayOpen(peer):
                self._open(from_id, peer, now)
            case RelayClose(peer):
                pair = self._pairs.get(_pair(from_id, peer))
                if pair is not None:
                    self._close(pair, notify=[peer])
            case RelayReady():
                self.counters["unexpected_ready"] += 1

    def _open(self, from_id: bytes, peer: bytes, now: float) -> None:
        if not self._opens.take(from_id.hex(), now):
            self.counters["rate_limited"] += 1
            return
        if peer not in self.members or peer == from_id:
            self.counters["bad_peer"] += 1
            return
        if self._endpoint_of(peer) is None or self._endpoint_of(from_id) is None:
            self.counters["peer_unreachable"] += 1
            return
        entry = self._pairs.get(_pair(from_id, peer))
        if entry is None:
            if len(self._pairs) >= self.params.max_channels or any(
                    self._count(n) >= self.params.max_channels_per_node
                    for n in (from_id, peer)):
                self.counters["full"] += 1
                return
            entry = self._pairs[_pair(from_id, peer)] = _Channel(
                _pair(from_id, peer), set(), now, now)
        entry.opened.add(from_id)
        if entry.channel:  # already open: the end lost our READY
            self.outbox.append((from_id, encode(RelayReady(peer, entry.channel))))
            return
        if len(entry.opened) == 1:
            self.outbox.append((peer, encode(RelayOpen(from_id))))  # the invitation
            self.counters["invited"] += 1
            return
        entry.channel = self._new_channel()
        entry.last_used = now
        self._channels[entry.channel] = entry
        a, b = entry.ends
        self.outbox += [(a, encode(RelayReady(b, entry.channel))),
                        (b, encode(RelayReady(a, entry.channel)))]
        self.counters["opened"] += 1

    def _count(self, node: bytes) -> int:
        return sum(node in pair for pair in self._pairs)

    def _new_channel(self) -> int:
        while True:  # at most max_channels of 2**24 are taken: this ends at once
            channel = int.from_bytes(self._random_bytes(3), "big")
            if channel and channel not in self._channels:
                return channel

    def _close(self, entry: _Channel, notify: Iterable[bytes]) -> None:
        del self._pairs[entry.ends]
        self._channels.pop(entry.channel, None)
        a, b = entry.ends
        for node in notify:
            self.outbox.append((node, encode(RelayClose(b if node == a else a))))
        self.counters["closed"] += 1

    def forward(self, datagram: bytes, source: Addr, now: float) -> tuple[bytes, Addr] | None:
        entry = self._channels.get(relay_channel(datagram))
        if entry is None:
            self.counters["unknown_channel"] += 1
            return None
        a, b = entry.ends
        at_a, at_b = self._endpoint_of(a), self._endpoint_of(b)
        if source == at_a:
            dest = at_b
        elif source == at_b:
            dest = at_a
        else:
            self.counters["wrong_source"] += 1
            return None
        if dest is None:
            self.counters["peer_gone"] += 1
            return None
        if not self._packets.take(str(entry.channel), now):
            self.counters["rate_limited"] += 1
            return None
        entry.last_used = now
        self.counters["forwarded"] += 1
        return datagram, dest

    def next_deadline(self) -> float | None:
        return min((self._expiry(e) for e in self._pairs.values()), default=None)

    def _expiry(self, entry: _Channel) -> float:
        if entry.channel:
            return entry.last_used + self.params.idle_s
        return entry.created + self.params.half_open_s

    def handle_timer(self, now: float) -> None:
        for entry in list(self._pairs.values()):
            if now >= self._expiry(entry):
                self.counters["expired"] += 1
                self._close(entry, notify=entry.opened)


def _pair(x: bytes, y: bytes) -> tuple[bytes, bytes]:
    return (x, y) if x < y else (y, x)


# ----- the end's side -----------------------------------------------------------------

@attrs.frozen(slots=True)
class RelayUp:
    """Send to `peer` at `relay_alias(channel)` from now on (the engine's endpoint for it)."""

    peer: bytes
    anchor: bytes
    channel: int


@attrs.frozen(slots=True)
class RelayDown:
    peer: bytes


@attrs.frozen(slots=True)
class RetryDirect:
    """Time to try a direct path again (punch.Puncher.request)."""

    peer: bytes


RelayEvent = RelayUp | RelayDown | RetryDirect


class RelayState(enum.Enum):
    OPENING = "opening"
    RELAYED = "relayed"


@attrs.frozen(slots=True)
class ClientParams:
    open_timeout_s: float = 10.0
    retry_direct_first_s: float = 30.0
    retry_direct_max_s: float = 300.0


@attrs.define
class _Link:
    state: RelayState
    anchor: bytes
    deadline: float
    channel: int = 0
    retry_s: float = 0.0


class RelayClient:
    """One end's relays: opening, the tag translation, retries for a direct path.

    Local calls: `open(peer, anchor, now)`, `direct_path(peer)`, `close(peer)`;
    `receive(anchor, body, now)` for
    relay bodies from anchors' sessions; `accept(peer)` decides invitations.
    """

    def __init__(self, *, accept: Callable[[bytes], bool],
                 anchor_endpoint: Callable[[bytes], Addr | None],
                 params: ClientParams | None = None) -> None:
        self._accept = accept
        self._anchor_endpoint = anchor_endpoint
        self.params = params or ClientParams()
        self._links: dict[bytes, _Link] = {}  # bounded by the mesh's members
        self._by_channel: dict[int, bytes] = {}
        self.outbox: list[tuple[bytes, bytes]] = []
        self.events: list[RelayEvent] = []
        self.counters: Counter[str] = Counter()

    def state(self, peer: bytes) -> RelayState | None:
        link = self._links.get(peer)
        return link.state if link else None

    def open(self, peer: bytes, anchor: bytes, now: float) -> None:
        link = self._links.get(peer)
        if link is not None:
            if link.anchor == anchor:
                return
            # The pair's anchor is another now (both ends choose alike, from the anchors
            # they reach: one that was down when this link opened is up), or the peer
            # asks through another (an invitation): follow, or each end waits on its own
            # anchor for ever while the old channel leads to a peer that forgot it.
            self.counters["moved_anchor"] += 1
            self.close(peer)
        self._links[peer] = _Link(RelayState.OPENING, anchor, now + self.params.open_timeout_s)
        self.outbox.append((anchor, encode(RelayOpen(peer))))

    def receive(self, anchor: bytes, body: bytes, now: float) -> None:
        try:
            message = decode(body)
        except MalformedRelay:
            self.counters["malformed"] += 1
            return
        link = self._links.get(message.peer)
        match message:
            case RelayOpen(peer):  # an invitation
                if (link is not None and link.anchor == anchor) or not self._accept(peer):
                    self.counters["invitation_declined"] += 1
                    return
                self.open(peer, anchor, now)
            case RelayReady(peer, channel):
                if link is None or link.anchor != anchor or link.state != RelayState.OPENING:
                    self.counters["unexpected_ready"] += 1
                    return
                link.state, link.channel = RelayState.RELAYED, channel
                link.retry_s = self.params.retry_direct_first_s
                link.deadline = now + link.retry_s
                self._by_channel[channel] = peer
                self.events.append(RelayUp(peer, anchor, channel))
            case RelayClose(peer):
                if link is None or link.anchor != anchor:
                    self.counters["unexpected_close"] += 1
                    return
                self._drop(peer)

    def _drop(self, peer: bytes) -> None:
        link = self._links.pop(peer)
        self._by_channel.pop(link.channel, None)
        self.events.append(RelayDown(peer))

    def close(self, peer: bytes) -> None:
        link = self._links.get(peer)
        if link is not None:
            self.outbox.append((link.anchor, encode(RelayClose(peer))))
            self._drop(peer)

    def direct_path(self, peer: bytes) -> None:
        """A handshake completed on a direct path: the relay goes."""
        if peer in self._links:
            self.counters["upgraded"] += 1
            self.close(peer)

    def next_deadline(self) -> float | None:
        return min((link.deadline for link in self._links.values()), default=None)

    def handle_timer(self, now: float) -> None:
        for peer, link in list(self._links.items()):
            if now < link.deadline:
                continue
            match link.state:
                case RelayState.OPENING:
                    self.counters["open_timed_out"] += 1
                    self.close(peer)
                case RelayState.RELAYED:
                    self.events.append(RetryDirect(peer))
                    link.retry_s = min(link.retry_s * 2, self.params.retry_direct_max_s)
                    link.deadline = now + link.retry_s

    # ----- the tag translation, for the shell ------------------------------------------

    def outgoing(self, datagram: bytes, dest: Addr) -> tuple[bytes, Addr] | None:
        """What the engine sends to `dest`, as it goes on the wire (None: no such relay)."""
        channel = channel_of_alias(dest)
        if not channel:
            return datagram, dest
        peer = self._by_channel.get(channel)
        anchor_at = None if peer is None else self._anchor_endpoint(self._links[peer].anchor)
        if anchor_at is None:
            self.counters["no_relay"] += 1
            return None
        return tag(datagram, channel), anchor_at

    def incoming(self, datagram: bytes, source: Addr) -> tuple[bytes, Addr] | None:
        """A tagged datagram as the engine must see it (None: not from our relay)."""
        channel = relay_channel(datagram)
        peer = self._by_channel.get(channel)
        if peer is None or self._anchor_endpoint(self._links[peer].anchor) != source:
            self.counters["unknown_channel" if peer is None else "wrong_source"] += 1
            return None
        return untag(datagram), relay_alias(channel)
