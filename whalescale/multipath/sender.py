"""The sending side of a multipath session: paths, estimator, scheduler, health.

Theory of operation (aioquic's shape):
- `send(packet_len, now)` numbers one data packet: the session counter, the
  path the scheduler picked, that path's seq and the set of paths that may
  still deliver older data (`Send`), or None when no path is usable (counted
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
        self._last_data_at: dict[PathId, float] = {}

    # ----- path set --------------------------------------------------------------
    def add_path(self, path_id: PathId, local: Address, remote: Address, mtu: int,
                 now: float) -> Path:
        path = Path(path_id, local, remote, mtu, created_at=now, params=self.health)
        self.paths[path_id] = path
        self.estimator.add_path(path_id, now)
        return path

    def remove_path(self, path_id: PathId, now: float) -> None:
        self.paths.pop(path_id, None)
        self.estimator.remove_path(path_id)
        self._last_data_at.pop(path_id, None)
        self.scheduler.on_path_state(path_id, PathState.FAILED, now)

    @property
    def mtu(self) -> int | None:
        return tunnel_mtu(self.paths.values())

    # ----- data ----------------------------------------------------------------------
    def send(self, packet_len: int, now: float) -> Send | None:
        path_id = self.scheduler.pick(packet_len, now)
        if path_id is None:
            self.counters["no_usable_path"] += 1
            return None
        counter = self.next_counter
        self.next_counter += 1
        self._last_data_at[path_id] = now
        self.paths[path_id].sent_bytes += packet_len
        return Send(counter, path_id, self.paths[path_id].on_send(now), self._data_paths(now))

    def _data_paths(self, now: float) -> int:
        usable = [p for p in self.paths.values() if p.usable]
        floor = min((p.base_one_way_delay for p in usable if p.base_one_way_delay is not None),
                    default=0.0)
        mask = 0
        for p in usable:
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
            now, frozenset(pid for pid, p in self.paths.items() if p.saturated))
        self._evaluate(now)
        self.scheduler.on_ack(message, now)

    # ----- timers ------------------------------------------------------------------------
    def _evaluate(self, now: float) -> None:
        for path in self.paths.values():
            new = path.evaluate(now)
            if new is None:
                continue
            if new is PathState.FAILED:
                self.estimator.restart_path(path.path_id, now)  # back later at min weight
            self.events.append(PathStateChanged(path.path_id, new, now))
            self.scheduler.on_path_state(path.path_id, new, now)

    def next_deadline(self) -> float:
        deadlines = [p.next_health_deadline() for p in self.paths.values()
                     if p.state is not PathState.FAILED]
        deadlines += [self._heartbeat_due(p) for p in self.paths.values()]
        return min(deadlines, default=float("inf"))

    def _heartbeat_due(self, path: Path) -> float:
        return max(path.last_sent, path.created_at) + self.health.heartbeat_interval_s

    def handle_timer(self, now: float) -> list[Heartbeat]:
        self._evaluate(now)
        due = []
        for path in self.paths.values():
            if now >= self._heartbeat_due(path):
                due.append(Heartbeat(path.path_id, path.on_send(now), self.next_counter))
        return due

    def latency(self) -> tuple[float, float]:
        """(spread, jitter) of the usable paths' one-way delays, for reorder.set_latency."""
        measured = [p for p in self.paths.values() if p.usable and p.srtt is not None]
        if not measured:
            return 0.0, 0.0
        delays = [p.srtt / 2 for p in measured]
        return max(delays) - min(delays), max(p.rttvar for p in measured) / 2
