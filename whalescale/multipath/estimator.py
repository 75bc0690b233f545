"""Bandwidth per path from ACKed bytes, and the weights the scheduler uses.

- Estimate: the bytes the feedback ACKed on a path in the last `window_s`
  (1 s, anti-patterns 3.11: a rolling window, not instantaneous), divided by
  the window (or by the path's age while it is younger than the window).
- Ramp-up: a new path starts at `min_weight_bps` and its weight may grow at
  most `ramp_factor`-fold per `window_s` of age (it has to earn its share by
  carrying traffic; the multipath brief: "start at minimum weight and ramp up").
- Probing: a path that is not saturated (the sender sees neither loss nor
  queueing on it) delivered everything it was given, so its target is its
  estimate times `1 + probe_gain`; a saturated path's target is its estimate.
  While nothing saturates every weight grows alike (ratios unchanged); once one
  path saturates, the others gain share. Without this a path whose weight
  started low would stay low forever: it can only be measured carrying what the
  scheduler gives it.
- Slow start: a new (or restarted) path probes at the ramp's pace, x2 per half
  window (4x a window), until it first saturates; from then on by probe_gain.
  By probe_gain alone a path back from an outage took 6.5 s from 1 to 18
  Mbit/s, longer than the bench's flapping period; doubling after the first
  saturation made equal paths' weights oscillate (simulation: 95% -> 85%).
- Hysteresis: a weight moves only when the new target differs from it by more
  than `hysteresis` (20 %) of it, so bursty cross traffic does not make the
  scheduler shuffle paths (3.11).

ACKed bytes are what arrived, so the estimate is already net of loss: a path
losing 10 % of what it is given has its weight cut accordingly. Weights are in
bytes/s; only their ratios matter to the schedulers.
"""

from __future__ import annotations

from collections import deque

import attrs

from .paths import PathId


@attrs.frozen(slots=True)
class EstimatorParams:
    window_s: float = 1.0
    min_weight_bps: float = 125_000.0  # 1 Mbit/s
    ramp_factor: float = 4.0
    hysteresis: float = 0.20
    probe_gain: float = 0.25  # above the hysteresis, so an unsaturated path can grow


@attrs.define(eq=False)
class _PathEstimate:
    added_at: float
    weight_bps: float
    acked: deque[tuple[float, int]] = attrs.Factory(deque)
    acked_bytes: int = 0
    probed_at: float = float("-inf")
    slow_start: bool = True  # until the path first saturates


class BandwidthEstimator:
    def __init__(self, params: EstimatorParams = EstimatorParams()) -> None:
        self.params = params
        self._paths: dict[PathId, _PathEstimate] = {}

    def add_path(self, path_id: PathId, now: float) -> None:
        self._paths[path_id] = _PathEstimate(added_at=now, weight_bps=self.params.min_weight_bps)

    def restart_path(self, path_id: PathId, now: float) -> None:
        """A path back from FAILED starts over, like a new one."""
        self.add_path(path_id, now)

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
        age = now - self._paths[path_id].added_at
        return p.min_weight_bps * p.ramp_factor ** (age / p.window_s)

    def update(self, now: float, saturated: frozenset[PathId] = frozenset()) -> dict[PathId, float]:
        """Re-derive the weights; returns those that moved."""
        p = self.params
        moved = {}
        for pid, est in self._paths.items():
            gain = 1.0 if pid in saturated else 1.0 + p.probe_gain
            wanted = gain * self.estimate_bps(pid, now)
            # A path the scheduler starves carries only its share, so its estimate can
            # never show spare capacity: an unsaturated path is also offered its weight
            # plus probe_gain, twice a window, until it shows loss or queueing.
            if pid in saturated:
                est.slow_start = False
            # Only a path that carried most of what its weight offered has shown it
            # could take more: an idle one (skipped by the harm rule, carrying only
            # heartbeats) would otherwise double without bound.
            probing = (pid not in saturated and now - est.probed_at >= p.window_s / 2
                       and self.estimate_bps(pid, now) >= est.weight_bps / 2)
            if probing:
                growth = p.ramp_factor ** 0.5 if est.slow_start else 1.0 + p.probe_gain
                wanted = max(wanted, est.weight_bps * growth)
            target = max(p.min_weight_bps, min(wanted, self.ramp_cap_bps(pid, now)))
            if pid not in saturated:
                # It delivered all it was given: its lagging 1 s estimate is no reason
                # to take back what a probe granted.
                target = max(target, est.weight_bps)
            if abs(target - est.weight_bps) > p.hysteresis * est.weight_bps:
                if probing and target > est.weight_bps:
                    est.probed_at = now
                est.weight_bps = target
                moved[pid] = target
        return moved
