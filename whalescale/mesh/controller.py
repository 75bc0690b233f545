"""The self-healing mesh on top of the session engine: neighbours, gossip, where peers are.

Theory of operation (sans-I/O, like the engine and the gossip node):
- The node (node/node.py) hands over what the engine reported (`engine_events`)
  and the GOSSIP control messages it received (`gossip_message`), and calls
  `after_batch(now)` after each batch: gossip payloads go out inside the
  sessions, and peers whose self-attested record changed learn new candidate
  endpoints (session/endpoints.py: a session heard from, or on a relay, stays).
- Our own record: `publish_self(endpoints, now)` when our addresses change.
- Persistence is the shell's: `cache_ops` lists what to write to the LKG cache
  (contacts and records, never a clock value: the shell stamps contacts).

Candidate endpoints of a peer, best first (design §3.6-3.8): its self-attested
gossip record (LAN, then IPv6, then IPv4), the mesh file's static endpoints,
the LKG cache's, then third-party observations (hints, advisory only). The
peer's handshake retries walk this list; an authenticated packet from
anywhere else moves the session there at once (passive acceptance).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import attrs

from ..session import events
from ..session.engine import Engine
from ..session.peer import Peer
from ..wire import control
from ..wire.port import channel_of_alias
from .gossip import GossipNode
from .records import EndpointRecord, GossipEndpoint, PathType

Addr = tuple[str, int]
_PATH_ORDER = {PathType.LAN: 0, PathType.IPV6: 1, PathType.IPV4: 2}


@attrs.frozen
class Contact:
    """An authenticated packet or handshake came from there."""

    peer_id: bytes
    host: str
    port: int
    path_type: PathType


@attrs.frozen
class StoredRecord:
    peer_id: bytes
    endpoints: tuple[tuple[str, int, PathType], ...]
    seq: int
    self_attested: bool


CacheOp = Contact | StoredRecord


def path_type_of(host: str) -> PathType:
    return PathType.IPV6 if ipaddress.ip_address(host).version == 6 else PathType.IPV4


def gossip_endpoint(addr: Addr) -> GossipEndpoint:
    return GossipEndpoint(addr[0], addr[1], path_type_of(addr[0]))


class MeshController:
    def __init__(self, engine: Engine, gossip: GossipNode,
                 cached: dict[bytes, list[Addr]] | None = None) -> None:
        """The engine's whalescale peers are the mesh's other nodes (PeerSpec.node_id);
        `cached` holds LKG cache endpoints by node ID."""
        self.engine = engine
        self.gossip = gossip
        self.cache_ops: list[CacheOp] = []
        self._cached: dict[bytes, list[Addr]] = dict(cached or {})
        self._applied_seq: dict[bytes, int] = {}
        self._hints_seen: dict[bytes, int] = {}
        self.set_nodes(now=None)

    def set_nodes(self, now: float | None) -> None:
        """The engine's peers are those of a (re)loaded mesh file (`now` None: at start)."""
        self.gossip.set_members(self.engine.node_ids)
        for node_id in self.engine.node_ids:
            self._refresh_candidates(node_id, now)

    def _peer(self, node_id: bytes) -> Peer | None:
        return self.engine.peer_by_id(node_id)

    def _node_id(self, peer_name: str) -> tuple[bytes, Peer] | None:
        peer = self.engine.peer_named(peer_name)
        node_id = None if peer is None else peer.spec.node_id
        return None if peer is None or node_id is None else (node_id, peer)

    # ----- from the engine ------------------------------------------------

    def engine_events(self, happened: Iterable[events.Event], now: float) -> None:
        neighbours_changed = False
        for event in happened:
            match event:
                case events.HandshakeCompleted(name, _, endpoint, _):
                    found = self._node_id(name)
                    if found is not None:
                        if not channel_of_alias(endpoint):
                            self._contact(found[0], endpoint)
                        neighbours_changed = True
                case events.EndpointChanged(name, _, new):
                    found = self._node_id(name)
                    # a relay alias (nat/relay.py) is no place to remember or gossip
                    if found is not None and not channel_of_alias(new):
                        self._contact(found[0], new)
                        # what we saw is a third party's observation: a hint for others
                        self.gossip.observe(found[0], gossip_endpoint(new), now)
                case events.SessionKeysZeroed() | events.HandshakeGaveUp():
                    neighbours_changed = True
        if neighbours_changed:
            self._update_neighbours(now)

    def _contact(self, node_id: bytes, addr: Addr) -> None:
        self.cache_ops.append(Contact(node_id, addr[0], addr[1], path_type_of(addr[0])))
        known = self._cached.setdefault(node_id, [])
        if addr in known:
            known.remove(addr)
        known.insert(0, addr)

    def _update_neighbours(self, now: float) -> None:
        self.gossip.set_neighbours(
            {p.spec.node_id for p in self.engine.peers.values()
             if p.spec.node_id is not None and p.current is not None}, now)

    def gossip_message(self, peer: Peer, body: bytes, now: float) -> None:
        node_id = peer.spec.node_id
        if node_id is None:
            return  # a vanilla peer cannot send these: the engine drops them first
        self.gossip.receive(node_id, body, now)

    # ----- our own record ---------------------------------------------------

    def publish_self(self, endpoints: list[Addr], now: float) -> EndpointRecord:
        """Sign our endpoints; after_batch hands the record to the cache (its seq is the
        shell's to keep), as it does when gossip republishes above a returned seq."""
        return self.gossip.publish_self([gossip_endpoint(a) for a in endpoints], now)

    # ----- after each batch -------------------------------------------------

    def after_batch(self, now: float) -> None:
        for node_id in (*self.engine.node_ids, self.gossip.id):  # ours: no peer, no hints
            record = self.gossip.current(node_id)
            hints = self.gossip.hints(node_id)
            if (record is not None and record.seq != self._applied_seq.get(node_id)) or \
                    len(hints) != self._hints_seen.get(node_id, 0):
                if record is not None and record.seq != self._applied_seq.get(node_id):
                    self._applied_seq[node_id] = record.seq
                    self._store(record)
                self._hints_seen[node_id] = len(hints)
                self._refresh_candidates(node_id, now)
        outbox, self.gossip.outbox = self.gossip.outbox, []
        for to_id, payload in outbox:
            peer = self._peer(to_id)
            if peer is not None:
                self.engine.send_control(peer, control.Kind.GOSSIP, payload, now)

    def _store(self, record: EndpointRecord) -> None:
        self.cache_ops.append(StoredRecord(
            record.peer_id, tuple((e.host, e.port, e.path_type) for e in record.endpoints),
            record.seq, record.self_attested))

    def record_seqs(self) -> dict[str, int]:
        """Peer name -> seq of its self-attested record we hold (for status)."""
        seqs = {}
        for peer in self.engine.peers.values():
            record = None if peer.spec.node_id is None else self.gossip.current(peer.spec.node_id)
            if record is not None:
                seqs[peer.name] = record.seq
        return seqs

    def candidates(self, node_id: bytes) -> list[Addr]:
        peer = self._peer(node_id)
        ordered: list[Addr] = []
        record = self.gossip.current(node_id)
        if record is not None:
            ordered += [(e.host, e.port) for e in
                        sorted(record.endpoints, key=lambda e: _PATH_ORDER[e.path_type])]
        if peer is not None:
            ordered += list(peer.spec.endpoints)
        ordered += self._cached.get(node_id, [])
        for hint in self.gossip.hints(node_id):
            ordered += [(e.host, e.port) for e in hint.endpoints]
        return list(dict.fromkeys(ordered))  # unique, first place kept

    def _refresh_candidates(self, node_id: bytes, now: float | None) -> None:
        peer = self._peer(node_id)
        if peer is None:
            return
        endpoints = self.candidates(node_id)
        if endpoints != peer.candidates.learned:
            peer.learn_endpoints(endpoints, now)
