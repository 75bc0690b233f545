"""One peer's multipath state inside a session: path discovery, path choice, reordering.

Theory of operation (sans-I/O; the session's Peer drives it):
- A node announces its socket addresses (PATH_ANNOUNCE; those of its
  `backup_interfaces` in PATH_ANNOUNCE_BACKUP) when a session comes up. The
  other side probes every same-family pair (its socket, an announced address)
  with PATH_PROBE, answered by PATH_PROBE_REPLY on the same pair; a
  reply makes the pair one of *its* sending paths. Path ids are the sender's.
  A pair with a backup address at either end is a backup path: the scheduler
  uses it only while no other path is usable, and heartbeats keep it measured.
- With two or more usable paths the link is `active`: `route(packets)` gives
  each data packet the path the scheduler picks and a trailer after the inner
  IP packet: `0xA5 | path_id | data_paths u16 | path_seq u32 | mp_seq u32`
  (data_paths: a bit per path that may still deliver older data, sender.py;
  the receiver waits on those paths only). The receiver
  trims by the IP length as always, reads the trailer right after the packet
  and puts packets back in `mp_seq` order in the reorder buffer (a sequence of
  our own: the WireGuard counter restarts at each rekey and is shared with
  keepalives and control messages, which would leave gaps). mp_seq travels as
  its low 32 bits, read back as the value nearest the buffer's position: the
  buffer spans at most 4096 packets, so 32 bits are never ambiguous, and 4
  bytes more of every packet go to the inner flow. Packets for a faster path
  are held by the sender (the steady delay, scheduler.py) and leave from
  `on_timer`; ICMP and pure ACKs (traffic.py) leave at once on the fastest
  path without a trailer, and the receiver delivers them as single-path data.
- Path MTU (packetization-layer PMTU discovery, RFC 8899, in one round): each
  pair gets three probes padded to 1292 bytes of plaintext (IPv6's 1280 plus
  the trailer: the least a session must carry), to the mesh's MTU and to what
  a 1500-byte link allows for its family (1440 over IPv4, 1420 over IPv6).
  Path sockets set DF, so a probe too large is lost rather than fragmented.
  The first reply validates the path; its MTU is the largest probe that came
  back, so a narrow link never black-holes full-size packets. The same round
  runs again every 10 minutes (RFC 8899's PMTU_RAISE_TIMER) and when a path
  comes back from FAILED; when a round ends, the path takes the largest size it
  answered (lower or higher), or keeps its MTU if none came back (then its
  health speaks). `mtu` is the
  session's inner MTU: the minimum over usable paths less the trailer
  (anti-patterns 2.10); the shell puts it on the route to the peer.
- The receiver sends MP_FEEDBACK on each of its paths every 50 ms; the sender
  hears a path, measures its RTT and feeds the estimator from it. Idle paths
  get MP_HEARTBEAT with the sender's next mp_seq, so the receiver knows what
  that path no longer carries. A failed path's gaps are flushed at once.

Everything leaving is an `Outgoing` (plaintexts, local socket, remote): the
peer seals it with the current keypair and queues it.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from collections.abc import Callable

import attrs

from ..wire import control
from ..wire.port import endpoint_text
from . import feedback as fb
from . import traffic
from .paths import PathReceiveStats, PathState
from .reorder import ReorderBuffer, ReorderParams
from .sender import MultipathSender, Sent

Addr = tuple[str, int]
Local = Addr | None  # None: the node's default (wildcard) socket

TRAILER = struct.Struct("<BBHII")
TRAILER_MARKER = 0xA5
TRAILER_SIZE = TRAILER.size
MAX_ANNOUNCED = 8
_NONCE_SIZE = 8  # a PATH_PROBE's body, echoed by its reply
_HEARTBEAT = struct.Struct(">BIQ")
_PROBE_TIMEOUT_S = 2.0  # also the length of a probe round
REPROBE_EVERY_S = 600.0
_MAX_PENDING_PROBES = 96  # 3 a pair (path MTU sizes): 32 pairs at once
_ANNOUNCE_EVERY_S = 1.0
_MAX_ANNOUNCEMENTS = 30
# The link MTU a path is probed for, and what a datagram adds to its plaintext:
# IP + UDP + WireGuard's 16-byte header and 16-byte tag.
PROBED_LINK_MTU = 1500
MIN_PATH_MTU = 1280 + TRAILER_SIZE  # IPv6 traffic inside needs 1280
_OVERHEAD = {4: 20 + 8 + 32, 6: 40 + 8 + 32}
_SEQ32 = 1 << 32


class MalformedPathMessage(ValueError):
    """A path-management body that does not parse; counted and dropped."""


@attrs.frozen(slots=True)
class Outgoing:
    plaintexts: tuple[bytes, ...]
    local: Local
    remote: Addr


def encode_announce(addrs: list[Addr]) -> bytes:
    out = [bytes((len(addrs),))]
    for host, port in addrs[:MAX_ANNOUNCED]:
        ip = ipaddress.ip_address(host)
        out.append(bytes((ip.version,)) + ip.packed + port.to_bytes(2, "big"))
    return b"".join(out)


def decode_announce(body: bytes) -> list[Addr]:
    if not body or body[0] > MAX_ANNOUNCED:
        raise MalformedPathMessage("announce: bad count")
    addrs, offset = [], 1
    for _ in range(body[0]):
        if offset >= len(body) or body[offset] not in (4, 6):
            raise MalformedPathMessage("announce: bad family")
        size = 4 if body[offset] == 4 else 16
        end = offset + 1 + size + 2
        if end > len(body):
            raise MalformedPathMessage("announce: truncated")
        host = str(ipaddress.ip_address(body[offset + 1 : offset + 1 + size]))
        port = int.from_bytes(body[end - 2 : end], "big")
        if port == 0:
            raise MalformedPathMessage("announce: port 0")
        addrs.append((host, port))
        offset = end
    if offset != len(body):
        raise MalformedPathMessage("announce: trailing bytes")
    return addrs


def _family(host: str) -> int:
    return 6 if ":" in host else 4


def unwrap32(low: int, near: int) -> int:
    """The integer with low 32 bits `low` nearest to `near` (serial arithmetic)."""
    delta = (low - near) % _SEQ32
    return near + delta - (_SEQ32 if delta >= _SEQ32 // 2 else 0)


class MultipathLink:
    def __init__(self, local_addrs: list[Addr], *, scheduler: str, now: float,
                 random_bytes: Callable[[int], bytes], base_mtu: Callable[[], int],
                 backup_addrs: frozenset[Addr] = frozenset()) -> None:
        self.local_addrs = list(local_addrs)
        self.backup_addrs = backup_addrs  # of local_addrs: used only while others fail
        self._base_mtu = base_mtu  # plaintext bytes any path is assumed to carry
        self.sender = MultipathSender(now, scheduler)
        self.reorder = ReorderBuffer(ReorderParams())
        self.received: dict[int, PathReceiveStats] = {}  # by the peer's path id
        self.counters: Counter[str] = Counter()
        self._random_bytes = random_bytes
        self._pair_of: dict[int, tuple[Local, Addr]] = {}  # our path id -> (local, remote)
        self._path_of: dict[tuple[Local, Addr], int] = {}
        # nonce -> (local, remote, sent at, plaintext size)
        self._probes: dict[bytes, tuple[Local, Addr, float, int]] = {}
        self._remotes: set[Addr] = set()
        self._remote_backups: set[Addr] = set()  # what the peer announced as backups
        self._standby_feedback_at: dict[int, float] = {}
        # probe rounds: pair -> (when it ends, the largest size answered so far)
        self._rounds: dict[tuple[Local, Addr], tuple[float, int]] = {}
        self._reprobe_at: dict[int, float] = {}  # by our path id
        self._failed: set[int] = set()
        # Interfaces gone at either end (down, or their address removed): ours as the
        # host's netlink says, the peer's as its latest announcement leaves them out.
        self._gone_locals: frozenset[Addr] = frozenset()
        self._gone_remotes: set[Addr] = set()
        self._announced: dict[bool, set[Addr]] = {False: set(), True: set()}  # by backup
        self._next_feedback = now
        # Announcements are repeated until the peer shows (by its heartbeats and data)
        # that it found a path to each of our addresses: the first may be lost while
        # crossing handshakes settle.
        self._announce_at: float | None = None
        self._announcements = 0

    # ----- state -------------------------------------------------------------
    @property
    def active(self) -> bool:
        return sum(1 for p in self.sender.paths.values() if p.usable) >= 2

    @property
    def routing(self) -> bool:
        """Data goes over our paths while any is usable (one path: no waiting for none)."""
        return any(p.usable for p in self.sender.paths.values())

    def usable_remote(self, current: Addr | None) -> Addr | None:
        """Where single-path traffic (keepalives, control) should go: `current` unless it
        is a path of ours that is no longer usable; then the usable path's remote."""
        usable = {self._pair_of[i][1] for i, p in self.sender.paths.items() if p.usable}
        if current is None or current not in self._remotes or current in usable:
            return current
        return min(usable, default=current)

    @property
    def mtu(self) -> int | None:
        """The largest inner packet every usable path carries with its trailer; None
        while the link does not route."""
        paths = self.sender.mtu
        return None if paths is None else paths - TRAILER_SIZE

    def knows_remote(self, addr: Addr) -> bool:
        """A remote address of one of our paths: packets from it are no roaming."""
        return addr in self._remotes

    # ----- discovery ---------------------------------------------------------
    def announce(self, endpoint: Addr, now: float) -> list[Outgoing]:
        """Our addresses that are there now, per kind; a kind whose addresses are all
        gone is announced empty, so the peer stops using them at once."""
        if not self.local_addrs:
            return []
        self._announcements += 1
        self._announce_at = now + _ANNOUNCE_EVERY_S
        out = []
        for kind, backup in ((control.Kind.PATH_ANNOUNCE, False),
                             (control.Kind.PATH_ANNOUNCE_BACKUP, True)):
            ours = [a for a in self.local_addrs if (a in self.backup_addrs) is backup]
            if ours:
                addrs = [a for a in ours if a not in self._gone_locals]
                body = control.encode(kind, encode_announce(addrs))
                out.append(Outgoing((body,), None, endpoint))
        return out

    def set_gone_locals(self, gone: frozenset[Addr], endpoint: Addr | None,
                        now: float) -> list[Outgoing]:
        """Our addresses whose interface is down or lost them: their paths fail at the
        next timer rather than after their report timeout, and the peer is told by an
        announcement without them (a previous release ignores what is left out and
        finds those paths dead by their timeouts, as before)."""
        if gone == self._gone_locals:
            return []
        self._gone_locals = gone
        self._mark_gone()
        self._announcements = 0
        return [] if endpoint is None else self.announce(endpoint, now)

    def _mark_gone(self) -> None:
        for path_id, (local, remote) in self._pair_of.items():
            self.sender.paths[path_id].gone = (local in self._gone_locals
                                               or remote in self._gone_remotes)

    def _peer_has_our_paths(self) -> bool:
        return len(self.received) >= len(set(self.local_addrs) - self._gone_locals)

    def on_announce(self, body: bytes, now: float, backup: bool = False) -> list[Outgoing]:
        """The peer's addresses (`backup`: those it uses only while the others fail)."""
        try:
            remotes = decode_announce(body)
        except MalformedPathMessage:
            self.counters["malformed_announce"] += 1
            return []
        if backup:
            self._remote_backups.update(remotes)
        self._gone_remotes |= self._announced[backup] - set(remotes)
        self._gone_remotes -= set(remotes)
        self._announced[backup] = set(remotes)
        self._mark_gone()
        locals_: list[Local] = list(self.local_addrs) or [None]
        out = []
        for remote in sorted(remotes, key=lambda addr: _family(addr[0]) == 4):  # IPv6 first
            for local in locals_:
                if local is not None and _family(local[0]) != _family(remote[0]):
                    continue
                if (local, remote) not in self._path_of:
                    out += self._probe_round(local, remote, now)
        return out

    def _probe_round(self, local: Local, remote: Addr, now: float) -> list[Outgoing]:
        """The probe sizes for one pair, at once; the round ends a probe timeout later."""
        if len(self._probes) >= _MAX_PENDING_PROBES:
            return []
        largest = PROBED_LINK_MTU - _OVERHEAD[_family(remote[0])]
        self._rounds[(local, remote)] = (now + _PROBE_TIMEOUT_S, 0)
        return [self._probe(local, remote, size, now)
                for size in sorted({MIN_PATH_MTU, self._base_mtu(), largest})]

    def _probe(self, local: Local, remote: Addr, size: int, now: float) -> Outgoing:
        """A PATH_PROBE padded to `size` bytes of plaintext (zeros after the body, as
        WireGuard's own padding: the receiver reads it as any control message)."""
        nonce = self._random_bytes(_NONCE_SIZE)
        self._probes[nonce] = (local, remote, now, size)
        probe = control.encode(control.Kind.PATH_PROBE, nonce)
        return Outgoing((probe.ljust(size, b"\0"),), local, remote)

    def on_probe(self, body: bytes, local: Local, remote: Addr) -> list[Outgoing]:
        if len(body) != _NONCE_SIZE:
            self.counters["malformed_probe"] += 1
            return []
        reply = control.encode(control.Kind.PATH_PROBE_REPLY, body)
        return [Outgoing((reply,), local, remote)]

    def on_probe_reply(self, body: bytes, local: Local, remote: Addr, now: float) -> None:
        sent = self._probes.pop(body, None)
        if sent is None or (sent[0], sent[1]) != (local, remote):
            self.counters["unexpected_probe_reply"] += 1
            return
        size = sent[3]
        if (local, remote) in self._rounds:
            ends, best = self._rounds[(local, remote)]
            self._rounds[(local, remote)] = (ends, max(best, size))
        if (local, remote) in self._path_of:
            # another probe of this round, or a new round: larger now shows at once
            path = self.sender.paths[self._path_of[(local, remote)]]
            path.mtu = max(path.mtu, size)
            return
        if len(self._pair_of) >= fb.MAX_PATHS:
            self.counters["too_many_paths"] += 1
            return
        path_id = len(self._pair_of)
        self._pair_of[path_id] = (local, remote)
        self._path_of[(local, remote)] = path_id
        self._remotes.add(remote)
        backup = local in self.backup_addrs or remote in self._remote_backups
        path = self.sender.add_path(path_id, local or ("", 0), remote, size, now, backup)
        path.gone = local in self._gone_locals or remote in self._gone_remotes
        self._reprobe_at[path_id] = now + REPROBE_EVERY_S
        path.on_rtt_sample(now - sent[2])
        path.on_heard(now)
        self.reorder.set_latency(*self.sender.latency())

    # ----- data ----------------------------------------------------------------
    def route(self, packets: list[bytes], now: float) -> list[Outgoing]:
        """A path and a trailer for each data packet; runs per path keep their order.
        Packets the sender holds (the steady delay, scheduler.py) leave from `on_timer`."""
        sent: list[Sent] = []
        prompt: list[bytes] = []
        for packet in packets:
            if traffic.prompt(packet):
                prompt.append(packet)
            else:
                sent += self.sender.send(packet, len(packet), now)
        out = self._with_trailers(sent)
        fastest = self.sender.scheduler.fastest_usable(now) if prompt else None
        if fastest is not None:
            # No trailer: the receiver delivers them at once, ahead of any gap.
            out.append(Outgoing(tuple(prompt), *self._pair_of[fastest]))
        return out

    def _with_trailers(self, sent: list[Sent]) -> list[Outgoing]:
        by_path: dict[int, list[bytes]] = {}
        for s in sent:
            trailer = TRAILER.pack(TRAILER_MARKER, s.send.path_id, s.send.data_paths,
                                   s.send.path_seq % _SEQ32, s.send.counter % _SEQ32)
            by_path.setdefault(s.send.path_id, []).append(s.item + trailer)  # type: ignore[operator]
        return [Outgoing(tuple(plain), *self._pair_of[path_id])
                for path_id, plain in by_path.items()]

    def on_data(self, packet: bytes, trailer: bytes, now: float) -> list[bytes]:
        """A data packet with its trailer; the packets now released in order."""
        _, path_id, data_paths, path_seq, mp_seq = TRAILER.unpack(trailer)
        stats = self.received.setdefault(path_id, PathReceiveStats())
        stats.on_packet(path_seq, len(packet), now)
        counter = unwrap32(mp_seq, self.reorder.next_counter)
        return self.reorder.push(counter, path_id, path_seq, packet, now,  # type: ignore[return-value]
                                 data_paths, len(packet))

    def on_heartbeat(self, body: bytes, now: float) -> list[bytes]:
        if len(body) != _HEARTBEAT.size:
            self.counters["malformed_heartbeat"] += 1
            return []
        path_id, path_seq, mark = _HEARTBEAT.unpack(body)
        self.received.setdefault(path_id, PathReceiveStats()).on_packet(path_seq, 0, now)
        return self.reorder.heartbeat(path_id, path_seq, mark, now)  # type: ignore[return-value]

    def on_feedback(self, body: bytes, local: Local, remote: Addr, now: float) -> None:
        path_id = self._path_of.get((local, remote))
        if path_id is None:
            self.counters["feedback_on_unknown_path"] += 1
            return
        self.sender.on_feedback(body, path_id, now)
        self.reorder.set_latency(*self.sender.latency())

    # ----- time ------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        deadlines = [self.sender.next_deadline(), self._next_feedback if self.received else None,
                     self.reorder.next_deadline(), self._announce_at,
                     min((ends for ends, _ in self._rounds.values()), default=None),
                     min(self._reprobe_at.values(), default=None)]
        return min((d for d in deadlines if d is not None and d != float("inf")), default=None)

    def on_timer(self, now: float, endpoint: Addr | None) -> tuple[list[Outgoing], list[bytes]]:
        out: list[Outgoing] = []
        if self._announce_at is not None and now >= self._announce_at:
            self._announce_at = None
            if (endpoint is not None and not self._peer_has_our_paths()
                    and self._announcements < _MAX_ANNOUNCEMENTS):
                out += self.announce(endpoint, now)
        for beat in self.sender.handle_timer(now):
            body = _HEARTBEAT.pack(beat.path_id, beat.path_seq & 0xFFFFFFFF, beat.counter_mark)
            out.append(Outgoing((control.encode(control.Kind.MP_HEARTBEAT, body),),
                                *self._pair_of[beat.path_id]))
        for event in self.sender.events:
            if event.state is PathState.FAILED:
                self.counters["path_failed"] += 1
                self._failed.add(event.path_id)
            elif event.path_id in self._failed:  # back: the way it takes may have changed
                self._failed.discard(event.path_id)
                self._reprobe_at[event.path_id] = now
        self.sender.events.clear()
        out += self._with_trailers(self.sender.release(now))
        out += self._path_mtus(now)
        if self.received and now >= self._next_feedback:
            self._next_feedback = now + fb.FEEDBACK_INTERVAL_S
            out += self._feedback(now)
        for nonce in [n for n, (_, _, t, _) in self._probes.items()
                      if now - t > _PROBE_TIMEOUT_S]:
            del self._probes[nonce]
            self.counters["probe_timed_out"] += 1
        return out, self.reorder.handle_timer(now)  # type: ignore[return-value]

    def _path_mtus(self, now: float) -> list[Outgoing]:
        """End the probe rounds that are over; start the re-probes that are due."""
        for pair, (ends, best) in list(self._rounds.items()):
            if now < ends:
                continue
            del self._rounds[pair]
            path_id = self._path_of.get(pair)
            if path_id is not None and best:
                path = self.sender.paths[path_id]
                if best < path.mtu:
                    self.counters["path_mtu_lowered"] += 1
                path.mtu = best
        out = []
        for path_id, due in list(self._reprobe_at.items()):
            if now >= due:
                self._reprobe_at[path_id] = now + REPROBE_EVERY_S
                out += self._probe_round(*self._pair_of[path_id], now)
        return out

    def _feedback(self, now: float) -> list[Outgoing]:
        reports = tuple(
            fb.PathReport(path_id, s.packets, s.bytes, s.highest_seq, s.lost,
                          max(0.0, now - s.highest_seq_at) if s.highest_seq >= 0 else 0.0)
            for path_id, s in sorted(self.received.items())[: fb.MAX_PATHS])
        body = control.encode(control.Kind.MP_FEEDBACK, fb.encode(fb.Feedback(reports)))
        # On every path of ours, so that the sender hears each of its own; a backup on
        # standby only as often as its heartbeats (a metered link).
        out = []
        for path_id, pair in self._pair_of.items():
            path = self.sender.paths[path_id]
            if path.standby:
                if now < self._standby_feedback_at.get(path_id, 0.0):
                    continue
                self._standby_feedback_at[path_id] = now + path.interval_s
            out.append(Outgoing((body,), *pair))
        return out

    # ----- status -----------------------------------------------------------------
    def status(self, scheduler: str) -> dict[str, object]:
        weights = self.sender.estimator.weights()
        stats = self.reorder.stats
        return {
            "scheduler": scheduler,
            "active": self.active,
            "mtu": self.mtu,
            "paths": [{
                "id": path_id, "local": endpoint_text(local) if local else "default",
                "remote": endpoint_text(remote),  # [host]:port for IPv6, as everywhere
                "state": self.sender.paths[path_id].state.value,
                "backup": self.sender.paths[path_id].backup,
                "weight": round(weights.get(path_id, 0.0)),
                "srtt_ms": (round(self.sender.paths[path_id].srtt * 1e3, 2)
                            if self.sender.paths[path_id].srtt is not None else None),
                "min_rtt_ms": (round(self.sender.paths[path_id].min_rtt * 1e3, 2)
                               if self.sender.paths[path_id].min_rtt is not None else None),
                "loss": round(self.sender.paths[path_id].loss_rate, 4),
                "mtu": self.sender.paths[path_id].mtu,
                "tx_packets": self.sender.paths[path_id].send_seq,
                "tx_bytes": self.sender.paths[path_id].sent_bytes,
                "rx_packets": self.received[path_id].packets if path_id in self.received else 0,
                "rx_bytes": self.received[path_id].bytes if path_id in self.received else 0,
            } for path_id, (local, remote) in sorted(self._pair_of.items())],
            "reorder": {
                "held": self.reorder.depth,  # packets waiting for a gap to fill, now
                "released": stats.released, "gaps_skipped": stats.gaps_skipped,
                "skipped_by": dict(stats.skipped_by),
                "late_drops": stats.late_drops, "duplicates": stats.duplicates,
                "max_depth": stats.max_depth,
                "added_delay_mean_ms": round(stats.added_delay_mean_s * 1e3, 3),
                "added_delay_max_ms": round(stats.added_delay_max_s * 1e3, 3),
            },
            "counters": dict(self.counters) | dict(self.sender.counters),
        }
