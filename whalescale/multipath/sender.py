"""The sending side of a multipath session: paths, estimator, scheduler, health.

Theory of operation (aioquic's shape):
- `send(item, packet_len, now)` routes one data packet: the scheduler picks
  its path and how long it is held (scheduler.py, the steady delay), and it
  takes the session counter (the order packets came in, which the receiver
  restores). A held packet waits in the delay line (delayline.py) and comes
  out of `release(now)` at `next_deadline()`; one not held leaves at once.
  What leaves is a `Sent`: the item and its `Send` (the counter, the path,
  that path's seq and the set of paths that may still deliver older data).
  The per-path seq is taken on the wire, so RTT samples measure the path, not
  the hold, and each path is FIFO in counter order (a path's held packets
  leave in the order they came). No usable path: nothing is sent (counted
  under `no_usable_path`). A usable path stays in that set while its last data
  packet may not have arrived yet: for as long as that packet's one-way delay
  (srtt / 2 + 2 rttvar, RFC 6298's margin halved) exceeds the fastest path's
  base delay, plus `HOLDOVER_MARGIN_S`.
- `on_feedback(data, arrived_on, now)` takes an encoded feedback message:
  per-path reports update loss, ACKed bytes (estimator) and, for the path it
  came on, the RTT; malformed or unknown ones are counted, never raised.
- `handle_timer(now)` at `next_deadline()` re-evaluates path health and returns
  the heartbeats due (`Heartbeat`: a path idle for a heartbeat interval gets
  one, so an unused path stays measured and the receiver learns what it no
  longer carries); state changes are in `events`.
- `latency()` gives (spread, jitter) for the local reorder buffer.

The session counter here stands for the WireGuard transport counter of the
current keypair; on integration the engine numbers packets and this numbers
paths. Nothing reads a clock, nothing draws randomness.
"""

from __future__ import annotations

from collections import Counter

import attrs

from . import feedback as fb
from .delayline import DelayLine
from .estimator import BandwidthEstimator, EstimatorParams
from .paths import Address, HealthParams, Path, PathId, PathState, tunnel_mtu
from .scheduler import SCHEDULERS, SchedulerParams


@attrs.frozen(slots=True)
class Send:
    counter: int
    path_id: PathId
    path_seq: int
    # Bit i set: path i may still deliver data numbered below `counter`. A clear bit
    # tells the receiver that path owes it nothing older (reorder.py), so a path the
    # scheduler leaves idle, or one that failed, never holds a gap open.
    data_paths: int


# Implementation: slack on the holdover of a path's last data packet. A queue builds
# within an RTT, faster than srtt follows: with 5 ms the simulation's equal paths
# saw late drops (a gap taken for lost while its packet was still queued), with 20 none.
HOLDOVER_MARGIN_S = 0.02


@attrs.frozen(slots=True)
class Sent:
    send: Send
    item: object


# Implementation: held packets due this soon leave with those due now, so that a busy
# path wakes the shell about once per this interval, not once per packet (the receiver's
# 2 ms base wait absorbs the difference).
RELEASE_EARLY_S = 0.0005


@attrs.frozen(slots=True)
class Heartbeat:
    path_id: PathId
    path_seq: int
    counter_mark: int  # the next counter: all data this path carried is below it


@attrs.frozen(slots=True)
class PathStateChanged:
    path_id: PathId
    state: PathState
    at: float


class MultipathSender:
    def __init__(self, now: float, scheduler: str = "wrr",
                 health: HealthParams | None = None,
                 estimator: EstimatorParams | None = None,
                 scheduling: SchedulerParams | None = None,
                 first_counter: int = 0) -> None:
        self.health = health or HealthParams()
        self.paths: dict[PathId, Path] = {}
        self.estimator = BandwidthEstimator(estimator or EstimatorParams())
        self.scheduler = SCHEDULERS[scheduler](self.paths, self.estimator,
                                               scheduling or SchedulerParams())
        self.next_counter = first_counter
        self.counters: Counter[str] = Counter()
        self.events: list[PathStateChanged] = []
        self.delay_line = DelayLine()
        self._last_data_at: dict[PathId, float] = {}

    # ----- path set --------------------------------------------------------------
    def add_path(self, path_id: PathId, local: Address, remote: Address, mtu: int,
                 now: float, backup: bool = False) -> Path:
        path = Path(path_id, local, remote, mtu, created_at=now, params=self.health,
                    backup=backup)
        path.standby = backup and any(p.usable and not p.backup for p in self.paths.values())
        self.paths[path_id] = path
        self.estimator.add_path(path_id, now)
        return path

    @property
    def mtu(self) -> int | None:
        return tunnel_mtu(self.paths.values())

    # ----- data ----------------------------------------------------------------------
    def send(self, item: object, packet_len: int, now: float) -> list[Sent]:
        """Route one data packet: [] while it is held (or no path is usable), else it,
        sent now. Its counter is taken now, in the order packets come."""
        picked = self.scheduler.pick(packet_len, now)
        if picked is None:
            self.counters["no_usable_path"] += 1
            return []
        path_id, hold = picked
        counter = self.next_counter
        self.next_counter += 1
        # A packet that needs no hold still queues behind its path's held ones (the
        # hold target moved): a path carries its packets in counter order.
        if hold or self.delay_line.waiting(path_id):
            if self.delay_line.push(path_id, counter, item, packet_len, now + hold):
                return []
            self.counters["delay_line_full"] += 1
        return [Sent(self._on_wire(counter, path_id, packet_len, now), item)]

    def release(self, now: float) -> list[Sent]:
        """The held packets that are due, sent now; one whose path is no longer usable
        goes on the path the scheduler picks now, without a hold."""
        out = []
        for held in self.delay_line.due(now + RELEASE_EARLY_S):
            path_id = held.path_id
            if path_id not in self.paths or not self.paths[path_id].usable:
                picked = self.scheduler.pick(held.nbytes, now)
                if picked is None:
                    self.counters["no_usable_path"] += 1
                    continue
                path_id = picked[0]
            out.append(Sent(self._on_wire(held.counter, path_id, held.nbytes, now), held.item))
        return out

    def _on_wire(self, counter: int, path_id: PathId, packet_len: int, now: float) -> Send:
        """A packet leaves on its path: its per-path seq and the data_paths it carries."""
        self._last_data_at[path_id] = now
        path = self.paths[path_id]
        path.sent_bytes += packet_len
        return Send(counter, path_id, path.on_send(now), self._data_paths(now))

    def _data_paths(self, now: float) -> int:
        usable = [p for p in self.paths.values() if p.usable]
        floor = min((p.base_one_way_delay for p in usable if p.base_one_way_delay is not None),
                    default=0.0)
        mask = 0
        for p in usable:
            if self.delay_line.waiting(p.path_id):  # its held packets are still to come
                mask |= 1 << p.path_id
                continue
            sent_at = self._last_data_at.get(p.path_id)
            if sent_at is None:
                continue
            arrives_within = (float("inf") if p.srtt is None
                              else p.srtt / 2 + 2 * p.rttvar - floor + HOLDOVER_MARGIN_S)
            if now - sent_at <= arrives_within:
                mask |= 1 << p.path_id
        return mask

    # ----- feedback --------------------------------------------------------------------
    def on_feedback(self, data: bytes, arrived_on: PathId, now: float) -> None:
        try:
            message = fb.decode(data)
        except fb.MalformedFeedback:
            self.counters["feedback_malformed"] += 1
            return
        for report in message.reports:
            path = self.paths.get(report.path_id)
            if path is None:
                self.counters["feedback_unknown_path"] += 1
                continue
            acked = path.on_report(report.packets, report.bytes, report.lost, now,
                                   report.highest_seq)
            self.estimator.on_acked(report.path_id, acked, now)
            if report.path_id == arrived_on:
                path.on_heard(now)
                sent = path.sent_time(report.highest_seq)
                if sent is not None:
                    path.on_rtt_sample(now - sent - report.echo_delay_s)
        self.estimator.update(
            now, frozenset(pid for pid, p in self.paths.items() if p.saturated),
            {pid: p.sent_bytes for pid, p in self.paths.items()})
        self._evaluate(now)
        self.scheduler.on_ack(message, now)

    # ----- timers ------------------------------------------------------------------------
    def _evaluate(self, now: float) -> None:
        for path in self.paths.values():
            before = path.state
            new = path.evaluate(now)
            if new is None:
                continue
            if new is PathState.FAILED:
                self.delay_line.expedite(path.path_id, now)  # sent on another path now
            elif before is PathState.FAILED:
                self.estimator.restart_path(path.path_id, now)
            if PathState.FAILED in (before, new):
                self.scheduler.on_usable_changed(now)
            self.events.append(PathStateChanged(path.path_id, new, now))
            self.scheduler.on_path_state(path.path_id, new, now)
        # Backups are watched slowly while another path works, closely while in use.
        primary = any(p.usable and not p.backup for p in self.paths.values())
        for path in self.paths.values():
            path.standby = path.backup and primary

    def next_deadline(self) -> float:
        deadlines = [p.next_health_deadline() for p in self.paths.values()
                     if p.state is not PathState.FAILED]
        deadlines += [self._heartbeat_due(p) for p in self.paths.values()]
        held = self.delay_line.next_deadline()
        if held is not None:
            deadlines.append(held)
        return min(deadlines, default=float("inf"))

    def _heartbeat_due(self, path: Path) -> float:
        return max(path.last_sent, path.created_at) + path.interval_s

    def handle_timer(self, now: float) -> list[Heartbeat]:
        self._evaluate(now)
        due = []
        for path in self.paths.values():
            if now >= self._heartbeat_due(path):
                # what the path carried is below the mark; its held packets are not yet
                held = self.delay_line.first_counter(path.path_id)
                mark = self.next_counter if held is None else held
                due.append(Heartbeat(path.path_id, path.on_send(now), mark))
        return due

    def latency(self) -> tuple[float, float]:
        """(spread, jitter) of the usable paths' one-way delays, for reorder.set_latency."""
        measured = [p for p in self.paths.values() if p.usable and p.srtt is not None]
        if not measured:
            return 0.0, 0.0
        delays = [p.srtt / 2 for p in measured]
        return max(delays) - min(delays), max(p.rttvar for p in measured) / 2
