"""The trio shell around the protocol core: UDP sockets, the TUN device, one timer.

It owns no protocol logic. One reader task per socket and one for the TUN
feed the engine a batch at a time (drain until EAGAIN); what the engine leaves
unclaimed (bootstrap probes, relayed datagrams) goes to NAT traversal. Then
`_flush` sends what the engine and traversal queued, writes what the engine
delivered, hands events and control messages to the mesh controller and to
traversal, writes the controller's LKG cache operations to sqlite and logs
what happened. The timer task sleeps in a cancel scope whose deadline is the
earliest of the engine's, the gossip node's and traversal's. Housekeeping,
once a second, tells traversal our addresses and lets it probe and punch; the
port mapper runs beside it (nat/driver.py).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import trio

from ..config import ConfigError, Mesh, load_mesh
from ..identity import Identity, fingerprint, x25519_public_from_ed25519
from ..mesh.anchors import AnchorHealth, AnchorWatch, reachable
from ..mesh.cache import FILE_NAME as CACHE_FILE
from ..mesh.cache import CacheError, LkgCache
from ..mesh.controller import Contact, MeshController, StoredRecord
from ..mesh.gossip import GossipNode
from ..mesh.records import MAX_ENDPOINTS
from ..nat import relay
from ..nat.driver import run_port_mapping
from ..nat.portmap import Mapping
from ..nat.traversal import Traversal
from ..session.engine import Engine, MultipathConfig
from ..session.timers import REKEY_TIMEOUT_S
from ..tun.device import TunDevice
from ..wire import control as wire_control
from . import addresses, control, metrics, nat, routes, udp
from .logs import log_event
from .peers import NotInMesh, own_node, peer_specs
from .sockets import Sockets
from .status import build_status, endpoint_text, path_kind

log = logging.getLogger("whalescale.agent")

_RECV_BATCH_BYTES = 4 * 1024 * 1024
_TUN_BATCH_FRAMES = 64
LAN_HELLO_EVERY_S = 10.0  # LAN discovery broadcasts


class Agent:
    def __init__(self, mesh: Mesh, identity: Identity, *, state_dir: Path,
                 mesh_path: Path | None = None, interface: str = "ws0",
                 offload: bool = True, scheduler: str = "wrr") -> None:
        self.mesh = mesh
        self.mesh_path = mesh_path
        self.identity = identity
        self.me = own_node(mesh, identity)
        self.interface = interface
        self.state_dir = state_dir
        self.offload = offload
        self.scheduler = scheduler
        # Multipath: the engine learns our path sockets' addresses in open(), once bound.
        self.engine = Engine(
            identity.x25519_private, identity.x25519_public, peer_specs(mesh, self.me),
            random_bytes=os.urandom, wall_offset=0.0, mtu=mesh.mtu,
            multipath=MultipathConfig(scheduler=scheduler),
        )
        self._tun: TunDevice | None = None
        self._sockets = Sockets()
        self._timer_scope = trio.CancelScope()
        self._interfaces: list[addresses.Interface] = []
        self._anchors = AnchorWatch(self._anchor_keys())
        self._pongs: dict[bytes, trio.MemorySendChannel[tuple[float, tuple[str, int]]]] = {}
        self._cache: LkgCache | None = None
        self.mesh_controller: MeshController | None = None
        self.traversal: Traversal | None = None
        self._next_lan_hello = 0.0
        self._published: list[tuple[str, int]] = []
        self._applied_mtus: dict[str, int] = {}  # peer name -> its route's MTU
        self._device_mtu = mesh.mtu

    def _peer_mtus(self) -> dict[str, int]:
        return routes.peer_mtus(self.engine.peers.values(), self.mesh.mtu,
                                announcing=bool(self.me.interfaces))

    def _open_mesh_state(self) -> None:
        """The LKG cache (a broken one is moved aside, never fatal), gossip, the controller."""
        self._cache = LkgCache.open(self.state_dir / CACHE_FILE, recover=True)
        for node in self.mesh.nodes:
            if node is not self.me:
                self._cache.set_peer(node.public_key, node.name, node.anchor)
        cached = {node.public_key: [(e.host, e.port)
                                    for e in self._cache.endpoints(node.public_key)]
                  for node in self.mesh.nodes if node is not self.me}
        gossip = GossipNode(self.identity, [n.public_key for n in self.mesh.nodes],
                            random_bytes=os.urandom, next_seq=self._cache.next_self_seq)
        self.mesh_controller = MeshController(self.engine, gossip, cached)
        self.traversal = Traversal(self.engine, self._anchor_ids(),
                                   me=self.identity.public, is_anchor=self.me.anchor,
                                   random_bytes=os.urandom, now=0.0)
        known = sum(1 for endpoints in cached.values() if endpoints)
        log.info("last-known-good cache: endpoints for %d of %d peers", known, len(cached))

    def _anchor_ids(self) -> list[bytes]:
        return [n.public_key for n in self.mesh.nodes if n.anchor]

    def _anchor_keys(self) -> frozenset[bytes]:
        return frozenset(x25519_public_from_ed25519(n.public_key) for n in self.mesh.nodes
                         if n.anchor and n is not self.me)

    def open(self) -> None:
        """Bind the sockets, create and configure the TUN; OSError says what failed.

        Synchronous and before trio starts, so a busy port or a missing
        /dev/net/tun is one clear error rather than a task failure.
        """
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            control.claim(control.socket_path(self.state_dir))
            self._open_mesh_state()
            self._open_sockets()
            self._tun = TunDevice.open(self.interface, offload=self.offload)
            self._configure_tun()
            self._interfaces = addresses.local_interfaces(exclude=self.interface)
            if self.me.metrics is not None:
                metrics.serve(self, self.me.metrics.host, self.me.metrics.port)
                log.info("Prometheus metrics on http://%s/metrics", self.me.metrics)
        except BaseException:
            self.close()
            raise

    def _configure_tun(self) -> None:
        """Our addresses, and the routes with each peer's MTU (routes.py)."""
        assert self._tun is not None
        mtus = self._peer_mtus()
        wanted = routes.table(self.mesh, self.engine.peers.values(), mtus)
        self._tun.configure([f"{a}/{a.max_prefixlen}" for a in self.me.addresses], wanted)
        self._applied_mtus = mtus
        self._device_mtu = max(wanted.values(), default=self.mesh.mtu)

    def _follow_tunnel_mtus(self) -> None:
        """Paths came, went or were probed: give each peer's route its session's MTU."""
        before = self._applied_mtus
        if self._peer_mtus() == before:
            return
        try:
            self._configure_tun()
        except OSError as exc:
            log.error("setting tunnel MTUs on %s failed: %s", self.interface, exc)
            return
        for name, mtu in self._applied_mtus.items():
            if before.get(name) != mtu:
                log.info("peer %s: tunnel MTU %s -> %d (the minimum over its usable paths, "
                         "less the multipath trailer)", name, before.get(name), mtu)

    def reload(self) -> dict[str, Any]:
        """Apply the mesh file anew; a bad file changes nothing (SIGHUP, `whalescale reload`)."""
        if self.mesh_path is None:
            return {"ok": False, "error": "this agent was not started from a mesh file"}
        try:
            mesh = load_mesh(self.mesh_path)
            me = own_node(mesh, self.identity)
        except (ConfigError, NotInMesh) as exc:
            log.error("reload refused, the running mesh stays as it was:\n%s", exc)
            return {"ok": False, "error": str(exc)}
        if me.port != self.me.port:
            error = (f"{self.mesh_path}: this node's port changed ({self.me.port} -> {me.port}); "
                     "a new port needs a restart")
            log.error("reload refused, the running mesh stays as it was: %s", error)
            return {"ok": False, "error": error}
        changes = self.engine.update_peers(peer_specs(mesh, me))
        self.engine.mtu = mesh.mtu
        self.mesh, self.me = mesh, me
        self._anchors.anchors = self._anchor_keys()
        assert self._cache is not None and self.mesh_controller is not None
        for node in mesh.nodes:
            if node is not me:
                self._cache.set_peer(node.public_key, node.name, node.anchor)
        kept = {n.public_key for n in mesh.nodes}
        for cached in self._cache.peers():
            if cached.peer_id not in kept:  # out of the mesh: forget where it was
                self._cache.forget_peer(cached.peer_id)
        self.mesh_controller.set_nodes()
        assert self.traversal is not None
        self.traversal.set_nodes(self._anchor_ids())
        try:
            self._configure_tun()
        except OSError as exc:
            log.error("reload: configuring %s failed: %s", self.interface, exc)
            return {"ok": False, "error": f"configuring {self.interface}: {exc}"}
        summary = (f"{len(changes.added)} added {changes.added}, "
                   f"{len(changes.removed)} removed {changes.removed}, "
                   f"{len(changes.changed)} changed {changes.changed}, "
                   f"{len(changes.unchanged)} unchanged")
        log.info("reload applied: %s", summary)
        self._flush()
        return {"ok": True, "message": f"reload applied: {summary}"}

    async def _control(self, req: dict[str, Any]) -> dict[str, Any]:
        match req.get("command"):
            case "hello":
                return {"ok": True}
            case "reload":
                return self.reload()
            case "status":
                return {"ok": True, "status": self.status()}
            case "ping":
                return await self._ping(str(req.get("peer", "")),
                                        float(req.get("timeout_s", 5.0)))
            case other:
                return {"ok": False, "error": f"unknown command {other!r}"}

    def status(self) -> dict[str, Any]:
        now = trio.current_time()
        assert self.mesh_controller is not None
        report = build_status(
            node=self.me.name, fingerprint=fingerprint(self.identity.public),
            interface=self.interface, port=self.me.port, is_anchor=self.me.anchor,
            engine=self.engine, anchor_keys=self._anchors.anchors,
            health=self._anchors.health(self._reachable(now), self.me.anchor), now=now,
            interfaces=self._interfaces, record_seqs=self.mesh_controller.record_seqs(),
            scheduler=self.scheduler)
        report["gossip"] = self.gossip_counters()
        report["drops"] = self.drops()
        report["published"] = [endpoint_text(a) for a in self._published]
        report["addresses"] = [str(i) for i in self._interfaces]
        assert self.traversal is not None
        report["nat"] = self.traversal.status(now)
        return report

    def drops(self) -> dict[str, int]:
        """Every drop counter: the engine's and the TUN's (copies: metrics read them from
        another thread)."""
        merged = dict(self.engine.drops)
        if self._tun is not None:
            for reason, count in list(self._tun.drops.items()):
                merged[f"tun_{reason}"] = count
        return merged

    def gossip_counters(self) -> dict[str, int]:
        assert self.mesh_controller is not None
        return dict(self.mesh_controller.gossip.counters)

    def _reachable(self, now: float) -> set[bytes]:
        return {key for key, p in self.engine.peers.items()
                if reachable(p.last_received_at, now, p.spec.keepalive_s)}

    async def _ping(self, name: str, timeout_s: float) -> dict[str, Any]:
        """A PING through the session; the answer says which path it came back on."""
        peer = self.engine.peer_named(name)
        if peer is None:
            return {"ok": False, "error": f"no peer named {name!r} in the mesh"}
        if not peer.spec.whalescale:
            return {"ok": False, "error": f"{name} is a vanilla WireGuard peer: ping its "
                    "tunnel address instead"}
        nonce = os.urandom(8)
        send, receive = trio.open_memory_channel[tuple[float, tuple[str, int]]](1)
        self._pongs[nonce] = send
        sent_at = trio.current_time()
        try:
            self.engine.send_control(peer, wire_control.Kind.PING, nonce, sent_at)
            self._flush()
            with trio.move_on_after(timeout_s):
                answered_at, addr = await receive.receive()
                return {"ok": True, "peer": name, "rtt_ms": round((answered_at - sent_at) * 1e3, 3),
                        "endpoint": endpoint_text(addr), "path": path_kind(addr, self._interfaces)}
            return {"ok": False, "error": f"no answer from {name} within {timeout_s:g} s"}
        finally:
            del self._pongs[nonce]

    def _handle_control_messages(self) -> None:
        inbox, self.engine.control_inbox = self.engine.control_inbox, []
        now = trio.current_time()
        assert self.mesh_controller is not None
        for peer, kind, body, addr in inbox:
            if kind is wire_control.Kind.GOSSIP:
                self.mesh_controller.gossip_message(peer, body, now)
            elif kind is wire_control.Kind.TRAVERSAL:
                assert self.traversal is not None
                self.traversal.control(peer, body, now)
            elif kind is wire_control.Kind.PONG:
                waiter = self._pongs.get(body)
                if waiter is not None:
                    with contextlib.suppress(trio.WouldBlock):
                        waiter.send_nowait((now, addr))

    async def _housekeeping(self) -> None:
        """Once a second: our own addresses, and whether enough anchors are reachable
        (reported from the first handshake timeout on, not while sessions come up)."""
        started = trio.current_time()
        while True:
            self._interfaces = addresses.local_interfaces(exclude=self.interface)
            now = trio.current_time()
            self._traverse(now)
            self._publish_if_moved()
            self._follow_tunnel_mtus()
            up = self._reachable(now)
            changed = (self._anchors.changed(up, self.me.anchor)
                       if now - started >= REKEY_TIMEOUT_S else None)
            if changed is AnchorHealth.OK:
                log.info("anchors: %d reachable again", len(up & self._anchors.anchors)
                         + int(self.me.anchor))
            elif changed is not None:
                log.warning("anchors: %s; the mesh cannot re-converge if it goes: run at "
                            "least two anchors on different networks", changed.value)
            await trio.sleep(1.0)

    def _traverse(self, now: float) -> None:
        """NAT traversal's once-a-second work: our candidates, probes, punch requests."""
        traversal = self.traversal
        assert traversal is not None
        lan, ipv6 = nat.lan_and_ipv6(self._interfaces)
        traversal.set_local_candidates(lan, ipv6, self.me.port)
        if traversal.probe_due(now):
            traversal.probe(nat.routes(traversal.probe_targets(), self.me.port), now)
        if now >= self._next_lan_hello:
            traversal.announce_on_lan(self.me.port)
            self._next_lan_hello = now + LAN_HELLO_EVERY_S
        traversal.tick(now)
        self._flush()

    def _on_mapping(self, mapping: Mapping | None) -> None:
        """The port mapper got, renewed or lost our mapping: republish where we are."""
        assert self.traversal is not None
        self.traversal.set_mapping(mapping)
        self._publish_if_moved()
        self._flush()

    def _own_endpoints(self) -> list[tuple[str, int]]:
        """Where others can reach us: the mesh file's static endpoints, a port mapping and
        what anchors see of us when anyone can send there, then our addresses."""
        static = [(e.host, e.port) for e in self.me.endpoints]
        assert self.traversal is not None
        public = self.traversal.public_endpoints()
        local = [(str(i.ip), self.me.port) for i in self._interfaces]
        return list(dict.fromkeys(static + public + local))[:MAX_ENDPOINTS]

    def _publish_if_moved(self) -> None:
        """Our addresses changed (or this is the start): a new signed self-attested record,
        and a keepalive to every peer now, so that they see our new source address at once
        (passive acceptance) instead of at the next keepalive."""
        endpoints = self._own_endpoints()
        if endpoints == self._published:
            return
        now = trio.current_time()
        assert self.mesh_controller is not None
        record = self.mesh_controller.publish_self(endpoints, now)
        if self._published:
            log.info("our endpoints changed to %s (record seq %d); telling every peer",
                     ", ".join(endpoint_text(a) or "" for a in endpoints), record.seq)
            for peer in self.engine.peers.values():
                if peer.current is not None:
                    peer.send_keepalive(now)
        else:
            log.info("publishing our endpoints %s (record seq %d)",
                     ", ".join(endpoint_text(a) or "" for a in endpoints), record.seq)
        self._published = endpoints
        self._flush()

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        if self._tun is not None:
            self._tun.close()
            self._tun = None
        self._sockets.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Serve until cancelled; `open()` must have succeeded."""
        # TAI64N needs wall time; the engine gets it as an offset to trio's clock.
        self.engine.set_wall_offset(time.time() - trio.current_time())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._tun_reader)
            for sock in self._sockets.default.values():
                nursery.start_soon(self._udp_reader, sock, None)
            for local, sock in self._sockets.paths.items():
                nursery.start_soon(self._udp_reader, sock, local)
            nursery.start_soon(self._timer)
            assert self.traversal is not None
            self.traversal.started = trio.current_time()
            nursery.start_soon(self._housekeeping)
            gateway = None if self.me.anchor else nat.default_gateway()
            if gateway is not None:  # in the background: start-up never waits for a router
                nursery.start_soon(functools.partial(
                    run_port_mapping, gateway, self.me.port, self._on_mapping))
            await nursery.start(control.serve, control.socket_path(self.state_dir),
                                self._control)
            self.engine.start(trio.current_time())
            self._flush()
            assert self._tun is not None
            # Logged only now: callers take this line as "serving, and SIGTERM is handled".
            log.info("node %s (%s) up on %s, mtu %d, udp port %d, %d peers, offload %s",
                     self.me.name, fingerprint(self.identity.public), self.interface,
                     self._device_mtu, self.me.port, len(self.engine.peers),
                     "on" if self._tun.offload else "off")
            task_status.started()

    def _open_sockets(self) -> None:
        backup_interfaces = self.me.backup_interfaces
        self._sockets.open(self.me.port, self.me.interfaces + backup_interfaces)
        paths = tuple(self._sockets.paths)
        backups = frozenset(a for a, dev in self._sockets.device_of.items()
                            if dev in backup_interfaces)
        if self.me.interfaces or backup_interfaces:
            log.info("multipath: sockets on %s%s (scheduler %s)",
                     ", ".join(f"{h}:{p}" for h, p in paths) or "none found",
                     f"; backups {', '.join(f'{h}:{p}' for h, p in sorted(backups))}"
                     if backups else "", self.scheduler)
        self.engine.multipath = MultipathConfig(paths, self.scheduler, backups)
        for peer in self.engine.peers.values():
            if peer.mp is not None:
                peer.mp.local_addrs = list(paths)
                peer.mp.backup_addrs = backups

    async def _tun_reader(self) -> None:
        assert self._tun is not None
        tun, engine = self._tun, self.engine
        while True:
            await trio.lowlevel.wait_readable(tun.fileno())
            engine.send_packets(tun.read_batch(self._device_mtu, _TUN_BATCH_FRAMES),
                                trio.current_time())
            self._flush()

    async def _udp_reader(self, sock: socket.socket, local: tuple[str, int] | None) -> None:
        """Datagrams of one socket; `local` is its address for a path socket, else None."""
        engine = self.engine
        v6 = sock.family == socket.AF_INET6
        while True:
            await trio.lowlevel.wait_readable(sock)
            batch = udp.recv_batch(sock, _RECV_BATCH_BYTES)
            if v6:  # (host, port, flowinfo, scope_id) -> (host, port), as the engine keys peers
                batch = [(data, addr[:2]) for data, addr in batch]
            now = trio.current_time()
            engine.receive_datagrams(batch, now, local)
            if engine.unclaimed:  # bootstrap probes and relayed datagrams
                unclaimed, engine.unclaimed = engine.unclaimed, []
                assert self.traversal is not None
                relayed = self.traversal.datagrams(unclaimed, now)
                if relayed:
                    engine.receive_datagrams(relayed, now, local)
            self._flush()

    async def _timer(self) -> None:
        while True:
            with self._timer_scope:
                await trio.sleep_forever()
            self._timer_scope = trio.CancelScope()
            now = trio.current_time()
            self.engine.handle_timer(now)
            assert self.mesh_controller is not None
            gossip = self.mesh_controller.gossip
            if (deadline := gossip.next_deadline()) is not None and deadline <= now:
                gossip.handle_timer(now)
            assert self.traversal is not None
            if (deadline := self.traversal.next_deadline()) is not None and deadline <= now:
                self.traversal.handle_timer(now)
            self._flush(mesh_activity=True)

    def _flush(self, *, mesh_activity: bool = False) -> None:
        engine, controller, traversal = self.engine, self.mesh_controller, self.traversal
        assert controller is not None and traversal is not None
        now = trio.current_time()
        if engine.outbox:
            out, engine.outbox = engine.outbox, []
            self._send(out)
        if engine.inbox:
            packets, engine.inbox = engine.inbox, []
            assert self._tun is not None
            self._tun.write_batch(packets)
        if engine.events:
            happened, engine.events = engine.events, []
            for event in happened:
                log_event(event)
            controller.engine_events(happened, now)
            traversal.engine_events(happened, now)
            mesh_activity = True
        if engine.control_inbox:
            self._handle_control_messages()
            mesh_activity = True
        if mesh_activity or controller.gossip.outbox:
            controller.pump(now)
            self._write_cache()
        for note in traversal.notes:
            log.info("nat: %s", note)
        traversal.notes = []
        # gossip, handshakes, punches, relay set-up and probe replies queued meanwhile
        if traversal.outbox or engine.outbox:
            out = [(data, addr, None) for data, addr in traversal.outbox] + engine.outbox
            traversal.outbox, engine.outbox = [], []
            self._send(out)
        deadlines = [d for d in (engine.next_deadline(), controller.gossip.next_deadline(),
                                 traversal.next_deadline()) if d is not None]
        self._timer_scope.deadline = min(deadlines, default=float("inf"))

    def _write_cache(self) -> None:
        assert self._cache is not None and self.mesh_controller is not None
        ops, self.mesh_controller.cache_ops = self.mesh_controller.cache_ops, []
        try:
            for op in ops:
                match op:
                    case Contact(peer_id, host, port, path_type):
                        self._cache.record_contact(peer_id, host, port, path_type, time.time())
                    case StoredRecord(peer_id, endpoints, seq, self_attested):
                        if peer_id != self.identity.public:
                            self._cache.store_record(peer_id, list(endpoints), seq, self_attested)
        except CacheError as exc:
            # the cache speeds up recovery; losing a write must not stop the VPN
            log.error("last-known-good cache: %s", exc)

    def _send(self, out: list[tuple[bytes, tuple[str, int], tuple[str, int] | None]]
              ) -> None:
        """Send each destination's datagrams as one batch (UDP GSO), in order, from the
        socket the engine named (a path socket) or the default one of the family."""
        groups: dict[tuple[tuple[str, int], tuple[str, int] | None], list[bytes]] = {}
        for datagram, addr, local in out:
            groups.setdefault((addr, local), []).append(datagram)
        ready = []
        for (addr, local), datagrams in groups.items():
            if relay.channel_of_alias(addr):  # a relayed peer: tagged, to its anchor
                assert self.traversal is not None
                tagged = [t for d in datagrams if (t := self.traversal.relay_out(d, addr))]
                if not tagged:
                    self.engine.drops["no_relay"] += len(datagrams)
                    continue
                addr, datagrams = tagged[0][1], [t[0] for t in tagged]
            ready.append((addr, local, datagrams))
        self._sockets.send(ready, self.engine.drops)
