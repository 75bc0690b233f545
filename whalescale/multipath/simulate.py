"""Two endpoints joined by N emulated paths, one inner flow, in simulated time.

A discrete-event simulation (heapq) of the multipath core: the sending end runs
`MultipathSender` (scheduler, estimator, path health), the receiving end a
`ReorderBuffer` and per-path receive statistics, and feedback messages (encoded
and decoded for real) go back every `FEEDBACK_INTERVAL_S` on every path.

The links (`LinkSpec`): a FIFO queue served at `rate_Bps`, tail drop beyond
`queue_s` of it, then `delay_s` plus uniform jitter in [0, `jitter_s`) (arrival
order kept: a path does not reorder its own packets), random loss, and outage
windows during which everything on the path in either direction is lost.

The inner flow is one of:
- `udp`: constant rate (`udp_rate_fraction` of the sum of path rates);
- `tcp`: a SACK Reno model (slow start, AIMD, a segment is lost when 3
  segments above it were SACKed, one halving per recovery episode, RTO with
  backoff that marks everything unSACKed lost, receive window 1500 segments).
  It ACKs every segment (one SACK block: the segment that triggered the ACK)
  and its ACKs return on the fastest live path without queueing or loss. Its
  limits: no RACK/TLP (a lost retransmission waits for the RTO), no delayed
  ACKs, no pacing, no PRR, an exact RTT sample per ACK, all segments full size,
  link overhead (WireGuard's 32 bytes, ours) not counted. It is enough to
  show what matters here: loss and reordering that the buffer does not hide
  cost the flow its window.

What is measured: goodput (bytes the inner receiver got in order, after the
warm-up) as a fraction of the sum of path rates, the reorder buffer's
statistics, inner retransmits, and the longest stall (no in-order progress)
after the warm-up.

CLI: `python -m whalescale.multipath.simulate [--scenario X] [--scheduler S]
[--plot DIR]` prints a table over all scenarios x schedulers, with the best
single path (the same flow over each path alone) as the reference.
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
from collections import deque
from collections.abc import Callable

import attrs

from .. import plots
from . import feedback as fb
from .feedback import FEEDBACK_INTERVAL_S
from .paths import PathReceiveStats
from .reorder import ReorderBuffer, ReorderStats
from .scheduler import SCHEDULERS
from .sender import MultipathSender, Sent

MSS = 1400  # inner packet bytes
HEARTBEAT_BYTES = 40
MBIT = 125_000.0  # bytes/s


@attrs.frozen(slots=True)
class LinkSpec:
    rate_Bps: float  # bytes per second
    delay_s: float  # one way
    jitter_s: float = 0.001
    loss: float = 0.0
    queue_s: float = 0.05
    down: tuple[tuple[float, float], ...] = ()  # [start, end) outages

    def is_down(self, t: float) -> bool:
        return any(a <= t < b for a, b in self.down)


@attrs.frozen(slots=True)
class Scenario:
    name: str
    paths: tuple[LinkSpec, ...]
    flow: str = "tcp"
    duration_s: float = 30.0
    warmup_s: float = 2.0
    udp_rate_fraction: float = 0.9


def _flap(start: float, period: float, down_s: float, until: float) -> tuple:
    out, t = [], start
    while t < until:
        out.append((t, t + down_s))
        t += period
    return tuple(out)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("equal", (LinkSpec(10 * MBIT, 0.015), LinkSpec(10 * MBIT, 0.015))),
    Scenario("rate_2to1", (LinkSpec(20 * MBIT, 0.015), LinkSpec(10 * MBIT, 0.015))),
    Scenario("rtt_20_200", (LinkSpec(10 * MBIT, 0.010), LinkSpec(10 * MBIT, 0.100))),
    Scenario("lossy_1pct", (LinkSpec(10 * MBIT, 0.015), LinkSpec(10 * MBIT, 0.015, loss=0.01))),
    Scenario("path_dies", (LinkSpec(10 * MBIT, 0.015),
                           LinkSpec(10 * MBIT, 0.015, down=((10.0, 1e9),)))),
    Scenario("flapping", (LinkSpec(10 * MBIT, 0.015),
                          LinkSpec(10 * MBIT, 0.015, down=_flap(5.0, 4.0, 1.0, 1e3)))),
    Scenario("equal_udp", (LinkSpec(10 * MBIT, 0.015), LinkSpec(10 * MBIT, 0.015)), flow="udp"),
    # Wi-Fi + cellular: unequal delays, the cellular path with jitter
    Scenario("wifi_lte", (LinkSpec(10 * MBIT, 0.005), LinkSpec(10 * MBIT, 0.020))),
    Scenario("wifi_lte_jitter", (LinkSpec(15 * MBIT, 0.004),
                                 LinkSpec(10 * MBIT, 0.025, jitter_s=0.008))),
    Scenario("rtt_1_10", (LinkSpec(10 * MBIT, 0.005), LinkSpec(10 * MBIT, 0.050))),
    Scenario("wifi_lte_udp", (LinkSpec(15 * MBIT, 0.004),
                              LinkSpec(10 * MBIT, 0.025, jitter_s=0.008)), flow="udp"),
)}


@attrs.frozen(slots=True)
class Result:
    scenario: str
    scheduler: str
    goodput_Bps: float
    sum_rate_Bps: float
    reorder: ReorderStats
    retransmits: int
    max_stall_s: float
    timeline: tuple[float, ...]  # delivered bytes/s per 100 ms bin

    @property
    def fraction(self) -> float:
        return self.goodput_Bps / self.sum_rate_Bps


class _Link:
    def __init__(self, spec: LinkSpec, rng: random.Random) -> None:
        self.spec, self.rng = spec, rng
        self.busy_until = 0.0
        self.last_arrival = 0.0

    def transmit(self, size: int, now: float) -> float | None:
        """When the packet arrives, or None if it is lost."""
        s = self.spec
        if s.is_down(now):
            return None
        backlog = max(0.0, self.busy_until - now)
        if backlog > s.queue_s:
            return None  # tail drop
        self.busy_until = max(now, self.busy_until) + size / s.rate_Bps
        if s.loss and self.rng.random() < s.loss:
            return None
        arrival = max(self.busy_until + s.delay_s + self.rng.uniform(0, s.jitter_s),
                      self.last_arrival)
        if s.is_down(arrival):
            return None
        self.last_arrival = arrival
        return arrival


class _Tcp:
    """A SACK TCP in segments (see the module docstring for its limits).

    Loss detection is the classic duplicate threshold: a segment is lost once
    `dupthresh` (3) segments above it were SACKed, exactly the rule that
    reordering fools (anti-patterns 3.9). One window reduction per recovery
    episode; a retransmission lost again waits for the RTO (no RACK).
    """

    def __init__(self, sim: _Sim, rwnd: int = 1500, dupthresh: int = 3) -> None:
        self.sim, self.rwnd, self.dupthresh = sim, rwnd, dupthresh
        self.snd_una = self.snd_nxt = 0
        self.cwnd, self.ssthresh = 10.0, float("inf")
        self.sacked: set[int] = set()
        self.lost: deque[int] = deque()
        self.highest_sacked = -1
        self.scan = 0  # segments below this were checked for loss
        self.recover, self.in_recovery = -1, False
        self.srtt: float | None = None
        self.rttvar, self.backoff = 0.0, 1
        self.rto_at: float | None = None
        self.retransmits = 0
        self.rcv_nxt = 0
        self.rcv_ooo: set[int] = set()

    # sender
    def start(self, now: float) -> None:
        self._fill(now)

    def _rto(self) -> float:
        base = 1.0 if self.srtt is None else max(0.2, self.srtt + 4 * self.rttvar)
        return min(60.0, base * self.backoff)

    def _arm(self, now: float) -> None:
        self.rto_at = now + self._rto() if self.snd_nxt > self.snd_una else None
        if self.rto_at is not None:
            self.sim.at(self.rto_at, self._on_rto, self.rto_at)

    def _pipe(self) -> int:
        return self.snd_nxt - self.snd_una - len(self.sacked) - len(self.lost)

    def _fill(self, now: float) -> None:
        armed = self.snd_nxt > self.snd_una
        while self._pipe() < int(self.cwnd):
            if self.lost:
                self.retransmits += 1
                self.sim.tunnel_send(("tcp", self.lost.popleft(), now), now)
            elif self.snd_nxt < self.snd_una + self.rwnd:
                self.sim.tunnel_send(("tcp", self.snd_nxt, now), now)
                self.snd_nxt += 1
            else:
                break
        if not armed:
            self._arm(now)

    def on_ack(self, ack: int, sacked: int, sent_at: float, now: float) -> None:
        rtt = now - sent_at
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        newly = 0
        if ack > self.snd_una:
            for seq in range(self.snd_una, ack):
                if seq in self.sacked:
                    self.sacked.discard(seq)
                else:
                    newly += 1
            self.snd_una = ack
            self.snd_nxt = max(self.snd_nxt, ack)
            while self.lost and self.lost[0] < ack:
                self.lost.popleft()
            self.scan = max(self.scan, ack)
            self.backoff = 1
            self._arm(now)
        if sacked >= self.snd_una and sacked not in self.sacked and sacked < self.snd_nxt:
            self.sacked.add(sacked)
            newly += 1
            self.highest_sacked = max(self.highest_sacked, sacked)
        marked = False
        lost_set = set(self.lost)
        while self.scan <= self.highest_sacked - self.dupthresh:
            if self.scan not in self.sacked and self.scan not in lost_set:
                self.lost.append(self.scan)
                marked = True
            self.scan += 1
        if self.in_recovery and ack > self.recover:
            self.in_recovery = False
        if marked and not self.in_recovery:
            self.ssthresh = max(2.0, self.cwnd / 2)
            self.cwnd = self.ssthresh
            self.recover, self.in_recovery = self.snd_nxt - 1, True
        elif not self.in_recovery:
            self.cwnd += newly if self.cwnd < self.ssthresh else newly / self.cwnd
        self._fill(now)

    def _on_rto(self, armed_at: float, now: float) -> None:
        if self.rto_at != armed_at or self.snd_nxt <= self.snd_una:
            return
        self.ssthresh = max(2.0, self.cwnd / 2)
        self.cwnd, self.in_recovery = 1.0, False
        self.backoff = min(self.backoff * 2, 64)
        self.lost = deque(s for s in range(self.snd_una, self.snd_nxt) if s not in self.sacked)
        self.scan = self.snd_nxt
        self._fill(now)
        self._arm(now)

    # receiver
    def on_segment(self, seq: int, sent_at: float, now: float) -> int:
        """Returns the in-order bytes this segment delivered."""
        before = self.rcv_nxt
        if seq == self.rcv_nxt:
            self.rcv_nxt += 1
            while self.rcv_nxt in self.rcv_ooo:
                self.rcv_ooo.discard(self.rcv_nxt)
                self.rcv_nxt += 1
        elif seq > self.rcv_nxt:
            self.rcv_ooo.add(seq)
        self.sim.ack_back(self.rcv_nxt, seq, sent_at, now)
        return (self.rcv_nxt - before) * MSS


class _Sim:
    def __init__(self, scenario: Scenario, scheduler: str, seed: int,
                 only_path: int | None = None) -> None:
        self.sc = scenario
        self.rng = random.Random(seed)
        self._heap: list[tuple[float, int, Callable[..., None], tuple]] = []
        self._seq = 0
        ids = range(len(scenario.paths)) if only_path is None else [only_path]
        self.sender = MultipathSender(0.0, scheduler=scheduler)
        self.fwd = {i: _Link(scenario.paths[i], self.rng) for i in ids}
        self.rev = {i: _Link(scenario.paths[i], self.rng) for i in ids}
        self.reorder = ReorderBuffer()
        self.rx: dict[int, PathReceiveStats] = {}
        self.rx_last: dict[int, float] = {}
        for i in ids:
            self.sender.add_path(i, ("local", i), ("remote", i), 1420, 0.0)
            self.reorder.path_added(i)
            self.rx[i] = PathReceiveStats()
            self.rx_last[i] = 0.0
        self.receiver_failed: set[int] = set()
        self.tcp = _Tcp(self)
        self.delivered = 0
        self.bins = [0] * (int(scenario.duration_s * 10) + 1)
        self.last_progress = scenario.warmup_s
        self.max_stall = 0.0
        self._reorder_timer: float | None = None
        self._sender_timer: float | None = None

    # event loop
    def at(self, t: float, fn: Callable[..., None], *args: object) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, fn, args))

    def run(self) -> None:
        end = self.sc.duration_s
        if self.sc.flow == "tcp":
            self.at(0.0, lambda now: self.tcp.start(now))
        else:
            self.at(0.0, self._udp_tick)
        self.at(FEEDBACK_INTERVAL_S, self._feedback_tick)
        self._arm_sender_timer(0.0)
        while self._heap:
            t, _, fn, args = heapq.heappop(self._heap)
            if t > end:
                break
            fn(*args, t)
        self.max_stall = max(self.max_stall, end - self.last_progress)

    # sending end
    def tunnel_send(self, packet: tuple, now: float) -> None:
        self._transmit(self.sender.send(packet, MSS, now), now)
        self._arm_sender_timer(now)

    def _transmit(self, sent: list[Sent], now: float) -> None:
        for s in sent:
            arrival = self.fwd[s.send.path_id].transmit(MSS, now)
            if arrival is not None:
                self.at(arrival, self._arrive, s.send.counter, s.send.path_id,
                        s.send.path_seq, s.send.data_paths, s.item)

    def _udp_tick(self, now: float) -> None:
        total = sum(s.rate_Bps for s in self.sc.paths)
        self.tunnel_send(("udp", 0, now), now)
        self.at(now + MSS / (total * self.sc.udp_rate_fraction), self._udp_tick)

    def _arm_sender_timer(self, now: float) -> None:
        deadline = max(now, self.sender.next_deadline())
        if self._sender_timer is None or deadline < self._sender_timer:
            self._sender_timer = deadline
            self.at(deadline, self._on_sender_timer)

    def _on_sender_timer(self, now: float) -> None:
        if self._sender_timer is None or now < self._sender_timer:
            return
        self._sender_timer = None
        for hb in self.sender.handle_timer(now):
            arrival = self.fwd[hb.path_id].transmit(HEARTBEAT_BYTES, now)
            if arrival is not None:
                self.at(arrival, self._heartbeat, hb.path_id, hb.path_seq, hb.counter_mark)
        self._transmit(self.sender.release(now), now)
        self._arm_sender_timer(now)

    def _feedback_arrives(self, data: bytes, path_id: int, now: float) -> None:
        self.sender.on_feedback(data, path_id, now)
        self._arm_sender_timer(now)

    # receiving end
    def _heard(self, path_id: int, path_seq: int, nbytes: int, now: float) -> None:
        self.rx[path_id].on_packet(path_seq, nbytes, now)
        self.rx_last[path_id] = now
        if path_id in self.receiver_failed:
            self.receiver_failed.discard(path_id)
            self.reorder.path_added(path_id)

    def _arrive(self, counter: int, path_id: int, path_seq: int, data_paths: int,
                packet: tuple, now: float) -> None:
        self._heard(path_id, path_seq, MSS, now)
        self._deliver(self.reorder.push(counter, path_id, path_seq, packet, now, data_paths,
                                        MSS), now)

    def _heartbeat(self, path_id: int, path_seq: int, mark: int, now: float) -> None:
        self._heard(path_id, path_seq, HEARTBEAT_BYTES, now)
        self._deliver(self.reorder.heartbeat(path_id, path_seq, mark, now), now)

    def _deliver(self, packets: list, now: float) -> None:
        for kind, seq, sent_at in packets:
            got = self.tcp.on_segment(seq, sent_at, now) if kind == "tcp" else MSS
            if got and now >= self.sc.warmup_s:
                self.max_stall = max(self.max_stall, now - self.last_progress)
                self.last_progress = now
                self.delivered += got
            if got:
                self.bins[min(int(now * 10), len(self.bins) - 1)] += got
        deadline = self.reorder.next_deadline()
        if deadline is not None and (self._reorder_timer is None or deadline < self._reorder_timer):
            self._reorder_timer = deadline
            self.at(deadline, self._on_reorder_timer)

    def _on_reorder_timer(self, now: float) -> None:
        if self._reorder_timer is None or now < self._reorder_timer:
            return
        self._reorder_timer = None
        self._deliver(self.reorder.handle_timer(now), now)

    def _feedback_tick(self, now: float) -> None:
        # The receiver's own failure detection: a path silent for the failure
        # interval (heartbeats keep idle paths audible) is gone for the buffer.
        hp = self.sender.health
        for pid, last in self.rx_last.items():
            if (pid not in self.receiver_failed
                    and now - last > hp.fail_after_intervals * hp.heartbeat_interval_s):
                self.receiver_failed.add(pid)
                self._deliver(self.reorder.path_failed(pid, now), now)
        # In a real session each end measures RTT itself (both send data and
        # heartbeats); this one-way simulation lends the sender's estimates.
        self.reorder.set_latency(*self.sender.latency())
        reports = tuple(
            fb.PathReport(pid, st.packets, st.bytes, st.highest_seq, st.lost,
                          now - st.highest_seq_at if st.highest_seq >= 0 else 0.0)
            for pid, st in self.rx.items())
        data = fb.encode(fb.Feedback(reports))
        for pid, link in self.rev.items():
            arrival = link.transmit(len(data), now)
            if arrival is not None:
                self.at(arrival, self._feedback_arrives, data, pid)
        self.at(now + FEEDBACK_INTERVAL_S, self._feedback_tick)

    def ack_back(self, ack: int, sacked: int, sent_at: float, now: float) -> None:
        live = [i for i in self.rev if not self.sc.paths[i].is_down(now)]
        if live:
            delay = min(self.sc.paths[i].delay_s for i in live)
            self.at(now + delay, self.tcp.on_ack, ack, sacked, sent_at)


def simulate(scenario: Scenario, scheduler: str = "wrr", seed: int = 1,
             only_path: int | None = None) -> Result:
    sim = _Sim(scenario, scheduler, seed, only_path)
    sim.run()
    sum_rate = sum(s.rate_Bps for s in scenario.paths)
    return Result(scenario.name, scheduler if only_path is None else f"path{only_path}",
                  sim.delivered / (scenario.duration_s - scenario.warmup_s), sum_rate,
                  sim.reorder.stats, sim.tcp.retransmits, sim.max_stall,
                  tuple(b * 10 for b in sim.bins))


def best_single_path(scenario: Scenario, seed: int = 1) -> Result:
    return max((simulate(scenario, "wrr", seed, only_path=i) for i in range(len(scenario.paths))),
               key=lambda r: r.goodput_Bps)


def _row(r: Result, best: Result) -> str:
    st = r.reorder
    of_best = r.goodput_Bps / best.goodput_Bps
    return (f"{r.scenario:<11} {r.scheduler:<7} {r.fraction:6.1%} {of_best:7.1%}"
            f" {st.gaps_skipped:6d} {st.late_drops:6d} {st.added_delay_mean_s * 1e3:7.2f}"
            f" {st.added_delay_max_s * 1e3:7.1f} {st.max_depth:5d} {r.retransmits:6d}"
            f" {r.max_stall_s:6.2f}")


HEADER = ("scenario    sched   of-sum  of-best  skips  lates  delay-ms  max-ms depth rexmit"
          " stall-s")


def _plot(results: list[Result], out_dir: str) -> None:
    import pathlib

    plt = plots.pyplot()  # matplotlib, lazily: only the plot needs it (the `plots` extra)

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scenarios = sorted({r.scenario for r in results}, key=list(SCENARIOS).index)
    schedulers = [s for s in [*SCHEDULERS, "best1"] if any(r.scheduler == s for r in results)]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(schedulers)
    for k, sched in enumerate(schedulers):
        vals = [next((r.fraction for r in results if r.scenario == sc and r.scheduler == sched), 0)
                for sc in scenarios]
        ax.bar([i + k * width for i in range(len(scenarios))], vals, width, label=sched)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(scenarios))], scenarios)
    ax.set_ylabel("goodput / sum of path rates")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "goodput.png")
    for sc in scenarios:
        fig, ax = plt.subplots(figsize=(10, 3))
        for r in results:
            if r.scenario == sc:
                ax.plot([i / 10 for i in range(len(r.timeline))],
                        [b * 8 / 1e6 for b in r.timeline], label=r.scheduler, lw=0.8)
        ax.set_xlabel("simulated s")
        ax.set_ylabel("delivered Mbit/s")
        ax.set_title(sc)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"timeline-{sc}.png")
    plt.close("all")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m whalescale.multipath.simulate")
    parser.add_argument("--scenario", choices=list(SCENARIOS), action="append")
    parser.add_argument("--scheduler", choices=list(SCHEDULERS), action="append")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--plot", metavar="DIR")
    args = parser.parse_args(argv)
    if args.plot and (problem := plots.missing()):
        print(f"{parser.prog}: --plot: {problem}", file=sys.stderr)
        return 2
    results = []
    print(HEADER)
    for name in args.scenario or list(SCENARIOS):
        sc = SCENARIOS[name]
        best = best_single_path(sc, args.seed)
        best = attrs.evolve(best, scheduler="best1")
        for sched in args.scheduler or list(SCHEDULERS):
            r = simulate(sc, sched, args.seed)
            results.append(r)
            print(_row(r, best))
        results.append(best)
        print(_row(best, best))
    if args.plot:
        _plot(results, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
