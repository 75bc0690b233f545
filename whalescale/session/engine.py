"""The sans-I/O WireGuard engine: every peer of one node, no sockets, no clocks.

Theory of operation (aioquic's shape; the node, node/node.py, is its one user):
- `receive_datagrams(batch, now)` takes UDP datagrams and returns those that are
  not WireGuard's (wire/port.py: bootstrap, relay-tagged) for NAT traversal;
  `send_packets(packets, now)` takes the IP packets read from the TUN.
- The engine appends what must go out to `outbox` (datagram, address, local
  address or None for the default socket) and what must reach the TUN to
  `inbox`; the node drains both lists.
- Control messages inside sessions go through one table, kind -> handler: the
  session's own kinds (PING, multipath's path kinds) are registered here, the
  node registers the others (`handle_control`).
- `next_deadline()` is the one absolute time `handle_timer(now)` is due.
  `events` explain what happened.
- Randomness (indices, ephemeral keys, jitter) comes from `random_bytes`;
  the TAI64N timestamp is `now + wall_offset`, so tests are deterministic.

Every datagram that is not processed is counted in `drops` under a reason;
nothing from the network raises out of `receive_datagrams`. Pre-handshake
messages pass a per-source token bucket and mac1; under load they must also
carry a valid mac2, or they get a cookie reply instead of DH work.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from collections.abc import Callable, Iterable

import attrs

from ..multipath.link import TRAILER_MARKER, TRAILER_SIZE
from ..wire import control, port
from ..wire import messages as wire
from . import events
from .cookie import CookieChecker
from .handshake import HandshakeFailed, ResponderHandshake, tai64n
from .keypair import Keypair
from .peer import Peer
from .ratelimit import TokenBuckets
from .timers import MIN_INITIATION_INTERVAL_S, REJECT_AFTER_S, REKEY_JITTER_MAX_S

Addr = tuple[str, int]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# A control message from a peer: (peer, kind, body, source address, our local address
# or None for the default socket, now).
ControlHandler = Callable[[Peer, control.Kind, bytes, Addr, Addr | None, float], None]

_PATH_KINDS = (control.Kind.PATH_ANNOUNCE, control.Kind.PATH_ANNOUNCE_BACKUP,
               control.Kind.PATH_PROBE, control.Kind.PATH_PROBE_REPLY,
               control.Kind.MP_HEARTBEAT, control.Kind.MP_FEEDBACK)
_TRANSPORT_HEADER = wire.TRANSPORT_HEADER
_TRANSPORT_PREFIX = bytes((wire.MessageType.TRANSPORT, 0, 0, 0))
# Implementation: above this many handshake messages a second we demand cookies.
UNDER_LOAD_HANDSHAKES_PER_S = 64


@attrs.frozen
class MultipathConfig:
    """Multipath with whalescale peers: our socket addresses (announced to them; empty:
    only the default socket), the scheduler and which addresses are backups."""

    local_addrs: tuple[Addr, ...] = ()
    scheduler: str = "wrr"
    backup_addrs: frozenset[Addr] = frozenset()  # those of local_addrs used only as backups


@attrs.define
class PeerChanges:
    added: list[str] = attrs.Factory(list)
    removed: list[str] = attrs.Factory(list)
    changed: list[str] = attrs.Factory(list)
    unchanged: list[str] = attrs.Factory(list)


@attrs.frozen(slots=True)
class PeerSpec:
    """What the engine needs to know of a peer; built from the mesh TOML."""

    name: str
    static_public: bytes  # X25519
    allowed_ips: tuple[IPNetwork, ...]
    endpoints: tuple[Addr, ...] = ()
    keepalive_s: float = 0.0
    # A whalescale node's ID (its Ed25519 key: gossip, traversal and the LKG cache name
    # peers by it; control messages and multipath are for these only); None: a vanilla
    # WireGuard peer.
    node_id: bytes | None = None
    anchor: bool = False

    @property
    def whalescale(self) -> bool:
        return self.node_id is not None


class Engine:
    def __init__(
        self,
        static_private: bytes,
        static_public: bytes,
        peers: Iterable[PeerSpec],
        *,
        random_bytes: Callable[[int], bytes],
        wall_offset: float,
        mtu: int = 1420,
        under_load_per_s: int = UNDER_LOAD_HANDSHAKES_PER_S,
        multipath: MultipathConfig | None = None,
    ) -> None:
        self.multipath = multipath
        self.index_tag = random_bytes(1)[0]  # the top byte of every receiver index of ours
        self.gone_locals: frozenset[Addr] = frozenset()
        self.static_private = static_private
        self.static_public = static_public
        self.random_bytes = random_bytes
        self.mtu = mtu
        self._wall_offset = wall_offset
        self._last_tai64n = b""
        self._cookies = CookieChecker(static_public, random_bytes)
        self._buckets = TokenBuckets()
        self._under_load_per_s = under_load_per_s
        self._load_window_start = float("-inf")
        self._load_count = 0
        self.outbox: list[tuple[bytes, Addr, Addr | None]] = []
        self.inbox: list[bytes] = []
        self.events: list[events.Event] = []
        self.drops: Counter[str] = Counter()
        self.handshake_outcomes: Counter[str] = Counter()  # completed, timed_out
        self.cookie_replies: Counter[str] = Counter()  # sent, accepted: how often load shed
        self._pending_handshakes: dict[int, Peer] = {}  # our initiations, by sender index
        self._control: dict[control.Kind, ControlHandler] = {
            control.Kind.PING: self._answer_ping,
            **dict.fromkeys(_PATH_KINDS, _path_message)}
        self._keypairs: dict[int, tuple[Keypair, Peer]] = {}
        self.peers: dict[bytes, Peer] = {}
        self._hosts: dict[bytes, Peer] = {}  # packed host address -> peer
        self._networks: list[tuple[IPNetwork, Peer]] = []
        self._by_node_id: dict[bytes, Peer] = {}
        for spec in peers:
            self.add_peer(spec)

    # ----- configuration -------------------------------------------------

    def add_peer(self, spec: PeerSpec) -> Peer:
        if spec.static_public in self.peers:
            raise ValueError(f"peer {spec.name}: static key already present")
        peer = Peer(spec, self)
        self.peers[spec.static_public] = peer
        self._reindex()
        return peer

    def set_gone_locals(self, gone: frozenset[Addr], now: float) -> None:
        """Our multipath addresses whose interface is down or lost them (the shell's
        netlink view): every whalescale peer's paths from them fail now."""
        self.gone_locals = gone
        for peer in self.peers.values():
            peer.set_gone_locals(gone, now)

    def update_peers(self, specs: Iterable[PeerSpec]) -> PeerChanges:
        """Converge on `specs` (a reloaded mesh): unchanged peers keep their sessions,
        changed ones keep them too and take the new settings, removed ones are wiped."""
        wanted = {spec.static_public: spec for spec in specs}
        changes = PeerChanges()
        for key in [k for k in self.peers if k not in wanted]:
            peer = self.peers.pop(key)
            peer.forget()
            changes.removed.append(peer.name)
        for key, spec in wanted.items():
            peer = self.peers.get(key)
            if peer is None:
                self.peers[key] = Peer(spec, self)
                changes.added.append(spec.name)
            elif peer.spec != spec:
                peer.reconfigure(spec)
                changes.changed.append(spec.name)
            else:
                changes.unchanged.append(spec.name)
        self._reindex()
        return changes

    def _reindex(self) -> None:
        """The peers by node ID, and the cryptokey routing table."""
        self._by_node_id = {p.spec.node_id: p for p in self.peers.values()
                            if p.spec.node_id is not None}
        self._hosts = {}
        self._networks = []
        for peer in self.peers.values():
            for net in peer.spec.allowed_ips:
                if net.num_addresses == 1:
                    self._hosts[net.network_address.packed] = peer
                else:
                    self._networks.append((net, peer))
        # longest prefix first: an exit node's default networks must not take a subnet
        self._networks.sort(key=lambda entry: -entry[0].prefixlen)

    @property
    def node_ids(self) -> list[bytes]:
        """The node IDs of the whalescale peers."""
        return list(self._by_node_id)

    def peer_by_id(self, node_id: bytes) -> Peer | None:
        return self._by_node_id.get(node_id)

    def peer_named(self, name: str) -> Peer | None:
        """The peer the mesh file calls `name` (events and commands name peers)."""
        return next((p for p in self.peers.values() if p.name == name), None)

    def peer_for_address(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address
                         ) -> Peer | None:
        """The peer whose allowed IPs hold `address` (`whalescale ping ADDRESS`)."""
        return self._owner(address.packed)

    def set_wall_offset(self, wall_offset: float) -> None:
        self._wall_offset = wall_offset

    def start(self, now: float) -> None:
        """Handshake now with every peer that has persistent keepalive and an endpoint,
        as WireGuard does when such a peer is configured."""
        for peer in self.peers.values():
            if peer.endpoint is not None and peer.spec.keepalive_s:
                peer.initiate(now, retry=False, reason="start-up, persistent keepalive")

    # ----- services for peers ---------------------------------------------

    def emit(self, datagram: bytes, addr: Addr) -> None:
        self.outbox.append((datagram, addr, None))

    def event(self, event: events.Event) -> None:
        self.events.append(event)

    def jitter(self) -> float:
        return int.from_bytes(self.random_bytes(2), "little") % 1000 / 1000 * REKEY_JITTER_MAX_S

    def tai64n(self, now: float) -> bytes:
        stamp = tai64n(now + self._wall_offset)
        # A responder ignores timestamps that do not increase (whitepaper §5.1).
        if stamp <= self._last_tai64n:
            seconds, nanos = struct.unpack(">QI", self._last_tai64n)
            stamp = struct.pack(">QI", seconds, nanos + 1)
        self._last_tai64n = stamp
        return stamp

    def _new_index(self) -> int:
        """A random receiver index whose top byte is `index_tag`: the peer sees an opaque
        number, and the shell can drop transport data with another tag in the kernel
        (agent/steering.py) before a flood of random indices costs any Python."""
        while True:
            index = int.from_bytes(self.random_bytes(3), "little") | self.index_tag << 24
            if index not in self._pending_handshakes and index not in self._keypairs:
                return index

    def register_handshake(self, peer: Peer) -> int:
        index = self._new_index()
        self._pending_handshakes[index] = peer
        return index

    def forget_handshake(self, index: int) -> None:
        self._pending_handshakes.pop(index, None)

    def register_keypair(self, kp: Keypair, peer: Peer) -> None:
        self._keypairs[kp.local_index] = (kp, peer)

    def forget_keypair(self, kp: Keypair | None) -> None:
        if kp is not None:
            self._keypairs.pop(kp.local_index, None)

    @staticmethod
    def initiation_body(sender: int, noise: bytes) -> bytes:
        return wire.build_initiation_body(sender, noise)

    # ----- from the TUN ----------------------------------------------------

    def route(self, packet: bytes) -> Peer | None:
        """Cryptokey routing: the peer that owns the packet's destination address."""
        version = packet[0] >> 4 if packet else 0
        if version == 4 and len(packet) >= 20:
            return self._owner(packet[16:20])
        if version == 6 and len(packet) >= 40:
            return self._owner(packet[24:40])
        return None

    def _owner(self, packed: bytes) -> Peer | None:
        peer = self._hosts.get(packed)
        if peer is None and self._networks:
            address = ipaddress.ip_address(packed)
            peer = next((p for net, p in self._networks if address in net), None)
        return peer

    def send_packets(self, packets: list[bytes], now: float) -> None:
        """Route packets read from the TUN; consecutive packets to one peer go as a batch."""
        run_peer: Peer | None = None
        run: list[bytes] = []
        for packet in packets:
            peer = self.route(packet)
            if peer is None:
                self.drops["no_route"] += 1
                continue
            if peer is not run_peer:
                if run_peer is not None:
                    run_peer.send(run, now)
                run_peer, run = peer, []
            run.append(packet)
        if run_peer is not None:
            run_peer.send(run, now)

    # ----- from the network --------------------------------------------------

    def receive_datagrams(self, datagrams: list[tuple[bytes, Addr]], now: float,
                          local: Addr | None = None) -> list[tuple[bytes, Addr]]:
        """Process a batch of UDP datagrams; returns those that are not WireGuard's.

        Transport messages, nearly all traffic, take the inlined path below; the
        per-peer bookkeeping (timers, roaming, key confirmation) runs once per run
        of datagrams on one keypair from one address, not once per datagram.
        """
        keypairs, inbox, drops = self._keypairs, self.inbox, self.drops
        owner = self._owner
        others: list[tuple[bytes, Addr]] = []
        run: _Run | None = None
        for data, addr in datagrams:
            if len(data) < wire.TRANSPORT_MIN_SIZE or data[:4] != _TRANSPORT_PREFIX:
                if run is not None:
                    run.flush(now)
                    run = None
                if port.protocol_of(data) is port.Protocol.WIREGUARD:
                    self._receive_handshake(data, addr, now)
                else:
                    others.append((data, addr))
                continue
            _, receiver, counter = _TRANSPORT_HEADER.unpack_from(data)
            entry = keypairs.get(receiver)
            if entry is None:
                drops["unknown_index"] += 1
                continue
            kp, peer = entry
            if now - kp.born >= REJECT_AFTER_S:
                drops["expired_keys"] += 1
                continue
            plain = kp.open(data, counter)
            if plain is None:
                drops["bad_tag_or_replay"] += 1
                continue
            if run is None or run.kp is not kp or run.addr != addr:
                if run is not None:
                    run.flush(now)
                run = _Run(kp, peer, addr)
            run.size += len(data)
            run.packets += 1
            if not plain:
                continue  # keepalive
            run.data = True
            if plain[0] == control.MARKER:
                self._receive_control(peer, plain, addr, local, now)
                continue
            packet = _trim(plain)
            if packet is None:
                drops["bad_inner_packet"] += 1
            elif owner(packet[12:16] if packet[0] >> 4 == 4 else packet[8:24]) is not peer:
                drops["source_not_allowed"] += 1
            elif peer.mp is not None and len(plain) >= len(packet) + TRAILER_SIZE \
                    and plain[len(packet)] == TRAILER_MARKER:
                inbox.extend(peer.mp.on_data(
                    packet, plain[len(packet) : len(packet) + TRAILER_SIZE], now))
            else:
                inbox.append(packet)
        if run is not None:
            run.flush(now)
        return others

    def _receive_control(self, peer: Peer, plain: bytes, addr: Addr, local: Addr | None,
                         now: float) -> None:
        if not peer.spec.whalescale:
            self.drops["control_from_vanilla_peer"] += 1
            return
        try:
            kind, body = control.decode(plain)
        except control.MalformedControl:
            self.drops["malformed_control"] += 1
            return
        handler = self._control.get(kind)
        if handler is None:
            self.drops["unhandled_control"] += 1
            return
        handler(peer, kind, body, addr, local, now)

    def handle_control(self, kind: control.Kind, handler: ControlHandler) -> None:
        """Control messages of `kind` go to `handler` (the node's, for its cores)."""
        self._control[kind] = handler

    def _answer_ping(self, peer: Peer, kind: control.Kind, body: bytes, addr: Addr,
                     local: Addr | None, now: float) -> None:
        """Answered here, inside the session (on the path it came by)."""
        if len(body) <= control.MAX_PING_BODY:
            self.send_control(peer, control.Kind.PONG, body, now)

    def send_control(self, peer: Peer, kind: control.Kind, body: bytes, now: float) -> None:
        """A whalescale message to a whalescale peer, inside its session."""
        if not peer.spec.whalescale:
            raise ValueError(f"{peer.name} is a vanilla WireGuard peer: no control messages")
        peer.send([control.encode(kind, body)], now, data=False)

    def deliver(self, packets: list[bytes]) -> None:
        """Packets a peer's reorder buffer released on a timer (sources checked on entry)."""
        self.inbox.extend(packets)

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> list[tuple[bytes, Addr]]:
        return self.receive_datagrams([(data, addr)], now)

    def _receive_handshake(self, data: bytes, addr: Addr, now: float) -> None:
        try:
            kind = wire.message_type(data)
            if kind is wire.MessageType.INITIATION:
                self._receive_initiation(wire.parse_initiation(data), addr, now)
            elif kind is wire.MessageType.RESPONSE:
                self._receive_response(wire.parse_response(data), addr, now)
            elif kind is wire.MessageType.COOKIE_REPLY:
                self._receive_cookie_reply(wire.parse_cookie_reply(data), now)
            else:
                raise wire.MalformedMessage("transport message too short")
        except wire.MalformedMessage:
            self.drops["malformed"] += 1

    def _handshake_admitted(self, raw: bytes, mac1_offset: int, addr: Addr, now: float
                            ) -> bool:
        """Token bucket, mac1, and under load mac2: the cheap gates before DH."""
        if not self._buckets.take(addr[0], now):
            self.drops["rate_limited"] += 1
            return False
        if not self._cookies.mac1_ok(raw, mac1_offset):
            self.drops["bad_mac1"] += 1
            return False
        if self._under_load(now) and not self._cookies.mac2_ok(raw, mac1_offset, addr, now):
            (receiver,) = struct.unpack_from("<I", raw, 4)
            nonce, sealed = self._cookies.make_reply(raw, mac1_offset, addr, now)
            self.emit(wire.build_cookie_reply(receiver, nonce, sealed), addr)
            self.cookie_replies["sent"] += 1  # counted, not an event: a flood sends many
            self.drops["cookie_required"] += 1
            return False
        return True

    def _under_load(self, now: float) -> bool:
        if now - self._load_window_start >= 1.0:
            self._load_window_start = now
            self._load_count = 0
        self._load_count += 1
        return self._load_count > self._under_load_per_s

    def _receive_initiation(self, msg: wire.Initiation, addr: Addr, now: float) -> None:
        if not self._handshake_admitted(msg.raw, wire.INITIATION_MAC1_OFFSET, addr, now):
            return
        responder = ResponderHandshake(self.static_private, self.random_bytes(32))
        try:
            contents = responder.read_initiation(msg.noise)
        except HandshakeFailed:
            self.drops["bad_initiation"] += 1
            return
        peer = self.peers.get(contents.initiator_static)
        if peer is None:
            # A valid initiation from a key outside the mesh: no answer at all.
            self.drops["unknown_peer"] += 1
            return
        if contents.timestamp <= peer.last_timestamp:
            self.drops["replayed_initiation"] += 1
            return
        if now - peer.last_initiation_consumed < MIN_INITIATION_INTERVAL_S:
            self.drops["initiation_flood"] += 1
            return
        peer.last_timestamp = contents.timestamp
        peer.last_initiation_consumed = now
        noise, keys = responder.write_response()
        index = self._new_index()
        kp = Keypair(keys, local_index=index, remote_index=msg.sender, initiator=False, born=now)
        body = wire.build_response_body(index, msg.sender, noise)
        self.emit(peer.cookies.seal(body, now), addr)
        peer.complete_as_responder(kp, addr, now)

    def _receive_response(self, msg: wire.Response, addr: Addr, now: float) -> None:
        if not self._handshake_admitted(msg.raw, wire.RESPONSE_MAC1_OFFSET, addr, now):
            return
        peer = self._pending_handshakes.get(msg.receiver)
        if peer is None or peer.handshake is None:
            self.drops["unknown_index"] += 1
            return
        try:
            keys = peer.handshake.read_response(msg.noise)
        except HandshakeFailed:
            self.drops["bad_response"] += 1
            return
        del self._pending_handshakes[msg.receiver]
        peer.complete_as_initiator(keys, msg.sender, addr, now)

    def _receive_cookie_reply(self, msg: wire.CookieReply, now: float) -> None:
        peer = self._pending_handshakes.get(msg.receiver)
        if peer is None or not peer.cookies.consume_reply(msg.nonce, msg.encrypted_cookie, now):
            self.drops["bad_cookie_reply"] += 1
            return
        self.cookie_replies["accepted"] += 1
        peer.cookie_arrived(now)

    # ----- time -------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return min((d for p in self.peers.values() if (d := p.next_deadline()) is not None),
                   default=None)

    def handle_timer(self, now: float) -> None:
        for peer in self.peers.values():
            deadline = peer.next_deadline()
            if deadline is not None and deadline <= now:
                peer.on_timer(now)


class _Run:
    """Consecutive authenticated datagrams on one keypair from one address."""

    __slots__ = ("addr", "data", "kp", "packets", "peer", "size")

    def __init__(self, kp: Keypair, peer: Peer, addr: Addr) -> None:
        self.kp, self.peer, self.addr = kp, peer, addr
        self.size = 0
        self.packets = 0
        self.data = False

    def flush(self, now: float) -> None:
        self.peer.received(self.kp, self.addr, self.size, self.packets, not self.data, now)


def _path_message(peer: Peer, kind: control.Kind, body: bytes, addr: Addr,
                  local: Addr | None, now: float) -> None:
    peer.path_message(kind, body, local, addr, now)


def _trim(plain: bytes) -> bytes | None:
    """Drop WireGuard's padding using the inner IP header's own length."""
    version = plain[0] >> 4
    if version == 4 and len(plain) >= 20:
        length = int.from_bytes(plain[2:4], "big")
    elif version == 6 and len(plain) >= 40:
        length = 40 + int.from_bytes(plain[4:6], "big")
    else:
        return None
    if length > len(plain) or length < 20:
        return None
    return plain if length == len(plain) else plain[:length]
