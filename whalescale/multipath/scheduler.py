"""Which path the next packet of a session takes.

Every scheduler has the same shape (`Scheduler`): `pick(packet_len, now)`
returns a path id and how long to hold the packet before it leaves (the
steady delay, below), or None when no path is usable; `fastest_usable(now)` is
where a packet goes that must not wait; `on_ack(feedback, now)` and
`on_path_state(path_id, state, now)` tell it what the sender learned. The
sender (sender.py) owns the paths and the bandwidth estimator and updates them
first; schedulers read them.

Rules all of them follow (multipath brief, anti-patterns 1.6, 1.7, 2.8, 2.11):
- packet-level: any packet may take any usable path; no flow pinning;
- a FAILED path gets nothing; a DEGRADED one `degraded_factor` of its weight;
- no retransmission and no rate limiting: a hold delays a packet by a fixed
  time, the same for every packet on its path, so the path's rate is what the
  inner flow sends (the hold is latency, never a rate cap). If every rule says
  no, the packet still goes, on the fastest usable path.

The steady delay. Over paths of different base one-way delay (half their min
RTT) a packet is held before it leaves (sender.py's delay line) by `hold_s`:
the slowest used path's base delay less its own path's. Every path then
delivers at the same one-way delay, so packets arrive nearly in order and the
inner flow sees one delay from its first packet to its last, whatever share
each path carries. Unequal delays are then a matter of weights alone; this
replaced a harm rule that left a slower path out unless the fast ones were
saturated and the extra delay under the fast path's min RTT, which kept every
Wi-Fi + cellular pair on the fast path alone (the inner delay then rose
mid-flow whenever the slow path came in: BBR, which keeps its min RTT for
10 s and a window of two BDPs at it, collapsed below the fast path alone).
Packets `traffic.prompt` names (ICMP, pure ACKs) are not held: they take the
fastest path (`fastest_usable`) and skip the reorder buffer (link.py).

The reordering-depth constraint (sender side). A packet put on path p arrives
about owd_p + hold_p after now (owd: half the smoothed RTT, queueing included).
Every packet sent after it on a path q that arrives sooner overtakes it and
waits in the receiver's buffer, so

    overtakers(p) = sum over sooner q of rate_q * (arrival_p - arrival_q)   [packets]

with rate_q the packets per second q carries now (measured over the last
`rate_window_s`). p may take the packet only if overtakers(p) <= depth_budget
(96: three quarters of the receiver's 128, leaving room for jitter). With the
delays equalized only queueing differences are left for it to bound.

The harm rule. A path more than `max_extra_delay_s` (50 ms one way) slower
than the fastest usable one is left out: every held flow would live at its
delay, and a TCP's slow start, loss recovery and every short transfer pay an
RTT more than 100 ms longer for a second path's bandwidth (20 ms vs 200 ms RTT:
the flow gets the fast path alone). A `backup` path is left out while any
other path is usable (a metered link: it is heard, not used).

The three schedulers:
- `WeightedRoundRobin` (default): credit-based, each path earns credit in
  proportion to its weight per byte sent, the richest eligible path sends.
  Smooth (no bursts on one path), proportions exact over time.
- `LowestRttFirst`: fill the fastest path up to its estimated capacity, overflow
  to the next (by smoothed RTT). No depth constraint: the reference that shows
  what the constraint buys.
- `Blest`: lowest-RTT-first plus the depth constraint with the faster paths'
  rates predicted from their *capacity* instead of their current send rate
  (BLEST, Ferlin et al. 2016: skip the slow path if the fast one would be
  blocked by the window while the slow packet is under way; our window is the
  receiver's reorder buffer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import attrs

from .estimator import BandwidthEstimator
from .feedback import FEEDBACK_INTERVAL_S, Feedback
from .paths import Path, PathId, PathState
from .reorder import MAX_REORDERING_DEPTH


class Scheduler(Protocol):
    def pick(self, packet_len: int, now: float) -> tuple[PathId, float] | None: ...

    def fastest_usable(self, now: float) -> PathId | None: ...

    def on_ack(self, feedback: Feedback, now: float) -> None: ...

    def on_path_state(self, path_id: PathId, state: PathState, now: float) -> None: ...

    def on_usable_changed(self, now: float) -> None: ...


@attrs.frozen(slots=True)
class SchedulerParams:
    degraded_factor: float = 0.25
    loss_tolerance: float = 0.002
    # Added to loss_tolerance as the least lossy path's queue reaches queue_tolerance_s.
    loss_tolerance_full: float = 0.01
    queue_tolerance_s: float = 0.015
    depth_budget: float = 0.75 * MAX_REORDERING_DEPTH
    max_extra_delay_s: float = 0.05
    # Holds shorter than this are not worth a timer: the reorder buffer's 2 ms base
    # wait absorbs them (equal paths differ by measurement noise alone).
    min_hold_s: float = 0.002
    rate_window_s: float = 0.1
    # After a path fails or comes back, the split follows the fast loss this long (about
    # what the steady loss averages over: HealthParams.steady_loss_gain).
    fast_loss_s: float = 2.0
    credit_cap_bytes: int = 16 * 1500  # what an idle or skipped path may bank


@attrs.define(eq=False)
class _SendMeter:
    """Packets and bytes sent in the current and the previous rate window."""

    start: float = 0.0
    packets: int = 0
    bytes: int = 0
    prev_packets: int = 0
    prev_bytes: int = 0

    def roll(self, now: float, window: float) -> None:
        if now - self.start >= 2 * window:
            self.prev_packets = self.prev_bytes = self.packets = self.bytes = 0
            self.start = now
        elif now - self.start >= window:
            self.prev_packets, self.prev_bytes = self.packets, self.bytes
            self.packets = self.bytes = 0
            self.start += window

    def rates(self, now: float, window: float) -> tuple[float, float]:
        """(packets/s, bytes/s) over the previous window and the current one."""
        self.roll(now, window)
        span = window + max(now - self.start, 1e-4)
        return (self.prev_packets + self.packets) / span, (self.prev_bytes + self.bytes) / span


class _PathScheduler:
    """What the schedulers share: usable paths, weights, send rates, the two rules."""

    def __init__(self, paths: Mapping[PathId, Path], estimator: BandwidthEstimator,
                 params: SchedulerParams = SchedulerParams()) -> None:
        self.paths = paths
        self.estimator = estimator
        self.params = params
        self._meters: dict[PathId, _SendMeter] = {}
        self._fast_loss_until = float("-inf")

    def on_ack(self, feedback: Feedback, now: float) -> None:
        pass  # the sender has already folded the feedback into paths and estimator

    def on_path_state(self, path_id: PathId, state: PathState, now: float) -> None:
        self._meters.pop(path_id, None)

    def on_usable_changed(self, now: float) -> None:
        """A path failed or came back. The loss each path saw was congestion under the old
        split (one carried everything meanwhile), not its own: the steady loss starts
        over, and until it has `fast_loss_s` of reports the split follows the fast loss
        (`weight`)."""
        for path in self.paths.values():
            path.steady_loss = 0.0
        self._fast_loss_until = now + self.params.fast_loss_s

    # ----- shared measurements ---------------------------------------------------
    def usable(self) -> list[Path]:
        """The usable paths; the backups only while no other path is usable."""
        usable = [p for p in self.paths.values() if p.usable]
        primary = [p for p in usable if not p.backup]
        return primary or usable
    def weight(self, path: Path, now: float) -> float:
        """The estimator's weight, cut for loss and for a DEGRADED state.

        Loss: w / (1 + (excess / (tolerance + floor))^2), floor being the least
        lossy usable path's loss and excess this path's loss above it. The inner
        TCP's rate goes as 1 / sqrt(loss) (Mathis et al. 1997), so while the flow
        is limited by loss, a path that adds loss of its own costs it more than
        the bandwidth the path adds. While the least lossy path has room the
        tolerance is `loss_tolerance` (0.2 %): 1 % over loss-free paths leaves a
        path about 4 % of its weight, 0.1 % 80 %. As that path's queue reaches
        `queue_tolerance_s` the tolerance grows by up to `loss_tolerance_full`
        (1 %): a flow that fills the clean path in spite of the loss it sees is
        limited by capacity, not loss (BBR), and a path with 1 % of its own loss
        keeps 60 % of its weight. Either tolerance alone fits one kind of flow:
        0.2 % starved a path with 1 % random loss under BBR (the bench's lossy
        pair: 26-28 Mbit/s instead of 35) once the estimator stopped letting the
        clean path overflow, whose congestion loss, the floor, had softened the
        cut; 1 % gave the simulator's SACK Reno over a 1 % lossy pair 0.68-0.94x
        the clean path alone. The floor is the loss the inner TCP causes itself
        by filling every path (congestion): it is no path's fault, and measured
        against a bare tolerance its noise alone swung the split between equal
        paths to 30/70, which kept one queue full and the other short, and the
        reordering between them made BBR overestimate the sum and lose 8 % of
        its packets. Past that floor a path's own loss matters only as much as
        it adds to what the flow already sees.

        The loss is the path's over about 2 s (`steady_loss`), not the few reports
        health reacts to: congestion loss moves from one saturated path to the
        other, and cut by its last 0.4 s the split swung ~55:45 after it every 0.4
        s, which kept both queues full (a constant-rate flow at 90 % of the sum
        lost 3-8 %; 1-3 % since). A path's own loss stays, and is cut as before.
        Except for `fast_loss_s` after a path fails or comes back
        (`on_usable_changed`): the path that carried everything is still congested
        then, and its fast loss moves the split onto the returning path within a few
        reports, while a steady loss carried over from the outage starved it for 2 s
        and one forgotten left the split to the estimator's ramp (BBR over the
        flapping pair, medians of 5-8 runs: 26.6 Mbit/s forgotten, 28.4 with the fast
        loss alone, 28.9 with this).

        Queueing: w / (1 + (excess / 15 ms)^2), excess being this path's queueing
        delay (smoothed RTT over min RTT) above the least queued path's. Held
        packets of every path arrive at the same base delay, so a path's queue is
        by how much its packets arrive later than the others': the one that
        queues gets less until it arrives with them (scheduling by earliest
        arrival, in weights). Without it the split followed the estimator alone,
        which sees a path's capacity only once it is saturated: under an inner
        BBR pacing below the sum neither path was, the split drifted (a 15
        Mbit/s path weighted for 37), the overfilled path's queue raised the RTT
        the flow saw, and BBR, whose window is 2 x bandwidth x min RTT, shrank
        its bandwidth estimate round after round (19 instead of 38 Mbit/s). The
        tolerance is gentle: at 5 ms the cut chased the smoothed RTT's lag and
        swung a constant-rate UDP flow between the paths (5.3 and 10.5% lost at
        90% of the sum, against 2.2 and 5.9% at 15 ms and without the term).

        DEGRADED: `degraded_factor` of the weight while the path is also quiet
        (not heard within a heartbeat interval: maybe dying). A path DEGRADED
        for loss alone and heard as usual is cut by the loss term only: the
        state's fixed cut came on and off as congestion loss crossed 5 % on one
        equal path and not the other, a 4:1 swing of the split.
        """
        usable = self.usable()
        fast = now < self._fast_loss_until
        loss = {q.path_id: q.loss_rate if fast else q.steady_loss for q in usable}
        cleanest = min(usable, key=lambda q: loss[q.path_id], default=None)
        floor = 0.0 if cleanest is None else loss[cleanest.path_id]
        excess = max(0.0, loss.get(path.path_id, 0.0) - floor)
        full = (0.0 if cleanest is None
                else min(1.0, cleanest.queue_delay / self.params.queue_tolerance_s))
        tolerance = self.params.loss_tolerance + full * self.params.loss_tolerance_full
        w = self.estimator.weight(path.path_id)
        w /= 1.0 + (excess / (tolerance + floor)) ** 2
        queued = path.queue_delay - min((q.queue_delay for q in usable), default=0.0)
        w /= 1.0 + (queued / self.params.queue_tolerance_s) ** 2
        quiet = now - path.last_heard > path.interval_s
        return (w * self.params.degraded_factor if path.state is PathState.DEGRADED and quiet
                else w)

    def send_rate(self, path_id: PathId, now: float) -> tuple[float, float]:
        meter = self._meters.get(path_id)
        return (0.0, 0.0) if meter is None else meter.rates(now, self.params.rate_window_s)

    def note_sent(self, path_id: PathId, packet_len: int, now: float) -> None:
        meter = self._meters.get(path_id)
        if meter is None:
            meter = self._meters[path_id] = _SendMeter(start=now)
        meter.roll(now, self.params.rate_window_s)
        meter.packets += 1
        meter.bytes += packet_len

    @staticmethod
    def fastest(paths: list[Path]) -> Path:
        # Unmeasured paths sort last: they have yet to show their delay.
        return min(paths, key=lambda p: (p.srtt is None, p.srtt or 0.0, p.path_id))

    def target_delay(self, allowed: list[Path]) -> float:
        """The one-way delay held packets are equalized to: the slowest base delay among
        the paths the harm rule allows (0 while none is measured)."""
        return max((p.base_one_way_delay for p in allowed if p.base_one_way_delay is not None),
                   default=0.0)

    def hold_s(self, path: Path, target: float) -> float:
        """How long a packet for `path` is held so that it arrives at `target`."""
        owd = path.base_one_way_delay
        hold = 0.0 if owd is None else target - owd
        return hold if hold >= self.params.min_hold_s else 0.0

    def overtakers(self, path: Path, usable: list[Path], now: float, target: float,
                   by_capacity: bool = False, packet_len: int = 1400) -> float:
        """Packets later than one sent on `path` now that would arrive before it."""
        if path.one_way_delay is None:
            return 0.0
        arrives = path.one_way_delay + self.hold_s(path, target)
        total = 0.0
        for q in usable:
            if q is path or q.one_way_delay is None:
                continue
            q_arrives = q.one_way_delay + self.hold_s(q, target)
            if q_arrives >= arrives:
                continue
            rate = (self.weight(q, now) / packet_len if by_capacity
                    else self.send_rate(q.path_id, now)[0])
            total += rate * (arrives - q_arrives)
        return total

    def within_reach(self, usable: list[Path]) -> list[Path]:
        """The harm rule (module docstring): the usable paths not too much slower than the
        fastest (never empty while a path is usable: the fastest is always within)."""
        floor = min((q.base_one_way_delay for q in usable if q.base_one_way_delay is not None),
                    default=0.0)
        limit = floor + self.params.max_extra_delay_s
        return [p for p in usable if p.base_one_way_delay is None
                or p.base_one_way_delay <= limit]

    def eligible(self, allowed: list[Path], now: float, target: float,
                 by_capacity: bool = False, depth: bool = True,
                 packet_len: int = 1400) -> list[Path]:
        """The paths within reach that (if `depth`) the depth constraint allows."""
        return [p for p in allowed if not (
            depth and self.overtakers(p, allowed, now, target, by_capacity, packet_len)
            > self.params.depth_budget)]

    def pick(self, packet_len: int, now: float) -> tuple[PathId, float] | None:
        """(path, hold) for the next data packet, or None when no path is usable."""
        usable = self.usable()
        if not usable:
            return None
        allowed = self.within_reach(usable)
        target = self.target_delay(allowed)
        path = self.choose(allowed, now, target, packet_len)
        self.note_sent(path.path_id, packet_len, now)
        return path.path_id, self.hold_s(path, target)

    def fastest_usable(self, now: float) -> PathId | None:
        """Where a packet goes that must not wait (traffic.prompt): the fastest path heard
        within its heartbeat interval (feedback comes every 50 ms; one may be late).
        Prompt packets carry no per-path seq, so a path that carries only them learns
        it died from its heartbeats alone (0.4 s); a path gone quiet is left at once,
        so that a TCP's ACKs are not lost meanwhile."""
        usable = self.usable()
        heard = [p for p in usable if now - p.last_heard <= p.interval_s + FEEDBACK_INTERVAL_S]
        return self.fastest(heard or usable).path_id if usable else None

    def choose(self, allowed: list[Path], now: float, target: float, packet_len: int) -> Path:
        """The path for the next packet among those the harm rule allows."""
        raise NotImplementedError


class WeightedRoundRobin(_PathScheduler):
    name = "wrr"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._credit: dict[PathId, float] = {}

    def on_path_state(self, path_id: PathId, state: PathState, now: float) -> None:
        super().on_path_state(path_id, state, now)
        self._credit.pop(path_id, None)

    def choose(self, allowed: list[Path], now: float, target: float, packet_len: int) -> Path:
        candidates = (self.eligible(allowed, now, target, packet_len=packet_len)
                      or [self.fastest(allowed)])
        weights = {p.path_id: self.weight(p, now) for p in candidates}
        total = sum(weights.values())
        cap = self.params.credit_cap_bytes
        for pid, w in weights.items():
            self._credit[pid] = min(cap, self._credit.get(pid, 0.0) + packet_len * w / total)
        best = max(weights, key=lambda pid: (self._credit[pid], -pid))
        self._credit[best] = max(-cap, self._credit[best] - packet_len)
        return self.paths[best]


class LowestRttFirst(_PathScheduler):
    """Fastest path first up to its estimated capacity, then the next."""

    name = "lowrtt"
    use_depth_constraint = False

    def choose(self, allowed: list[Path], now: float, target: float, packet_len: int) -> Path:
        candidates = (self.eligible(allowed, now, target, by_capacity=True,
                                    depth=self.use_depth_constraint, packet_len=packet_len)
                      or [self.fastest(allowed)])
        # Held packets all arrive at the target: the order among them is by queueing.
        candidates.sort(key=lambda p: (p.srtt is None, (p.srtt or 0.0) / 2
                                       + self.hold_s(p, target), p.path_id))
        for p in candidates:
            if self.send_rate(p.path_id, now)[1] < self.weight(p, now):
                return p
        # all at capacity: the one with most headroom
        return min(candidates,
                   key=lambda p: self.send_rate(p.path_id, now)[1] / self.weight(p, now))


class Blest(LowestRttFirst):
    name = "blest"
    use_depth_constraint = True


SCHEDULERS: dict[str, type[_PathScheduler]] = {
    cls.name: cls for cls in (WeightedRoundRobin, LowestRttFirst, Blest)
}
