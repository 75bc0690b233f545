"""Bandwidth per path from ACKed bytes, and the weights the scheduler uses.

- Estimate: the bytes the feedback ACKed on a path in the last `window_s`
  (1 s, anti-patterns 3.11: a rolling window, not instantaneous), divided by
  the window (or by the path's age while it is younger than the window).
- Ramp-up: a new path starts at `min_weight_bps` and its weight may grow at
  most `ramp_factor`-fold per `window_s` of age (it has to earn its share by
  carrying traffic; the multipath brief: "start at minimum weight and ramp up").
- Capacity: what the path has shown it carries. A delivery rate is a lower
  bound on a path's capacity (as BBR treats its application-limited
  samples): a higher estimate raises the capacity at once; a lower one
  replaces it only when the path was offered at least its capacity (sent
  bytes, `update(sent=...)`) over the estimate's window and since the last
  report, and still delivered less: then the path itself is the limit. A path
  that carries less because it was given less (the inner TCP backing off, the
  scheduler's loss and queue cuts giving it a smaller share for a while) keeps
  its figure.
- Weight: the capacity plus `probe_gain` (a quarter): every path is offered a
  quarter more than it has shown. A path with room to spare carries it, its
  capacity rises, and with it its share; a full path cannot, so the split
  settles where every path is full. Weights used to follow what a path carried
  once it looked *saturated* (loss, or srtt above min RTT) and to keep what a
  probe granted while it did not. Under a queue-filling inner TCP (CUBIC) that
  reproduced whatever split it had: a path that looked saturated (a cellular
  path's 4 ms of jitter reads as queue) was weighted at what its share let it
  carry, never more, while the clean path's probes, kept, grew its weight far
  past its rate (62 Mbit/s on a 30 Mbit/s link); and a loss burst cut a path's
  share, so it carried less, so it was weighted less (one run: 23 -> 3
  Mbit/s in 1.5 s). On Wi-Fi + LTE with jitter the LTE path carried ~80% of
  its rate; the same links with the split fixed by hand at their rates' ratio
  gave CUBIC 44 Mbit/s where the adaptive split gave 39-41. Saturation now
  only ends a path's slow start.
- Slow start: a new path's weight doubles each half window (4x a window,
  `ramp_factor`) while it carries at least half of it, until it first
  saturates; from then on the capacity rule. Doubling after the first
  saturation made equal paths' weights oscillate (simulation: 95% -> 85%). A
  path left idle (the harm rule's slow path, heartbeats only) keeps what it
  showed and grows no further.
- Back from an outage (`restart_path`, when a FAILED path is heard again): its
  windows start over and it resumes the capacity it had shown, weighted as
  before. A path that comes back is most often the same link (a Wi-Fi blip, a
  cellular handover, a cable replugged); if it came back narrower, the
  capacity rule takes what it delivers within a window of being offered more.
  Restarted at the minimum weight instead, it took 2.6 s of the bench's 3 s up
  in every 4 to regrow (under WRR its share only grows as fast as what it
  carried proves, and the loss and queue the outage left behind ended its
  slow start at once): flapping CUBIC 65% of the sum, 78% resumed.
- Hysteresis: a weight moves only when the new target differs from it by more
  than `hysteresis` of it, so bursty cross traffic does not make the scheduler
  shuffle paths (3.11).

ACKed bytes are what arrived, so the estimate is already net of loss: a path
losing 10 % of what it is given has its weight cut accordingly. Weights are in
bytes/s; the WRR scheduler uses their ratios, the others (lowrtt, blest) a
path's weight as what it may be offered.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

import attrs

from .paths import PathId


@attrs.frozen(slots=True)
class EstimatorParams:
    window_s: float = 1.0
    min_weight_bps: float = 125_000.0  # 1 Mbit/s
    ramp_factor: float = 4.0
    hysteresis: float = 0.20
    probe_gain: float = 0.25  # above the hysteresis, so a path with room can grow


@attrs.define(eq=False)
class _PathEstimate:
    added_at: float
    weight_bps: float
    ramp_from_bps: float  # the weight it (re)started at: ramp_cap_bps grows from there
    acked: deque[tuple[float, int]] = attrs.Factory(deque)
    acked_bytes: int = 0
    probed_at: float = float("-inf")
    slow_start: bool = True  # until the path first saturates
    capacity_bps: float = 0.0
    # (time, bytes sent on the path so far) at each update of the last window.
    sent: deque[tuple[float, int]] = attrs.Factory(deque)


class BandwidthEstimator:
    def __init__(self, params: EstimatorParams = EstimatorParams()) -> None:
        self.params = params
        self._paths: dict[PathId, _PathEstimate] = {}

    def add_path(self, path_id: PathId, now: float) -> None:
        p = self.params
        self._paths[path_id] = _PathEstimate(added_at=now, weight_bps=p.min_weight_bps,
                                             ramp_from_bps=p.min_weight_bps)

    def restart_path(self, path_id: PathId, now: float) -> None:
        """A path back from FAILED: its windows start over at the capacity it had shown
        (a path that never carried anything starts over like a new one)."""
        capacity = self._paths[path_id].capacity_bps
        self.add_path(path_id, now)
        if capacity > 0:
            est = self._paths[path_id]
            weight = max(self.params.min_weight_bps, capacity * (1.0 + self.params.probe_gain))
            est.capacity_bps, est.slow_start = capacity, False
            est.weight_bps = est.ramp_from_bps = weight

    def on_acked(self, path_id: PathId, nbytes: int, now: float) -> None:
        est = self._paths.get(path_id)
        if est is None or nbytes <= 0:
            return
        est.acked.append((now, nbytes))
        est.acked_bytes += nbytes
        self._trim(est, now)

    def _trim(self, est: _PathEstimate, now: float) -> None:
        horizon = now - self.params.window_s
        while est.acked and est.acked[0][0] <= horizon:
            est.acked_bytes -= est.acked.popleft()[1]

    def estimate_bps(self, path_id: PathId, now: float) -> float:
        est = self._paths[path_id]
        self._trim(est, now)
        span = min(self.params.window_s, max(now - est.added_at, 1e-3))
        return est.acked_bytes / span

    def weight(self, path_id: PathId) -> float:
        return self._paths[path_id].weight_bps

    def weights(self) -> dict[PathId, float]:
        return {pid: est.weight_bps for pid, est in self._paths.items()}

    def ramp_cap_bps(self, path_id: PathId, now: float) -> float:
        p = self.params
        est = self._paths[path_id]
        return est.ramp_from_bps * p.ramp_factor ** ((now - est.added_at) / p.window_s)

    def _offered_bps(self, est: _PathEstimate, sent_total: int,
                     now: float) -> tuple[float, float]:
        """Bytes sent on the path per second: over about the last window, and since the
        previous update."""
        sent = est.sent
        last_at, last = sent[-1] if sent else (now, sent_total)
        sent.append((now, sent_total))
        while len(sent) > 1 and sent[1][0] <= now - self.params.window_s:
            sent.popleft()
        since, before = sent[0]
        return ((sent_total - before) / (now - since) if now > since else 0.0,
                (sent_total - last) / (now - last_at) if now > last_at else 0.0)

    def update(self, now: float, saturated: frozenset[PathId] = frozenset(),
               sent: Mapping[PathId, int] | None = None) -> dict[PathId, float]:
        """Re-derive the weights; returns those that moved. `saturated`: the paths that
        show loss or a standing queue (it ends their slow start); `sent`: each path's
        bytes sent so far (what it was offered; without it a capacity only rises)."""
        p = self.params
        moved = {}
        for pid, est in self._paths.items():
            carried = self.estimate_bps(pid, now)
            offered, offered_now = self._offered_bps(est, (sent or {}).get(pid, 0), now)
            # The estimate lags what the path is given by its window: it is the path's
            # limit only while it has been given its capacity both over that window and
            # now (not on its way down after the sender gave it less, nor on its way up).
            if carried > est.capacity_bps or min(offered, offered_now) >= est.capacity_bps:
                est.capacity_bps = carried
            wanted = est.capacity_bps * (1.0 + p.probe_gain)
            if pid in saturated:
                est.slow_start = False
            # Only a path that carried most of what its weight offered has shown it
            # could take more: an idle one would otherwise double without bound.
            probing = (est.slow_start and now - est.probed_at >= p.window_s / 2
                       and carried >= est.weight_bps / 2)
            if est.slow_start:
                # Its weight is what it was offered, its 1 s estimate lags: keep the
                # weight (x2 each half window while it keeps up).
                wanted = max(wanted, est.weight_bps * (p.ramp_factor ** 0.5 if probing else 1.0))
            target = max(p.min_weight_bps, min(wanted, self.ramp_cap_bps(pid, now)))
            if abs(target - est.weight_bps) > p.hysteresis * est.weight_bps:
                if probing and target > est.weight_bps:
                    est.probed_at = now
                est.weight_bps = target
                moved[pid] = target
        return moved
