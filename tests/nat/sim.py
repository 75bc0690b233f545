"""A fake internet for nat/traversal.py: real engines and traversal cores, simulated NATs.

Each node is a session Engine plus a Traversal, doing what the agent's shell does
with them (unclaimed datagrams, relay tags, TRAVERSAL control messages, timers,
once-a-second ticks). A node may sit behind a `Nat`: "cone" keeps one external port
for every destination, "symmetric" takes a new one per destination; both filter
port-restricted (only endpoints the inside sent to get in), "full" lets anyone in.
Nodes on one named `lan` (a /24) reach each other's addresses and its broadcast address.
A node with an `ipv6` address is reached there without NAT or filtering.
"""

from __future__ import annotations

import ipaddress
import random

from whalescale.identity import Identity
from whalescale.nat import relay
from whalescale.nat.traversal import Traversal
from whalescale.session.engine import Engine, PeerSpec
from whalescale.wire import control

from ..session.pair import ip_packet

Addr = tuple[str, int]
PORT = 51820
STEP_S = 0.05
LAN_HELLO_EVERY_S = 10.0


class Nat:
    def __init__(self, public_ip: str, kind: str) -> None:
        self.public_ip, self.kind = public_ip, kind
        self._ports: dict[Addr, int] = {}  # destination -> external port
        self._allowed: set[tuple[int, Addr]] = set()  # (external port, remote)
        self._next_port = 40000

    def out(self, dest: Addr) -> Addr:
        if self.kind == "symmetric":
            if dest not in self._ports:
                self._next_port += 7
                self._ports[dest] = self._next_port
            port = self._ports[dest]
        else:
            port = PORT  # endpoint-independent and port-preserving
        self._allowed.add((port, dest))
        return (self.public_ip, port)

    def admits(self, port: int, source: Addr) -> bool:
        if self.kind == "full":
            return port == PORT
        return (port, source) in self._allowed


class Node:
    def __init__(self, net: Internet, name: str, ident: Identity, address: str, tunnel: str,
                 anchor: bool, nat: Nat | None, lan: str | None, ipv6: str | None) -> None:
        self.net, self.name, self.ident, self.lan, self.ipv6 = net, name, ident, lan, ipv6
        self.address, self.tunnel, self.anchor, self.nat = address, tunnel, anchor, nat
        self.engine: Engine | None = None
        self.traversal: Traversal | None = None
        self.delivered: list[bytes] = []

    @property
    def local(self) -> Addr:
        return (self.address, PORT)

    def owns(self, addr: Addr) -> bool:
        if ":" in addr[0]:
            return addr == (self.ipv6, PORT)
        if self.nat is None:
            return addr == self.local
        return addr[0] == self.nat.public_ip


class Internet:
    def __init__(self, seed: int = 1) -> None:
        self.now = 0.0
        self.nodes: dict[str, Node] = {}
        self._rng = random.Random(seed)
        self._queue: list[tuple[bytes, Addr, Addr]] = []  # (datagram, source, destination)
        self._next_tick = 0.0

    def add(self, name: str, address: str, *, anchor: bool = False, nat: str | None = None,
            public_ip: str | None = None, lan: str | None = None,
            ipv6: str | None = None) -> Node:
        n = len(self.nodes) + 1
        node = Node(self, name, Identity.from_seed(bytes([n]) * 32), address,
                    f"100.96.0.{n}", anchor, Nat(public_ip or address, nat) if nat else None,
                    lan, ipv6)
        self.nodes[name] = node
        return node

    def start(self) -> None:
        """Engines and traversal cores for every node; anchors' endpoints are known."""
        for node in self.nodes.values():
            others = [o for o in self.nodes.values() if o is not node]
            specs = [PeerSpec(name=o.name, static_public=o.ident.x25519_public,
                              allowed_ips=(ipaddress.ip_network(f"{o.tunnel}/32"),),
                              endpoints=(o.local,) if o.anchor else (), keepalive_s=5.0,
                              node_id=o.ident.public, anchor=o.anchor) for o in others]
            node.engine = Engine(node.ident.x25519_private, node.ident.x25519_public, specs,
                                 random_bytes=self._rng.randbytes, wall_offset=1.8e9)
            node.traversal = Traversal(
                node.engine, [o.ident.public for o in self.nodes.values() if o.anchor],
                me=node.ident.public, is_anchor=node.anchor,
                random_bytes=self._rng.randbytes, now=self.now)
        for node in self.nodes.values():
            assert node.engine is not None and node.traversal is not None
            node.traversal.set_local_candidates([(node.address, 24)] if node.lan else [],
                                                [node.ipv6] if node.ipv6 else [], PORT)
            node.engine.start(self.now)
            if node.traversal.probe_due(self.now):
                node.traversal.probe([(node.local, t) for t in node.traversal.probe_targets()],
                                     self.now)
        self.pump()

    # ----- what the agent's shell does -----------------------------------------------

    def _collect(self, node: Node) -> None:
        engine, traversal = node.engine, node.traversal
        assert engine is not None and traversal is not None
        if engine.events:
            happened, engine.events = engine.events, []
            traversal.engine_events(happened, self.now)
        inbox, engine.control_inbox = engine.control_inbox, []
        for peer, kind, body, _ in inbox:
            if kind is control.Kind.TRAVERSAL:
                traversal.control(peer, body, self.now)
        node.delivered += engine.inbox
        engine.inbox = []
        out = [(d, a) for d, a, _ in engine.outbox] + traversal.outbox
        engine.outbox, traversal.outbox = [], []
        for datagram, dest in out:
            if relay.channel_of_alias(dest):
                tagged = traversal.relay_out(datagram, dest)
                if tagged is None:
                    continue
                datagram, dest = tagged
            neighbours = self._on_lan(node, dest)
            if neighbours:
                self._queue += [(datagram, node.local, n.local) for n in neighbours]
                continue
            if ":" in dest[0]:
                source = (node.ipv6 or "::1", PORT)
            else:
                source = node.nat.out(dest) if node.nat is not None else node.local
            self._queue.append((datagram, source, dest))

    def _on_lan(self, node: Node, dest: Addr) -> list[Node]:
        """The nodes of `node`'s LAN a datagram to `dest` reaches without leaving it."""
        if node.lan is None:
            return []
        lan = ipaddress.ip_network(f"{node.address}/24", strict=False)
        return [n for n in self.nodes.values() if n is not node and n.lan == node.lan
                and (dest == n.local or dest[0] == str(lan.broadcast_address))]

    def _deliver(self, datagram: bytes, source: Addr, dest: Addr) -> None:
        node = next((n for n in self.nodes.values() if n.owns(dest) or n.local == dest), None)
        filtered = node is not None and node.nat is not None and ":" not in dest[0] \
            and not node.nat.admits(dest[1], source)
        if node is None or filtered:
            return  # nobody there, or the NAT filters it
        assert node.engine is not None and node.traversal is not None
        node.engine.receive_datagrams([(datagram, source)], self.now)
        unclaimed, node.engine.unclaimed = node.engine.unclaimed, []
        relayed = node.traversal.datagrams(unclaimed, self.now)
        if relayed:
            node.engine.receive_datagrams(relayed, self.now)
        self._collect(node)

    def pump(self) -> None:
        for node in self.nodes.values():
            self._collect(node)
        while self._queue:
            self._deliver(*self._queue.pop(0))

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = round(self.now + STEP_S, 6)
            tick = self.now >= self._next_tick
            if tick:
                self._next_tick = self.now + 1.0
            for node in self.nodes.values():
                assert node.engine is not None and node.traversal is not None
                if (d := node.engine.next_deadline()) is not None and d <= self.now:
                    node.engine.handle_timer(self.now)
                if (d := node.traversal.next_deadline()) is not None and d <= self.now:
                    node.traversal.handle_timer(self.now)
                if tick:
                    if node.traversal.probe_due(self.now):
                        node.traversal.probe(
                            [(node.local, t) for t in node.traversal.probe_targets()], self.now)
                    node.traversal.tick(self.now)
                    if self.now % LAN_HELLO_EVERY_S < 1.0:
                        node.traversal.announce_on_lan(PORT)
            self.pump()

    # ----- for assertions -------------------------------------------------------------

    def endpoint(self, name: str, of: str) -> Addr | None:
        """Where `name`'s session with `of` sends, None without a session."""
        engine = self.nodes[name].engine
        assert engine is not None
        peer = engine.peers[self.nodes[of].ident.x25519_public]
        return peer.endpoint if peer.current is not None else None

    def send(self, source: str, to: str, payload: bytes) -> None:
        engine = self.nodes[source].engine
        assert engine is not None
        engine.send_packets([ip_packet(self.nodes[source].tunnel, self.nodes[to].tunnel,
                                       payload)], self.now)
        self.pump()
