"""The trio shell around one node (node/node.py): sockets, the TUN, timers, threads.

It decides nothing about the protocol. `Agent.open` does the start-up I/O in
order (state directory, control socket claim, LKG cache, UDP sockets, the
node, the TUN) so that a failure is one clear OSError; `run` then serves in
one nursery, each task's lifetime bounded by it:

- a reader per UDP socket and one for the TUN feed the node a batch at a time;
- the timer sleeps until the node's next deadline;
- netlink address events tell the node our addresses;
- the port mapper (nat/driver.py) reports our mapping;
- the LKG cache writer runs sqlite in a worker thread, off the event loop;
- the control socket answers `whalescale status/ping/reload`;
- the name server answers DNS for the mesh's names on our tunnel addresses;
- the Prometheus exporter (if configured) is shut down with the nursery.

After each input, `_flush` sends the node's datagrams, writes its packets to the
TUN and carries out its effects (effects.py).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..config import ConfigError, Mesh, load_mesh
from ..config import Node as MeshNode
from ..identity import Identity, fingerprint
from ..nat.driver import Mapping, run_port_mapping
from ..node.effects import (
    CheckForwarding,
    ConfigureTun,
    Contact,
    FindRoutes,
    Log,
    Pong,
    Resolve,
    StoredRecord,
)
from ..node.exit_node import ConfigureExit, ExitChoiceError, choose_exit
from ..node.node import Node, ReloadRefused
from ..node.specs import NotInMesh, own_node
from ..tun.device import TunDevice
from ..version import version
from . import addresses, control, dns, nat, steering, sysctl, udp
from .cache import CacheWriter
from .exit_node import ExitNode
from .name_server import NameServer
from .sockets import Sockets

if TYPE_CHECKING:
    from .metrics import Exporter

log = logging.getLogger("whalescale.agent")

_RECV_BATCH_BYTES = 4 * 1024 * 1024
# The control socket's batch: a flood of handshake messages holds transport data up by
# at most this many messages' work (each a MAC, a cookie, perhaps a DH) at a time.
_CONTROL_BATCH = 16
_TUN_BATCH_FRAMES = 64


class Agent:
    def __init__(self, node: Node, *, mesh_path: Path | None, state_dir: Path,
                 interface: str, sockets: Sockets, tun: TunDevice, cache: CacheWriter,
                 exporter: Exporter | None, exit_node: str | None = None) -> None:
        self.node = node
        self.exit_node = exit_node  # `up --exit-node`: overrides the file's, reloads too
        self._exit = ExitNode(interface)
        self.mesh_path = mesh_path
        self.state_dir = state_dir
        self.interface = interface
        self._sockets = sockets
        self._tun = tun
        self._cache = cache
        self._exporter = exporter
        self._device_mtu = node.mesh.mtu
        self._timer_scope = trio.CancelScope()
        self._pongs: dict[bytes, trio.MemorySendChannel[Pong]] = {}
        self._tun_error: str | None = None
        self._nursery: trio.Nursery | None = None
        self._looking_up: set[str] = set()
        self._names = NameServer(node.dns, interface)

    @classmethod
    def open(cls, mesh: Mesh, identity: Identity, *, state_dir: Path,
             mesh_path: Path | None = None, interface: str = "ws0", offload: bool = True,
             scheduler: str = "wrr", exit_node: str | None = None) -> Agent:
        """Everything an agent holds, opened in order; OSError says what failed (a busy
        port, a missing /dev/net/tun), NotInMesh that our key has no entry,
        ExitChoiceError that `exit_node` offers no exit."""
        me = own_node(mesh, identity)
        if exit_node is not None:
            mesh = choose_exit(mesh, me, exit_node)
            me = own_node(mesh, identity)
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        control.claim(control.socket_path(state_dir))
        with contextlib.ExitStack() as undo:
            cache = CacheWriter.open(state_dir, mesh, me)
            undo.callback(cache.close)
            sockets = Sockets()
            undo.callback(sockets.close)
            paths, backups = sockets.open(me.port, me.interfaces, me.backup_interfaces)
            if me.interfaces or me.backup_interfaces:
                log.info("multipath: sockets on %s%s (scheduler %s)",
                         ", ".join(f"{h}:{p}" for h, p in paths) or "none found",
                         f"; backups {', '.join(f'{h}:{p}' for h, p in sorted(backups))}"
                         if backups else "", scheduler)
            node = Node(mesh, identity, random_bytes=os.urandom, scheduler=scheduler,
                        paths=paths, backup_paths=backups, cached=cache.endpoints,
                        next_self_seq=cache.next_self_seq)
            for sock in [*sockets.default.values(), *sockets.paths.values()]:
                steering.filter_indices(sock, node.engine.index_tag)
            tun = TunDevice.open(interface, offload=offload)
            undo.callback(tun.close)
            exporter = None
            if me.metrics is not None:
                from .metrics import Exporter  # prometheus-client: only when metrics are on

                exporter = Exporter.start(me.metrics.host, me.metrics.port)
                undo.callback(exporter.stop)
                log.info("Prometheus metrics on http://%s/metrics", me.metrics)
            agent = cls(node, mesh_path=mesh_path, state_dir=state_dir, interface=interface,
                        sockets=sockets, tun=tun, cache=cache, exporter=exporter,
                        exit_node=exit_node)
            agent._configure_tun(node.tun_config())
            if agent._tun_error is not None:
                raise OSError(agent._tun_error)
            undo.callback(agent._exit.stop)
            if agent._exit.configure(node.exit_config()) is not None:
                raise OSError(agent._exit.error)
            undo.pop_all()
        return agent

    @property
    def me(self) -> MeshNode:
        return self.node.me

    def close(self) -> None:
        if self._exporter is not None:
            self._exporter.stop()
        self._cache.close()  # writes what is still queued
        self._exit.stop()
        self._tun.close()
        self._sockets.close()

    # ----- serving -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Serve until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._tun_reader)
            for sock in self._sockets.default.values():
                nursery.start_soon(self._udp_reader, sock, None)
            for sock in self._sockets.control.values():
                nursery.start_soon(self._udp_reader, sock, None, _CONTROL_BATCH)
            for local, sock in self._sockets.paths.items():
                nursery.start_soon(self._udp_reader, sock, local)
            nursery.start_soon(self._timer)
            nursery.start_soon(self._cache.run)
            if self._exporter is not None:
                nursery.start_soon(self._exporter.run, self.status)
            await nursery.start(self._watch_addresses)
            await nursery.start(self._names.run)  # it binds once the TUN has its addresses
            gateway = None if self.me.anchor else nat.default_gateway()
            if gateway is not None:  # in the background: start-up never waits for a router
                nursery.start_soon(functools.partial(
                    run_port_mapping, gateway, self.me.port, self._on_mapping))
            await nursery.start(control.serve, control.socket_path(self.state_dir),
                                self._control)
            # TAI64N needs wall time: the node gets it as an offset to trio's clock.
            now = trio.current_time()
            self.node.start(now, time.time() - now)
            self._flush()
            # Logged only now: callers take this line as "serving, and SIGTERM is handled".
            log.info("node %s (%s) up on %s, mtu %d, udp port %d, %d peers, offload %s",
                     self.me.name, fingerprint(self.node.identity.public), self.interface,
                     self._device_mtu, self.me.port, len(self.node.engine.peers),
                     "on" if self._tun.offload else "off")
            # What starting made (modules, the mesh, sockets, tables) lives as long as the
            # agent: out of the collector's generations, so a full collection walks only
            # what came since (under a flood's garbage, those walks held the data path).
            gc.freeze()
            task_status.started()

    async def _tun_reader(self) -> None:
        tun, node = self._tun, self.node
        while True:
            await trio.lowlevel.wait_readable(tun.fileno())
            node.send_packets(tun.read_batch(self._device_mtu, _TUN_BATCH_FRAMES),
                              trio.current_time())
            self._flush()

    async def _udp_reader(self, sock: socket.socket, local: tuple[str, int] | None,
                          max_calls: int = udp.MAX_RECV_CALLS) -> None:
        """Datagrams of one socket; `local` is its address for a path socket, else None.
        `max_calls` bounds a batch: between two, the other readers get their turn."""
        node = self.node
        v6 = sock.family == socket.AF_INET6
        while True:
            await trio.lowlevel.wait_readable(sock)
            batch = udp.recv_batch(sock, _RECV_BATCH_BYTES, max_calls)
            if v6:  # (host, port, flowinfo, scope_id) -> (host, port), as the node keys peers
                batch = [(data, addr[:2]) for data, addr in batch]
            node.receive_datagrams(batch, trio.current_time(), local)
            self._flush()

    async def _timer(self) -> None:
        while True:
            with self._timer_scope:
                await trio.sleep_forever()
            self._timer_scope = trio.CancelScope()
            self.node.handle_timer(trio.current_time())
            self._flush()

    async def _watch_addresses(self, *, task_status: trio.TaskStatus[None]
                               = trio.TASK_STATUS_IGNORED) -> None:
        """Our addresses now, and again after every netlink address event."""
        with addresses.AddressEvents() as events:
            while True:
                found = await trio.to_thread.run_sync(addresses.local_interfaces,
                                                      self.interface)
                self.node.set_interfaces(found, trio.current_time())
                self._flush()
                task_status.started()
                task_status = trio.TASK_STATUS_IGNORED
                await events.wait()

    def _on_mapping(self, mapping: Mapping | None) -> None:
        self.node.set_mapping(mapping, trio.current_time())
        self._flush()

    # ----- the node's outputs ----------------------------------------------------------------

    def _flush(self) -> None:
        node = self.node
        ready = node.datagrams_to_send()
        if ready:
            self._sockets.send(ready, node.engine.drops)
        packets = node.packets_to_deliver()
        if packets:
            self._tun.write_batch(packets)
        effects = node.effects()
        if effects:
            for effect in effects:
                self._carry_out(effect)
            # answering an OS question may have queued more
            self._sockets.send(node.datagrams_to_send(), node.engine.drops)
        deadline = node.next_deadline()
        self._timer_scope.deadline = float("inf") if deadline is None else deadline

    def _carry_out(self, effect: object) -> None:
        match effect:
            case Log(level, message):
                log.log(level, "%s", message)
            case Contact():
                self._cache.record_contact(effect, time.time())
            case StoredRecord():
                if effect.peer_id != self.node.identity.public:
                    self._cache.store_record(effect)
                else:  # ours: only its seq matters, above a seq the mesh sent back
                    self._cache.keep_self_seq(effect.seq)
            case FindRoutes(targets):
                self.node.probe(nat.routes(list(targets)), trio.current_time())
            case Resolve(names):
                for name in names:
                    if name not in self._looking_up and self._nursery is not None:
                        self._looking_up.add(name)
                        self._nursery.start_soon(self._lookup, name)
            case ConfigureTun():
                self._configure_tun(effect)
            case ConfigureExit():
                self._exit.configure(effect)
            case CheckForwarding():
                off = sysctl.forwarding_off()
                self.node.set_forwarding("net.ipv4.ip_forward" not in off,
                                         "net.ipv6.conf.all.forwarding" not in off,
                                         trio.current_time())
            case Pong(nonce):
                waiter = self._pongs.get(nonce)
                if waiter is not None:
                    with contextlib.suppress(trio.WouldBlock):
                        waiter.send_nowait(effect)

    async def _lookup(self, name: str) -> None:
        try:
            addresses, error = await dns.lookup(name)
        finally:
            self._looking_up.discard(name)
        self.node.set_resolved(name, addresses, trio.current_time(), error)
        self._flush()

    def _configure_tun(self, config: ConfigureTun) -> None:
        try:
            self._tun.configure(list(config.addresses), config.routes)
        except OSError as exc:
            self._tun_error = f"configuring {self.interface}: {exc}"
            log.error("%s", self._tun_error)
            return
        self._tun_error = None
        self._names.follow(self.me.addresses, self.node.mesh.suffix)
        self._device_mtu = max(config.routes.values(), default=self.node.mesh.mtu)

    # ----- the control socket ---------------------------------------------------------------

    async def _control(self, req: dict[str, Any]) -> dict[str, Any]:
        match req.get("command"):
            case "hello":
                return {"ok": True}
            case "reload":
                return await self.reload()
            case "status":
                return {"ok": True, "status": self.status()}
            case "ping":
                return await self._ping(str(req.get("peer", "")),
                                        float(req.get("timeout_s", 5.0)))
            case other:
                return {"ok": False, "error": f"unknown command {other!r}"}

    async def reload(self) -> dict[str, Any]:
        """Apply the mesh file anew; a bad file changes nothing (SIGHUP, `whalescale reload`).
        The file is read and parsed in a worker thread: the tunnel never waits for it."""
        if self.mesh_path is None:
            return {"ok": False, "error": "this agent was not started from a mesh file"}
        try:
            mesh = await trio.to_thread.run_sync(load_mesh, self.mesh_path)
            if self.exit_node is not None:
                mesh = choose_exit(mesh, own_node(mesh, self.node.identity), self.exit_node)
            changes = self.node.reload(mesh, trio.current_time())
        except (ConfigError, NotInMesh, ReloadRefused, ExitChoiceError) as exc:
            error = f"{self.mesh_path}: {exc}" if isinstance(exc, ReloadRefused) else str(exc)
            log.error("reload refused, the running mesh stays as it was:\n%s", error)
            return {"ok": False, "error": error}
        except Exception as exc:  # whatever a hostile file does, the node keeps running
            log.exception("reload refused, the running mesh stays as it was: %s", exc)
            return {"ok": False, "error": f"{self.mesh_path}: cannot be applied "
                                          f"({type(exc).__name__}: {exc})"}
        self._cache.follow_mesh(mesh, self.node.me)
        self._flush()
        if self._tun_error is not None or self._exit.error is not None:
            return {"ok": False, "error": self._tun_error or self._exit.error}
        summary = (f"{len(changes.added)} added {changes.added}, "
                   f"{len(changes.removed)} removed {changes.removed}, "
                   f"{len(changes.changed)} changed {changes.changed}, "
                   f"{len(changes.unchanged)} unchanged")
        log.info("reload applied: %s", summary)
        return {"ok": True, "message": f"reload applied: {summary}"}

    def status(self) -> dict[str, Any]:
        report = self.node.status(trio.current_time())
        report |= {"version": version(), "fingerprint": fingerprint(self.node.identity.public),
                   "interface": self.interface, "drops": self.drops()}
        exit_details, exit_warnings = self._exit.status()
        report["exit"] |= exit_details
        report["warnings"] += exit_warnings
        return report

    def drops(self) -> dict[str, int]:
        """Every drop counter: the node's and the TUN's."""
        merged = dict(self.node.engine.drops)
        merged.update((f"tun_{reason}", count) for reason, count in self._tun.drops.items())
        return merged

    async def _ping(self, target: str, timeout_s: float) -> dict[str, Any]:
        """A PING through the session with `target` (a name or a tunnel address); the answer
        names the peer and says which path it came back on."""
        nonce = os.urandom(8)
        send, receive = trio.open_memory_channel[Pong](1)
        self._pongs[nonce] = send
        sent_at = trio.current_time()
        try:
            peer = self.node.ping(target, nonce, sent_at)
            if isinstance(peer, str):
                return {"ok": False, "error": peer}
            self._flush()
            with trio.move_on_after(timeout_s):
                pong = await receive.receive()
                return {"ok": True, "peer": peer.name,
                        "rtt_ms": round((pong.at - sent_at) * 1e3, 3),
                        "endpoint": pong.endpoint, "path": pong.path}
            return {"ok": False, "peer": peer.name,
                    "error": f"no answer from {peer.name} within {timeout_s:g} s"}
        finally:
            del self._pongs[nonce]

