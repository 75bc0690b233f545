"""A path of a multipath session: addresses, MTU, health, RTT, loss, per-path seq.

A path is one 4-tuple (local, remote); all paths of a peer share the session's
Noise keys and its global 64-bit counter. Each path also numbers its own
packets (`send_seq`, from 0): the per-path sequence tells the receiver which
path lost what (a single global sequence cannot: MLVPN #121, Glorytun #98) and
gives the sender a per-path RTT from the feedback's echo.

Health (multipath brief: healthy / degraded / failed -> full / reduced weight /
removed) is a state machine whose moves are all in `TRANSITIONS`; `evaluate(now)`
turns the measurements into one event at a time:

- SILENT: nothing heard on the path (feedback, heartbeat reply, data) for
  `fail_after_intervals` heartbeat intervals, or the oldest packet sent on it
  that the receiver has not reported is older than the path's report timeout
  (srtt + 4 rttvar + `report_slack_s`, at least `report_timeout_min_s`, as an
  RTO per path) -> FAILED. The second rule finds a loaded path dead in about
  0.2 s: every packet it drops then is a hole in the inner flow. A path whose
  interface at either end is `gone` (that host's netlink said so) is SILENT at
  once: no packet is sent into it to find out;
- BAD: loss rate above `degrade_loss`, or silent for `degrade_after_intervals`
  -> DEGRADED;
- GOOD: loss rate below `recover_loss` (hysteresis: between the two nothing
  moves) and heard within one interval -> HEALTHY;
- HEARD: a FAILED path heard from again comes back DEGRADED and must prove GOOD;
  it forgets its loss rate, which the outage itself had filled (every packet
  sent into it reported lost at once): the outage is what FAILED accounted
  for, and carried on it kept a recovered path cut to nothing for seconds.

Delay is deliberately not a health input: queueing under load raises the RTT of
a perfectly good path. Delay acts on scheduling (scheduler.py) instead.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Hashable, Iterable

import attrs

PathId = int  # one byte on the wire (feedback.py)
Address = tuple[Hashable, ...]  # opaque to this layer: (ip, port) in practice


class PathState(enum.Enum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILED = "failed"


class PathEvent(enum.Enum):
    GOOD = "good"
    BAD = "bad"
    SILENT = "silent"
    HEARD = "heard"


class PathStateError(Exception):
    """An event that has no move from the path's state."""


TRANSITIONS: dict[tuple[PathState, PathEvent], PathState] = {
    (PathState.HEALTHY, PathEvent.GOOD): PathState.HEALTHY,
    (PathState.HEALTHY, PathEvent.BAD): PathState.DEGRADED,
    (PathState.HEALTHY, PathEvent.SILENT): PathState.FAILED,
    (PathState.DEGRADED, PathEvent.GOOD): PathState.HEALTHY,
    (PathState.DEGRADED, PathEvent.BAD): PathState.DEGRADED,
    (PathState.DEGRADED, PathEvent.SILENT): PathState.FAILED,
    (PathState.FAILED, PathEvent.SILENT): PathState.FAILED,
    (PathState.FAILED, PathEvent.HEARD): PathState.DEGRADED,
}


@attrs.frozen(slots=True)
class HealthParams:
    heartbeat_interval_s: float = 0.1  # a heartbeat goes out on a path idle this long
    # A backup path on standby (others usable) is watched this much more slowly: at
    # 2 s it costs ~150 bytes/s each way (heartbeats + feedback), not ~4 kB/s.
    standby_factor: float = 20.0
    degrade_after_intervals: float = 2.0
    fail_after_intervals: float = 4.0  # 0.4 s for a path that carries only heartbeats
    # A path with packets out fails once the oldest is unreported for srtt + 4 rttvar +
    # report_slack_s (reports come every feedback.FEEDBACK_INTERVAL_S, so up to one
    # interval late, plus scheduling noise), never sooner than report_timeout_min_s:
    # a lost last packet before an idle spell is answered only via the next heartbeat,
    # one heartbeat interval later.
    report_slack_s: float = 0.1
    report_timeout_min_s: float = 0.2
    degrade_loss: float = 0.05
    recover_loss: float = 0.02
    loss_gain: float = 1 / 8  # EWMA gain per feedback report
    # The scheduler's loss (scheduler.py) over ~2 s of reports: a path's own loss stays,
    # congestion's moves from one saturated path to the other and averages out.
    steady_loss_gain: float = 1 / 40
    # RFC 6298 gains; the first sample sets srtt = rtt, rttvar = rtt / 2.
    rtt_alpha: float = 1 / 8
    rtt_beta: float = 1 / 4


# Implementation: send times are kept for the last this many per-path seqs.
_SENT_TIMES_KEPT = 4096
# A path is saturated (estimator.py: it ends the path's slow start) past these: loss,
# or srtt above min_rtt by the larger of the two.
SATURATED_LOSS = 0.01
SATURATED_QUEUE_S = 0.01
SATURATED_QUEUE_SHARE = 0.25


@attrs.define(eq=False)
class PathReceiveStats:
    """What the receiving end counts for one path (reported in feedback.py)."""

    packets: int = 0
    bytes: int = 0
    highest_seq: int = -1
    highest_seq_at: float = 0.0  # when highest_seq arrived (for the echo delay)

    @property
    def lost(self) -> int:
        # Paths are FIFO: every seq below the highest that has not come is lost.
        return max(0, self.highest_seq + 1 - self.packets)

    def on_packet(self, path_seq: int, nbytes: int, now: float) -> bool:
        """Count one arrival; False for a seq already passed (a duplicate or reordered)."""
        self.packets += 1
        self.bytes += nbytes
        if path_seq > self.highest_seq:
            self.highest_seq = path_seq
            self.highest_seq_at = now
            return True
        return False


@attrs.define(eq=False)
class Path:
    path_id: PathId
    local: Address
    remote: Address
    mtu: int
    created_at: float
    params: HealthParams = HealthParams()
    # Used only while no other path is usable (a metered link); its health is still
    # watched (heartbeats), so it takes over as soon as the others fail.
    backup: bool = False
    standby: bool = False  # a backup while another path is usable (sender.py sets it)
    gone: bool = False  # an end's interface is down or lost its address (link.py sets it)
    state: PathState = PathState.HEALTHY
    srtt: float | None = None
    rttvar: float = 0.0
    min_rtt: float | None = None
    loss_rate: float = 0.0  # health: a few reports' worth
    steady_loss: float = 0.0  # scheduling: the path's own loss, over seconds
    last_heard: float = attrs.field(default=None)
    last_sent: float = -1.0
    send_seq: int = 0  # the next per-path seq to send
    sent_bytes: int = 0  # inner bytes of the data packets sent
    receive: PathReceiveStats = attrs.Factory(PathReceiveStats)
    _sent_times: deque[float] = attrs.Factory(deque)
    _sent_base: int = 0  # per-path seq of _sent_times[0]
    # Cumulative counters from the last feedback, to take deltas.
    _acked_packets: int = 0
    _acked_bytes: int = 0
    _acked_lost: int = 0
    _reported_seq: int = -1  # the highest per-path seq the receiver reported

    def __attrs_post_init__(self) -> None:
        if self.last_heard is None:
            self.last_heard = self.created_at

    # ----- sending ------------------------------------------------------------
    def on_send(self, now: float) -> int:
        """Number one packet (data or heartbeat) for this path; returns its seq."""
        seq = self.send_seq
        self.send_seq += 1
        self.last_sent = now
        self._sent_times.append(now)
        if len(self._sent_times) > _SENT_TIMES_KEPT:
            self._sent_times.popleft()
            self._sent_base += 1
        return seq

    def sent_time(self, seq: int) -> float | None:
        i = seq - self._sent_base
        return self._sent_times[i] if 0 <= i < len(self._sent_times) else None

    # ----- what the other end reports ------------------------------------------
    def on_rtt_sample(self, rtt: float) -> None:
        """RFC 6298 §2 smoothing; min_rtt is the path's base (propagation) delay."""
        rtt = max(rtt, 1e-6)
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            p = self.params
            self.rttvar = (1 - p.rtt_beta) * self.rttvar + p.rtt_beta * abs(self.srtt - rtt)
            self.srtt = (1 - p.rtt_alpha) * self.srtt + p.rtt_alpha * rtt
        self.min_rtt = rtt if self.min_rtt is None else min(self.min_rtt, rtt)

    def on_report(self, packets: int, nbytes: int, lost: int, now: float,
                  highest_seq: int = -1) -> int:
        """Take one cumulative per-path report; returns the newly ACKed bytes.

        Reports are cumulative so a lost feedback message loses nothing; a stale
        one (counters going back) is ignored.
        """
        d_packets = packets - self._acked_packets
        d_bytes = nbytes - self._acked_bytes
        d_lost = lost - self._acked_lost
        if d_packets < 0 or d_bytes < 0 or d_lost < 0:
            return 0
        self._reported_seq = max(self._reported_seq, highest_seq)
        if d_packets or d_lost:
            sample = d_lost / (d_packets + d_lost)
            gain = self.params.loss_gain
            self.loss_rate = (1 - gain) * self.loss_rate + gain * sample
            slow = self.params.steady_loss_gain
            self.steady_loss = (1 - slow) * self.steady_loss + slow * sample
        if d_packets:
            self.last_heard = now
        self._acked_packets, self._acked_bytes, self._acked_lost = packets, nbytes, lost
        return d_bytes

    def on_heard(self, now: float) -> None:
        self.last_heard = max(self.last_heard, now)

    # ----- health --------------------------------------------------------------
    @property
    def interval_s(self) -> float:
        """The heartbeat interval: slower on standby."""
        p = self.params
        return p.heartbeat_interval_s * (p.standby_factor if self.standby else 1.0)

    @property
    def one_way_delay(self) -> float | None:
        """Half the smoothed RTT: the forward delay if the path is symmetric."""
        return None if self.srtt is None else self.srtt / 2

    @property
    def base_one_way_delay(self) -> float | None:
        """Half the smallest RTT seen: the propagation delay, without queueing."""
        return None if self.min_rtt is None else self.min_rtt / 2

    @property
    def queue_delay(self) -> float:
        """Smoothed RTT over min RTT: what the path's queues add now (0 unmeasured)."""
        return 0.0 if self.srtt is None or self.min_rtt is None else self.srtt - self.min_rtt

    @property
    def saturated(self) -> bool:
        """Loss or a standing queue: the path carries all it can."""
        queue = 0.0 if self.srtt is None or self.min_rtt is None else self.srtt - self.min_rtt
        return (self.loss_rate > SATURATED_LOSS
                or queue > max(SATURATED_QUEUE_S, SATURATED_QUEUE_SHARE * (self.min_rtt or 0.0)))

    @property
    def usable(self) -> bool:
        return self.state is not PathState.FAILED

    def health_event(self, now: float) -> PathEvent | None:
        p = self.params
        silent_s = now - self.last_heard
        if now >= self.next_health_deadline():
            return PathEvent.SILENT
        if self.state is PathState.FAILED:
            return PathEvent.HEARD
        if (self.loss_rate > p.degrade_loss
                or silent_s > p.degrade_after_intervals * self.interval_s):
            return PathEvent.BAD
        if self.loss_rate < p.recover_loss and silent_s <= self.interval_s:
            return PathEvent.GOOD
        return None

    def apply(self, event: PathEvent) -> PathState:
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise PathStateError(
                f"path {self.path_id}: no move for {event.name} in {self.state.name}"
            ) from None
        return self.state

    def evaluate(self, now: float) -> PathState | None:
        """Apply the measurements; returns the new state if it changed."""
        event = self.health_event(now)
        if event is None:
            return None
        before = self.state
        after = self.apply(event)
        if event is PathEvent.HEARD:
            self.loss_rate = 0.0  # its steady loss: Scheduler.on_usable_changed
        return after if after is not before else None

    def next_health_deadline(self) -> float:
        """When the path fails if nothing is heard (its SILENT deadline)."""
        if self.gone:
            return self.created_at
        p = self.params
        deadline = self.last_heard + p.fail_after_intervals * self.interval_s
        unreported_since = self.sent_time(self._reported_seq + 1)
        if unreported_since is not None and self.srtt is not None:
            timeout = max(p.report_timeout_min_s, self.srtt + 4 * self.rttvar + p.report_slack_s)
            deadline = min(deadline, unreported_since + timeout)
        return deadline


def tunnel_mtu(paths: Iterable[Path]) -> int | None:
    """The session's MTU: the minimum over usable paths (anti-patterns 2.10).

    None when no path is usable. Recompute whenever a path is added, removed
    or changes state.
    """
    mtus = [p.mtu for p in paths if p.usable]
    return min(mtus) if mtus else None
