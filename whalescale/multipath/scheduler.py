"""Which path the next packet of a session takes.

Every scheduler has the same shape (`Scheduler`): `pick(packet_len, now)`
returns a path id, or None when no path is usable; `on_ack(feedback, now)` and
`on_path_state(path_id, state, now)` tell it what the sender learned. The
sender (sender.py) owns the paths and the bandwidth estimator and updates them
first; schedulers read them.

Rules all of them follow (multipath brief, anti-patterns 1.6, 1.7, 2.8, 2.11):
- packet-level: any packet may take any usable path; no flow pinning;
- a FAILED path gets nothing; a DEGRADED one `degraded_factor` of its weight;
- no retransmission and no rate limiting: `pick` never holds a packet back. If
  every rule says no, the packet still goes, on the fastest usable path.

The reordering-depth constraint (sender side). A packet put on path p arrives
about owd_p after now (owd: half the smoothed RTT, queueing included). Every
packet sent after it on a faster path q during the difference overtakes it and
waits in the receiver's buffer, so

    overtakers(p) = sum over faster q of rate_q * (owd_p - owd_q)   [packets]

with rate_q the packets per second q carries now (measured over the last
`rate_window_s`). p may take the packet only if overtakers(p) <= depth_budget
(96: three quarters of the receiver's 128, leaving room for jitter). This is
"a fast path may not run more than D packets ahead of what a slow path will
deliver", enforced where it can be: by not feeding the slow path.

The harm rule. A packet on a path whose base one-way delay (half its min RTT:
propagation, not queueing) exceeds the fastest path's by `extra` holds every
later packet of the faster paths in the receiver's buffer for `extra`: the
inner flow then lives at the slow path's RTT, with at most 128 packets in
flight across the gap. So a path more than `similar_delay_s` slower (the
buffer's floor wait, below which paths count as equal) is used only when it
can help:
- every faster path is saturated (sender.py: loss or a standing queue; as
  MPTCP's default scheduler, the slow path takes only what the fast ones
  cannot), and
- what the faster paths carry at capacity (the estimator's 1 s ACKed rate)
  over `extra` fits the depth budget: otherwise the buffer overflows and the
  flow gets less than the fast paths alone;
- `extra` is at most the fastest path's min RTT: a delay-based inner TCP
  (BBR, Linux's default here) keeps about two BDPs in flight at its min RTT,
  so a flow whose RTT grows by more than that is window-limited below what
  the fast path alone gives it; loss-based TCPs recover that much slower too;
- and never beyond `max_extra_delay_s` (250 ms, the reorder buffer's timeout
  ceiling): its packets would arrive after the receiver gave up on them.
On 20 ms vs 200 ms RTT the slow path is left out (90 ms more one way than a
20 ms RTT) and the flow gets the fast path alone. The depth constraint then
bounds, packet by packet, what the faster paths send meanwhile.

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
from .feedback import Feedback
from .paths import Path, PathId, PathState
from .reorder import MAX_REORDERING_DEPTH


class Scheduler(Protocol):
    def pick(self, packet_len: int, now: float) -> PathId | None: ...

    def on_ack(self, feedback: Feedback, now: float) -> None: ...

    def on_path_state(self, path_id: PathId, state: PathState, now: float) -> None: ...


@attrs.frozen(slots=True)
class SchedulerParams:
    degraded_factor: float = 0.25
    loss_tolerance: float = 0.002
    depth_budget: float = 0.75 * MAX_REORDERING_DEPTH
    max_extra_delay_s: float = 0.25
    similar_delay_s: float = 0.005  # reorder.ReorderParams.min_timeout_s
    rate_window_s: float = 0.1
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

    def on_ack(self, feedback: Feedback, now: float) -> None:
        pass  # the sender has already folded the feedback into paths and estimator

    def on_path_state(self, path_id: PathId, state: PathState, now: float) -> None:
        self._meters.pop(path_id, None)

    # ----- shared measurements ---------------------------------------------------
    def usable(self) -> list[Path]:
        return [p for p in self.paths.values() if p.usable]

    def weight(self, path: Path, now: float) -> float:
        """The estimator's weight, cut for loss and for a DEGRADED state.

        Loss: w / (1 + (excess / (loss_tolerance + floor))^2), floor being the
        least lossy usable path's loss and excess this path's loss above it. The
        inner TCP's rate goes as 1 / sqrt(loss) (Mathis et al. 1997), so a path
        that adds loss of its own costs the whole flow far more than the
        bandwidth it adds: 1 % over loss-free paths leaves it about 4 % of its
        weight, 0.1 % 80 %. The floor is the loss the inner TCP causes itself by
        filling every path (congestion, 2-8 % under BBR on the bench): it is no
        path's fault, and measured against a bare 0.2 % its noise alone swung
        the split between equal paths to 30/70, which kept one queue full and
        the other short, and the reordering between them made BBR overestimate
        the sum and lose 8 % of its packets. Past that floor a path's own loss
        matters only as much as it adds to what the flow already sees.

        DEGRADED: `degraded_factor` of the weight while the path is also quiet
        (not heard within a heartbeat interval: maybe dying). A path DEGRADED
        for loss alone and heard as usual is cut by the loss term only: the
        state's fixed cut came on and off as congestion loss crossed 5 % on one
        equal path and not the other, a 4:1 swing of the split.
        """
        usable = self.usable()
        floor = min((q.loss_rate for q in usable), default=0.0)
        excess = max(0.0, path.loss_rate - floor)
        w = self.estimator.weight(path.path_id)
        w /= 1.0 + (excess / (self.params.loss_tolerance + floor)) ** 2
        quiet = now - path.last_heard > path.params.heartbeat_interval_s
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

    def overtakers(self, path: Path, usable: list[Path], now: float,
                   by_capacity: bool = False, packet_len: int = 1400) -> float:
        """Packets later than one sent on `path` now that would arrive before it."""
        owd = path.one_way_delay
        if owd is None:
            return 0.0
        total = 0.0
        for q in usable:
            q_owd = q.one_way_delay
            if q is path or q_owd is None or q_owd >= owd:
                continue
            rate = (self.weight(q, now) / packet_len if by_capacity
                    else self.send_rate(q.path_id, now)[0])
            total += rate * (owd - q_owd)
        return total

    def harmful(self, path: Path, usable: list[Path], now: float, packet_len: int) -> bool:
        """The harm rule (module docstring): would this slower path cost more than it adds?"""
        p = self.params
        owd = path.base_one_way_delay
        if owd is None:
            return False  # not measured yet: its first RTT sample comes with its probe
        faster = [q for q in usable if q.base_one_way_delay is not None
                  and q.base_one_way_delay < owd - p.similar_delay_s]
        if not faster:
            return False
        fastest = min(faster, key=lambda q: q.base_one_way_delay or 0.0)
        extra = owd - (fastest.base_one_way_delay or 0.0)
        if (extra > min(p.max_extra_delay_s, fastest.min_rtt or 0.0)
                or not all(q.saturated for q in faster)):
            return True
        capacity_pps = sum(self.estimator.estimate_bps(q.path_id, now) for q in faster) / packet_len
        return capacity_pps * extra > p.depth_budget

    def eligible(self, usable: list[Path], now: float, by_capacity: bool = False,
                 depth: bool = True, packet_len: int = 1400) -> list[Path]:
        """The usable paths the harm rule and (if `depth`) the depth constraint allow."""
        out = []
        for p in usable:
            if self.harmful(p, usable, now, packet_len):
                continue
            if depth and self.overtakers(p, usable, now, by_capacity,
                                         packet_len) > self.params.depth_budget:
                continue
            out.append(p)
        return out


class WeightedRoundRobin(_PathScheduler):
    name = "wrr"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._credit: dict[PathId, float] = {}

    def on_path_state(self, path_id: PathId, state: PathState, now: float) -> None:
        super().on_path_state(path_id, state, now)
        self._credit.pop(path_id, None)

    def pick(self, packet_len: int, now: float) -> PathId | None:
        usable = self.usable()
        if not usable:
            return None
        candidates = self.eligible(usable, now, packet_len=packet_len) or [self.fastest(usable)]
        weights = {p.path_id: self.weight(p, now) for p in candidates}
        total = sum(weights.values())
        cap = self.params.credit_cap_bytes
        for pid, w in weights.items():
            self._credit[pid] = min(cap, self._credit.get(pid, 0.0) + packet_len * w / total)
        best = max(weights, key=lambda pid: (self._credit[pid], -pid))
        self._credit[best] = max(-cap, self._credit[best] - packet_len)
        self.note_sent(best, packet_len, now)
        return best


class LowestRttFirst(_PathScheduler):
    """Fastest path first up to its estimated capacity, then the next."""

    name = "lowrtt"
    use_depth_constraint = False

    def pick(self, packet_len: int, now: float) -> PathId | None:
        usable = self.usable()
        if not usable:
            return None
        candidates = (self.eligible(usable, now, by_capacity=True,
                                    depth=self.use_depth_constraint, packet_len=packet_len)
                      or [self.fastest(usable)])
        candidates.sort(key=lambda p: (p.srtt is None, p.srtt or 0.0, p.path_id))
        chosen = None
        for p in candidates:
            if self.send_rate(p.path_id, now)[1] < self.weight(p, now):
                chosen = p
                break
        if chosen is None:  # all at capacity: the one with most headroom
            chosen = min(candidates,
                         key=lambda p: self.send_rate(p.path_id, now)[1] / self.weight(p, now))
        self.note_sent(chosen.path_id, packet_len, now)
        return chosen.path_id


class Blest(LowestRttFirst):
    name = "blest"
    use_depth_constraint = True


SCHEDULERS: dict[str, type[_PathScheduler]] = {
    cls.name: cls for cls in (WeightedRoundRobin, LowestRttFirst, Blest)
}
