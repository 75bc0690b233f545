"""One whalescale node, sans-I/O: the cores wired together once.

Theory of operation (aioquic's `QuicConnection` surface):
- In: `receive_datagrams(batch, now, local)` with what the UDP sockets read,
  `send_packets(packets, now)` with what the TUN read, `handle_timer(now)` at
  `next_deadline()`, and the answers to OS questions (`set_interfaces`,
  `set_mapping`, `probe`, `set_forwarding`). `reload(mesh, now)` applies a new mesh file.
- Out: `datagrams_to_send()` (grouped by destination and local socket, relay
  aliases already translated), `packets_to_deliver()` for the TUN, and
  `effects()`: log lines, LKG cache writes, answered pings, OS questions and
  the TUN's routes (effects.py). The shell decides nothing about the protocol.

Inside, the session engine carries every peer; the mesh controller (gossip,
where peers are) and NAT traversal (probes, punching, relays, LAN discovery)
sit on it. The engine hands control messages to them through its one dispatch
table (`Engine.handle_control`), datagrams that are not WireGuard's to
traversal (wire/port.py tells them apart), and events to both. A peer's
candidate endpoints are written only through the peer's commands
(session/endpoints.py). Once a second the node does its housekeeping: NAT
probes and punch requests, LAN hellos, republishing our record when our
addresses moved, the tunnel's MTUs, and how many anchors are reachable.
Subnet routes (subnets.py) decide which networks go into the TUN and whose allowed
IPs hold each; standby.py probes route primaries that have a standby.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
from collections.abc import Callable

from ..config import Endpoint, Mesh
from ..config import Node as MeshNode
from ..firewall.filter import Firewall
from ..identity import Identity, x25519_public_from_ed25519
from ..mesh.anchors import AnchorHealth, AnchorWatch
from ..mesh.controller import MeshController
from ..mesh.gossip import GossipNode
from ..mesh.records import MAX_ENDPOINTS
from ..nat.portmap import Mapping
from ..nat.traversal import Traversal
from ..session import events
from ..session.engine import Engine, MultipathConfig, PeerChanges, PeerSpec
from ..session.peer import Peer
from ..session.timers import REKEY_TIMEOUT_S
from ..wire import control
from ..wire.port import channel_of_alias, endpoint_text
from . import exit_node, routes
from .dns_answer import DnsResponder
from .effects import (
    CheckForwarding,
    ConfigureExit,
    ConfigureTun,
    Effect,
    FindRoutes,
    Log,
    Pong,
    Resolve,
)
from .local import Interface, lan_and_ipv6
from .logs import event_text
from .names import Names
from .specs import own_node, peer_specs
from .status import path_kind, peer_status
from .subnets import Subnets

Addr = tuple[str, int]
HOUSEKEEPING_EVERY_S = 1.0
LAN_HELLO_EVERY_S = 10.0  # LAN discovery broadcasts
ROUTE_PROBE = b"route primary?"  # the PING body of standby.py's probes (no Pong effect)


class ReloadRefused(ValueError):
    """The new mesh file cannot be applied to the running node (the message says why)."""


class Node:
    def __init__(self, mesh: Mesh, identity: Identity, *,
                 random_bytes: Callable[[int], bytes], scheduler: str = "wrr",
                 paths: tuple[Addr, ...] = (), backup_paths: frozenset[Addr] = frozenset(),
                 cached: dict[bytes, list[Addr]] | None = None, next_self_seq: int = 1) -> None:
        """`paths`: the addresses of our multipath sockets (announced to peers);
        `cached`: the LKG cache's endpoints by node ID. Raises NotInMesh."""
        self.mesh = mesh
        self.identity = identity
        self.me = own_node(mesh, identity)
        self.scheduler = scheduler
        self.names = Names(mesh)
        self.dns = DnsResponder(mesh)  # answers for the mesh's names (agent/name_server.py)
        self.subnets = Subnets(mesh, self.me)
        self.engine = Engine(
            identity.x25519_private, identity.x25519_public,
            self._peer_specs(mesh, self.me),
            random_bytes=random_bytes, wall_offset=0.0, mtu=mesh.mtu,
            multipath=MultipathConfig(paths, scheduler, backup_paths))
        gossip = GossipNode(identity, [n.public_key for n in mesh.nodes],
                            random_bytes=random_bytes,
                            next_seq=itertools.count(next_self_seq).__next__)
        self.controller = MeshController(self.engine, gossip, cached)
        self.traversal = Traversal(self.engine, self._anchor_ids(), me=identity.public,
                                   is_anchor=self.me.anchor, random_bytes=random_bytes,
                                   now=0.0)
        self.engine.handle_control(control.Kind.GOSSIP, self._gossip_message)
        self.engine.handle_control(control.Kind.TRAVERSAL, self._traversal_message)
        self.engine.handle_control(control.Kind.PONG, self._pong)
        self._anchors = AnchorWatch(self._anchor_keys())
        self._interfaces: list[Interface] = []
        self._published: list[Addr] = []
        self._effects: list[Effect] = []
        self._mesh_activity = False
        self._started: float | None = None
        self._next_housekeeping = float("inf")
        self._next_lan_hello = 0.0
        self._tunnel_mtus = self._peer_mtus()
        self._now = 0.0  # of the last input: when packets_to_deliver's packets arrived
        self.firewall = Firewall()
        self.firewall.load(mesh, self.me, self._owner_name)

    # ----- the mesh file -------------------------------------------------------------

    def _peer_specs(self, mesh: Mesh, me: MeshNode) -> list[PeerSpec]:
        """The engine's peers; an exit node's carry the default networks (exit_node.py),
        a subnet router's its networks, its standby's while it is away (subnets.py)."""
        return exit_node.with_default_routes(
            peer_specs(mesh, me, self.names.expand, self.subnets.failed_over()),
            me.exit_node)

    def _anchor_ids(self) -> list[bytes]:
        return [n.public_key for n in self.mesh.nodes if n.anchor]

    def _anchor_keys(self) -> frozenset[bytes]:
        return frozenset(x25519_public_from_ed25519(n.public_key) for n in self.mesh.nodes
                         if n.anchor and n is not self.me)

    def reload(self, mesh: Mesh, now: float) -> PeerChanges:
        """Converge on a new mesh file: sessions stay, removed peers go. Raises NotInMesh,
        or ReloadRefused when it needs a restart; then nothing changed."""
        me = own_node(mesh, self.identity)
        if me.port != self.me.port:
            raise ReloadRefused(f"this node's port changed ({self.me.port} -> {me.port}); "
                                "a new port needs a restart")
        self.names.set_mesh(mesh)
        self.dns.set_mesh(mesh)
        self.subnets.set_mesh(mesh, me, now)
        changes = self.engine.update_peers(self._peer_specs(mesh, me))
        self.engine.mtu = mesh.mtu
        self.mesh, self.me = mesh, me
        self.firewall.load(mesh, me, self._owner_name)
        self._anchors.anchors = self._anchor_keys()
        self.controller.set_nodes(now)
        self.traversal.set_nodes(self._anchor_ids())
        self._configure_tun()
        self._check_forwarding()
        self._after(now, mesh_activity=True)
        return changes

    # ----- in from the shell -------------------------------------------------------------

    def start(self, now: float, wall_offset: float) -> None:
        """Serving from `now`; `wall_offset` turns `now` into Unix time (TAI64N)."""
        self.engine.set_wall_offset(wall_offset)
        self.traversal.started = now
        self._started = now
        self.engine.start(now)
        self.subnets.watch.start(now)
        self._check_forwarding()
        self._housekeeping(now)
        self._resolve_due(now)
        self._after(now, mesh_activity=True)

    def receive_datagrams(self, batch: list[tuple[bytes, Addr]], now: float,
                          local: Addr | None = None) -> None:
        """UDP datagrams read from one socket (`local`: a path socket's address)."""
        others = self.engine.receive_datagrams(batch, now, local)
        if others:  # bootstrap, and relay-tagged WireGuard
            relayed = self.traversal.datagrams(others, now)
            if relayed:
                self.engine.receive_datagrams(relayed, now, local)
        self._after(now)

    def send_packets(self, packets: list[bytes], now: float) -> None:
        """IP packets read from the TUN."""
        if self.firewall.active:  # their replies pass the firewall
            self.firewall.track(packets, now)
        self.engine.send_packets(packets, now)
        self._after(now)

    def set_interfaces(self, interfaces: list[Interface], now: float) -> None:
        """Our addresses (the shell's netlink view); a change is acted on at once."""
        if interfaces != self._interfaces:
            self._interfaces = list(interfaces)
            self._paths_follow(interfaces, now)
            if self.subnets.set_interfaces(interfaces):
                self._configure_tun()
            if self._started is not None:  # else start() does it
                # moved: publish, re-probe (our public endpoint may be new) and punch now
                self.traversal.moved(now)
                self._next_housekeeping = min(self._next_housekeeping, now)
                self._after(now)

    def _paths_follow(self, interfaces: list[Interface], now: float) -> None:
        """Multipath addresses of ours that are gone (interface down, address removed)
        stop carrying at once; those back are used again once their paths answer."""
        multipath = self.engine.multipath
        if multipath is None:
            return
        present = {str(i.ip) for i in interfaces}
        gone = frozenset(a for a in multipath.local_addrs if a[0] not in present)
        for addr in sorted(gone ^ self.engine.gone_locals):
            self._log(logging.INFO, f"multipath: {endpoint_text(addr)} "
                      + ("gone (interface down or address removed): its paths stop"
                         if addr in gone else "back: its paths are tried again"))
        self.engine.set_gone_locals(gone, now)

    def set_resolved(self, name: str, addresses: list[str] | None, now: float,
                     error: str = "") -> None:
        """The answer to Resolve: what `name` stands for now (None: the lookup failed,
        `error` says why; what it stood for stays)."""
        changed, line = self.names.answer(name, addresses, error)
        if line is not None:
            self._log(*line)
        if not changed:
            return
        before = {p.name: p.spec.endpoints for p in self.engine.peers.values()}
        self.engine.update_peers(self._peer_specs(self.mesh, self.me))
        self.controller.set_nodes(now)
        # The new addresses are tried now (a handshake each, which a live session
        # survives if they do not answer): the peer's gossip record or the LKG cache may
        # still rank where the name pointed before first, and a session still counted
        # reachable may already be sending into nothing.
        for peer in self.engine.peers.values():
            known = before.get(peer.name, ())
            for addr in [a for a in peer.spec.endpoints if a not in known]:
                peer.punch(addr, now, reason=f"{name} resolved anew")
        self._after(now, mesh_activity=True)

    def set_mapping(self, mapping: Mapping | None, now: float) -> None:
        """The port mapper got, renewed or lost our mapping: republish where we are."""
        self.traversal.set_mapping(mapping)
        self._publish_if_moved(now)
        self._after(now, mesh_activity=True)

    def probe(self, routes_found: list[tuple[str, Addr]], now: float) -> None:
        """The answer to FindRoutes: (our address towards the target, target)."""
        self.traversal.probe([((host, self.me.port), target) for host, target in routes_found],
                             now)
        self._after(now)

    def ping(self, target: str, nonce: bytes, now: float) -> Peer | str:
        """A PING through the session with `target` (a peer's name or a tunnel address);
        its Pong effect carries `nonce`. Returns the peer pinged, or why it cannot be."""
        peer = self._peer_for(target)
        if isinstance(peer, str):
            return peer
        if not peer.spec.whalescale:
            return (f"{peer.name} is a vanilla WireGuard peer: ping(8) its tunnel address "
                    "instead")
        self.engine.send_control(peer, control.Kind.PING, nonce, now)
        self._after(now)
        return peer

    def _peer_for(self, target: str) -> Peer | str:
        """The peer named `target`, or the one cryptokey routing sends `target` to."""
        try:
            address = ipaddress.ip_address(target)
        except ValueError:
            return self.engine.peer_named(target) or f"no peer named {target!r} in the mesh"
        return (self.engine.peer_for_address(address)
                or f"no peer has tunnel address {address} in the mesh")

    def _owner_name(self, packed: bytes) -> str | None:
        """The peer cryptokey routing gives a tunnel address to (the firewall's sources)."""
        peer = self.engine.peer_for_address(ipaddress.ip_address(packed))
        return None if peer is None else peer.name

    # ----- time -------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self.engine.next_deadline(),
                                 self.controller.gossip.next_deadline(),
                                 self.traversal.next_deadline(), self._next_housekeeping,
                                 self.names.next_deadline() if self._started is not None
                                 else None,
                                 self.subnets.watch.next_deadline() if self._started is not None
                                 else None)
                     if d is not None]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        self.engine.handle_timer(now)
        gossip = self.controller.gossip
        if (deadline := gossip.next_deadline()) is not None and deadline <= now:
            gossip.handle_timer(now)
        if (deadline := self.traversal.next_deadline()) is not None and deadline <= now:
            self.traversal.handle_timer(now)
        if now >= self._next_housekeeping:
            self._housekeeping(now)
        if self._started is not None:
            self._watch_primaries(now)
        self._resolve_due(now)
        self._after(now, mesh_activity=True)

    def _configured_endpoints(self, name: str) -> tuple[Endpoint, ...]:
        for node in self.mesh.nodes:
            if node.name == name:
                return node.endpoints
        return next((() if wg.endpoint is None else (wg.endpoint,)
                     for wg in self.mesh.wireguard if wg.name == name), ())

    def _resolve_due(self, now: float) -> None:
        names = self.names.due(now)
        if names:
            self._effects.append(Resolve(names))

    def _housekeeping(self, now: float) -> None:
        self._next_housekeeping = now + HOUSEKEEPING_EVERY_S
        traversal = self.traversal
        lan, ipv6 = lan_and_ipv6(self._interfaces)
        traversal.set_local_candidates(lan, ipv6, self.me.port)
        if traversal.probe_due(now):
            self._effects.append(FindRoutes(tuple(traversal.probe_targets())))
        if now >= self._next_lan_hello:
            traversal.announce_on_lan(self.me.port)
            self._next_lan_hello = now + LAN_HELLO_EVERY_S
        traversal.tick(now)
        self._publish_if_moved(now)
        if self._peer_mtus() != self._tunnel_mtus:
            self._configure_tun()
        self._watch_anchors(now)

    def _watch_anchors(self, now: float) -> None:
        """Say when fewer than two anchors are reachable (from the first handshake
        timeout on, not while sessions come up)."""
        if self._started is None or now - self._started < REKEY_TIMEOUT_S:
            return
        up = self._reachable(now)
        changed = self._anchors.changed(up, self.me.anchor)
        if changed is AnchorHealth.OK:
            count = len(up & self._anchors.anchors) + int(self.me.anchor)
            self._log(logging.INFO, f"anchors: {count} reachable again")
        elif changed is not None:
            self._log(logging.WARNING, f"anchors: {changed.value}; the mesh cannot "
                      "re-converge if it goes: run at least two anchors on different networks")

    def _reachable(self, now: float) -> set[bytes]:
        return {key for key, p in self.engine.peers.items() if p.reachable(now)}

    def _watch_primaries(self, now: float) -> None:
        """Probe the primaries of routes with a standby; while one is unreachable its
        networks are its standby's (standby.py: allowed IPs change, TUN routes stay)."""
        watch, engine = self.subnets.watch, self.engine
        for name in watch.probes_due(now):
            if (peer := engine.peer_named(name)) is not None:
                engine.send_control(peer, control.Kind.PING, ROUTE_PROBE, now)

        def heard(name: str) -> float | None:
            peer = engine.peer_named(name)
            return None if peer is None else peer.last_received_at

        if self.subnets.check(heard, now):
            engine.update_peers(self._peer_specs(self.mesh, self.me))
            self.firewall.owners_changed()  # the network's sources are another peer's now
            self._configure_tun()

    def _check_forwarding(self) -> None:
        if self.subnets.own():  # only a node that forwards asks
            self._effects.append(CheckForwarding())

    def set_forwarding(self, ipv4: bool | None, ipv6: bool | None, now: float) -> None:
        """The answer to CheckForwarding: whether the host forwards (None: unknown)."""
        self.subnets.set_forwarding(ipv4, ipv6)
        self._after(now)

    # ----- our own record -------------------------------------------------------------------

    def _own_endpoints(self) -> list[Addr]:
        """Where others can reach us: the mesh file's static endpoints, a port mapping and
        what anchors see of us when anyone can send there, then our addresses."""
        static = list(self.names.expand(self.me.endpoints))
        public = self.traversal.public_endpoints()
        local = [(str(i.ip), self.me.port) for i in self._interfaces]
        return list(dict.fromkeys(static + public + local))[:MAX_ENDPOINTS]

    def _publish_if_moved(self, now: float) -> None:
        """Our addresses changed (or this is the start): a new signed self-attested record,
        and a keepalive to every peer now, so that they see our new source address at once
        (passive acceptance) instead of at the next keepalive."""
        endpoints = self._own_endpoints()
        if endpoints == self._published:
            return
        record = self.controller.publish_self(endpoints, now)
        listed = ", ".join(endpoint_text(a) for a in endpoints)
        if self._published:
            self._log(logging.INFO, f"our endpoints changed to {listed} (record seq "
                      f"{record.seq}); telling every peer")
            for peer in self.engine.peers.values():
                if peer.current is not None:
                    peer.send_keepalive(now)
        else:
            self._log(logging.INFO, f"publishing our endpoints {listed} (record seq {record.seq})")
        self._published = endpoints

    # ----- the TUN's routes ---------------------------------------------------------------------

    def _peer_mtus(self) -> dict[str, int]:
        return routes.peer_mtus(self.engine.peers.values(), self.mesh.mtu,
                                announcing=bool(self.me.interfaces))

    def tun_config(self) -> ConfigureTun:
        """Our addresses, and the routes with each peer's MTU (routes.py)."""
        return ConfigureTun(tuple(f"{a}/{a.max_prefixlen}" for a in self.me.addresses),
                            routes.table(self.mesh, self.engine.peers.values(), self._tunnel_mtus,
                                         self.subnets.skipped()))

    def _configure_tun(self) -> None:
        """Paths came, went or were probed, or the mesh changed: each peer's route gets
        its session's MTU."""
        before, self._tunnel_mtus = self._tunnel_mtus, self._peer_mtus()
        for name, mtu in self._tunnel_mtus.items():
            if name in before and before[name] != mtu:
                self._log(logging.INFO, f"peer {name}: tunnel MTU {before[name]} -> {mtu} (the "
                          "minimum over its usable paths, less the multipath trailer)")
        self._effects += [self.tun_config(), self.exit_config()]

    def exit_config(self) -> ConfigureExit:
        """Our default route through an exit node, or none; our own offer (exit_node.py)."""
        return exit_node.exit_config(self.me, self._tunnel_mtus)

    # ----- control messages, from the engine's dispatch table -----------------------------------

    def _gossip_message(self, peer: Peer, kind: control.Kind, body: bytes, addr: Addr,
                        local: Addr | None, now: float) -> None:
        self.controller.gossip_message(peer, body, now)
        self._mesh_activity = True

    def _traversal_message(self, peer: Peer, kind: control.Kind, body: bytes, addr: Addr,
                           local: Addr | None, now: float) -> None:
        self.traversal.control(peer, body, now)

    def _pong(self, peer: Peer, kind: control.Kind, body: bytes, addr: Addr,
              local: Addr | None, now: float) -> None:
        if body == ROUTE_PROBE:
            return  # it was heard from: all standby.py needs
        self._effects.append(Pong(body, now, endpoint_text(addr),
                                  path_kind(addr, self._interfaces)))

    # ----- after each input: the cores' outputs to each other, and to the shell -----------------

    def _after(self, now: float, *, mesh_activity: bool = False) -> None:
        self._now = now
        engine, controller, traversal = self.engine, self.controller, self.traversal
        if engine.events:
            happened, engine.events = engine.events, []
            for event in happened:
                self._log(*event_text(event))
                if isinstance(event, events.PeerUnanswered | events.HandshakeGaveUp):
                    self.names.soon(self._configured_endpoints(event.peer), now)
            controller.engine_events(happened, now)
            traversal.engine_events(happened, now)
            mesh_activity = True
        if mesh_activity or self._mesh_activity or controller.gossip.outbox:
            self._mesh_activity = False
            controller.after_batch(now)
            if controller.cache_ops:
                self._effects += controller.cache_ops
                controller.cache_ops = []
        if traversal.tick_at is not None and self._started is not None:
            self._next_housekeeping = min(self._next_housekeeping, traversal.tick_at)
            traversal.tick_at = None
        for prefix, core in (("nat", traversal), ("gossip", controller.gossip)):
            for line in core.log_lines:
                self._log(logging.INFO, f"{prefix}: {line}")
            core.log_lines = []
        for level, line in self.subnets.log_lines:
            self._log(level, f"routes: {line}")
        self.subnets.log_lines = []

    def _log(self, level: int, message: str) -> None:
        self._effects.append(Log(level, message))

    # ----- out to the shell ---------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[Addr, Addr | None, list[bytes]]]:
        """(destination, local socket address or None, datagrams), one entry per pair, in
        order: a relayed peer's datagrams tagged and addressed to its anchor."""
        out, self.engine.outbox = self.engine.outbox, []
        if self.traversal.outbox:
            out = [(d, a, None) for d, a in self.traversal.outbox] + out
            self.traversal.outbox = []
        groups: dict[tuple[Addr, Addr | None], list[bytes]] = {}
        for datagram, addr, local in out:
            groups.setdefault((addr, local), []).append(datagram)
        ready = []
        for (addr, local), datagrams in groups.items():
            if addr[1] == 0 and channel_of_alias(addr):  # a relayed peer: tagged, to its anchor
                tagged = [t for d in datagrams if (t := self.traversal.relay_out(d, addr))]
                if not tagged:
                    self.engine.drops["no_relay"] += len(datagrams)
                    continue
                addr, datagrams = tagged[0][1], [t[0] for t in tagged]
            ready.append((addr, local, datagrams))
        return ready

    def packets_to_deliver(self) -> list[bytes]:
        """For the TUN: what the tunnel delivered and our firewall admits."""
        packets, self.engine.inbox = self.engine.inbox, []
        firewall = self.firewall
        if firewall.active and packets:
            packets = firewall.admit(packets, self._now)
            for level, line in firewall.log_lines:
                self._log(level, line)
            firewall.log_lines = []
        return packets

    def effects(self) -> list[Effect]:
        effects, self._effects = self._effects, []
        return effects

    # ----- for status and metrics (the exporter reads the status) ---------------------------

    def status(self, now: float) -> dict[str, object]:
        seqs = self.controller.record_seqs()
        anchor_keys = self._anchors.anchors
        peers = [peer_status(p, key in anchor_keys, now, self._interfaces, seqs.get(p.name),
                             self.scheduler) for key, p in self.engine.peers.items()]
        health = self._anchors.health(self._reachable(now), self.me.anchor)
        warnings = []
        if health is not AnchorHealth.OK:
            warnings.append(f"{health.value}: the mesh cannot re-converge if it goes; "
                            "run at least two anchors on different networks")
        warnings += self.subnets.warnings()
        return {
            "node": self.me.name,
            "port": self.me.port,
            "anchor": self.me.anchor,
            "anchors": {"health": health.value,
                        "reachable": [p["name"] for p in peers if p["anchor"] and p["reachable"]],
                        # the OTHER anchors: an anchor does not count itself here
                        "total": len(anchor_keys)},
            "peers": sorted(peers, key=lambda p: (not p["anchor"], p["name"])),
            "warnings": warnings,
            "gossip": dict(self.controller.gossip.counters),
            "handshakes": dict(self.engine.handshake_outcomes),
            "cookie_replies": dict(self.engine.cookie_replies),
            "published": [endpoint_text(a) for a in self._published],
            "addresses": [str(i) for i in self._interfaces],
            "nat": self.traversal.status(now),
            "dns": dict(self.dns.counters),
            "firewall": self.firewall.status(),
            "exit": exit_node.status(self.exit_config()),
            "routes": self.subnets.status(),
        }

