"""The receiver's reordering buffer, one per session, keyed by the global counter.

Packets of one session arrive out of order when its paths differ in delay.
This buffer puts them back in counter order before they reach the TUN, so the
inner TCP does not take reordering for loss (anti-patterns 3.9), and bounds
what that costs:

- at most `max_bytes` (4 MB) of packets are held, and at most `max_depth`
  packets: the hard memory bound (3.10); one more forces the oldest gap to be
  skipped. The seeds' bound was 128 packets, for phone-era rates; the bench
  held up to 114 at 45 Mbit/s (jitter on a path, a queue on another), so at
  100 Mbit/s and more 128 packets would skip gaps that were only late. 4 MB
  is ~250 ms (the timeout's ceiling) of a 128 Mbit/s flow; the packet cap
  bounds the per-packet overhead of tiny packets;
- every gap (a missing counter with later packets held) waits at most
  `timeout_s` after the first later packet arrived, then is skipped;
- a gap is skipped at once when it is *known lost*: paths are FIFO, so once
  every live path has delivered something sent after the missing counter
  (`passed[path]` > counter), the missing packet cannot arrive any more;
- `path_failed(path_id)` drops the path from the live set; the gaps that only
  it could still have filled are then known lost and flushed at once, so a
  dead path never stalls the session (anti-patterns 2.9);
- a packet whose gap was skipped arrives *late*: dropped and counted
  (`late_drops`); one already released or held is a duplicate.

Each data packet carries (path_id, path_seq) besides its counter, and the
sender's data paths (`data_paths`, a bit per path, sender.py): a path whose
bit is clear owes nothing below that counter, as if it had delivered up to it.
So a path the scheduler leaves idle (a slow one the harm rule skips) or one the
sender found dead never holds a gap open, and a path named there that was not
heard yet holds every gap (it may still fill it). A heartbeat on an idle path
carries the sender's next counter at the time (`counter_mark`), which tells
the receiver that everything sent on that path before it has come or is lost.
This is how the buffer knows which counters belonged to which path without the
sender listing them.

The timeout: timeout = clamp(max(base + spread + k * jitter, fill_margin *
fill_max), min_timeout, max_timeout).
- spread and jitter come from the paths (`set_latency`): the difference between
  the largest and smallest one-way delay of the usable paths (half their
  smoothed RTTs) and the largest RTT variation. A packet on the slowest path
  arrives about `spread` after a later one on the fastest; `k * jitter` covers
  the variation (k = 4, as RFC 6298 does for the RTO).
- fill_max is measured here: the longest a head gap took to fill (its packet
  arriving `now - exposed_at` after a later one), and for a late packet how long
  it would have taken; a decaying maximum (halved every `fill_half_life_s`).
  Smoothed RTTs lag the queues that build on a loaded path; what the buffer
  itself sees does not (a late drop raises the timeout at once).
- The clamp keeps one bad estimate from stalling the session (ceiling 250 ms,
  what a slow path may add before it is not worth using: scheduler.py) or from
  skipping on scheduler noise (floor 5 ms).

Nothing here retransmits (anti-patterns 1.7): a skipped gap is a loss the inner
protocol handles.
"""

from __future__ import annotations

import heapq
from collections import deque

import attrs

from .paths import PathId

# The seeds' bound (multipath brief / anti-patterns 3.10): what a receiver of the previous
# release holds, so what a sender may count on (scheduler.py's depth budget).
MAX_REORDERING_DEPTH = 128
# Implementation: skipped counter ranges remembered this far back for `late_drops`.
_LATE_MEMORY = 8192
# Added-delay histogram bucket upper bounds, seconds.
DELAY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, float("inf"))


@attrs.frozen(slots=True)
class ReorderParams:
    max_bytes: int = 4 << 20
    max_depth: int = 4096
    base_s: float = 0.002
    k_jitter: float = 4.0
    min_timeout_s: float = 0.005
    max_timeout_s: float = 0.25
    fill_margin: float = 1.25
    fill_half_life_s: float = 10.0


@attrs.define
class ReorderStats:
    released: int = 0
    gaps_skipped: int = 0  # skip events (one gap may span several counters)
    counters_skipped: int = 0
    skipped_by: dict[str, int] = attrs.Factory(
        lambda: {"timeout": 0, "depth": 0, "known_lost": 0, "path_failed": 0})
    late_drops: int = 0
    duplicates: int = 0
    max_depth: int = 0
    added_delay_total_s: float = 0.0
    added_delay_max_s: float = 0.0
    added_delay_histogram: list[int] = attrs.Factory(lambda: [0] * len(DELAY_BUCKETS_S))

    @property
    def added_delay_mean_s(self) -> float:
        return self.added_delay_total_s / self.released if self.released else 0.0

    def record_delay(self, delay_s: float) -> None:
        self.added_delay_total_s += delay_s
        self.added_delay_max_s = max(self.added_delay_max_s, delay_s)
        for i, bound in enumerate(DELAY_BUCKETS_S):
            if delay_s <= bound:
                self.added_delay_histogram[i] += 1
                break


class ReorderBuffer:
    def __init__(self, params: ReorderParams = ReorderParams(), first_counter: int = 0) -> None:
        self.params = params
        self.stats = ReorderStats()
        self._path_timeout_s = params.max_timeout_s  # until set_latency measures the paths
        self._fill_max_s = 0.0
        self._fill_at = 0.0
        self._next = first_counter
        self._held: dict[int, tuple[object, float, int]] = {}  # counter -> (packet, at, bytes)
        self._held_bytes = 0
        self._order: list[int] = []  # heap of held counters
        self._arrivals: deque[tuple[float, int]] = deque()  # arrival order (monotone times)
        self._skipped: deque[tuple[int, int, float]] = deque()  # [start, end), opened at
        self._passed: dict[PathId, int] = {}  # highest counter known sent-and-passed per path
        self._path_seq: dict[PathId, int] = {}
        self._live: set[PathId] = set()

    # ----- configuration from the session's path measurements -----------------
    def set_latency(self, spread_s: float, jitter_s: float) -> None:
        p = self.params
        self._path_timeout_s = p.base_s + max(0.0, spread_s) + p.k_jitter * max(0.0, jitter_s)

    @property
    def timeout_s(self) -> float:
        p = self.params
        raw = max(self._path_timeout_s, p.fill_margin * self._fill_max_s)
        return min(p.max_timeout_s, max(p.min_timeout_s, raw))

    def _fill_sample(self, waited_s: float, now: float) -> None:
        decay = 0.5 ** ((now - self._fill_at) / self.params.fill_half_life_s)
        self._fill_max_s = max(waited_s, self._fill_max_s * decay)
        self._fill_at = now

    def path_added(self, path_id: PathId) -> None:
        self._live.add(path_id)
        self._passed.setdefault(path_id, self._next - 1)

    def path_failed(self, path_id: PathId, now: float) -> list[object]:
        """The path is gone: gaps only it could fill are flushed now."""
        self._live.discard(path_id)
        return self._drain(now, failed=True)

    @property
    def depth(self) -> int:
        return len(self._held)

    @property
    def next_counter(self) -> int:
        return self._next

    # ----- arrivals -------------------------------------------------------------
    def push(self, counter: int, path_id: PathId, path_seq: int, packet: object,
             now: float, data_paths: int | None = None, nbytes: int = 0) -> list[object]:
        """One authenticated data packet (`nbytes` long); returns the packets now released
        in order. `data_paths` (None: every path heard) is the sender's mask (sender.Send)."""
        self._note_path(path_id, path_seq, counter)
        if data_paths is not None:
            self._note_data_paths(data_paths, counter)
        if counter < self._next or counter in self._held:
            exposed_at = self._skipped_at(counter) if counter < self._next else None
            if exposed_at is not None:
                self.stats.late_drops += 1
                self._fill_sample(now - exposed_at, now)
            else:
                self.stats.duplicates += 1
            return self._drain(now)
        if counter == self._next and self._held:
            self._fill_sample(now - self._head_gap_exposed_at(), now)
        self._held[counter] = (packet, now, nbytes)
        self._held_bytes += nbytes
        heapq.heappush(self._order, counter)
        self._arrivals.append((now, counter))
        return self._drain(now)

    def heartbeat(self, path_id: PathId, path_seq: int, counter_mark: int,
                  now: float) -> list[object]:
        """A heartbeat on a path: all it carried below `counter_mark` came or is lost."""
        self._note_path(path_id, path_seq, counter_mark - 1)
        return self._drain(now)

    def _note_path(self, path_id: PathId, path_seq: int, counter: int) -> None:
        if path_id not in self._passed:
            self.path_added(path_id)
        if path_seq < self._path_seq.get(path_id, -1):
            return  # not FIFO (a path delivered its own seqs out of order): proves nothing
        self._path_seq[path_id] = path_seq
        self._passed[path_id] = max(self._passed[path_id], counter)

    def _note_data_paths(self, data_paths: int, counter: int) -> None:
        for pid in self._passed:
            if not data_paths >> pid & 1:
                self._passed[pid] = max(self._passed[pid], counter - 1)
        named = data_paths
        while named:
            pid = (named & -named).bit_length() - 1
            named &= named - 1
            if pid not in self._passed:
                self.path_added(pid)  # not heard yet: it holds every gap until it is

    # ----- timers ----------------------------------------------------------------
    def next_deadline(self) -> float | None:
        exposed = self._head_gap_exposed_at()
        return None if exposed is None else exposed + self.timeout_s

    def handle_timer(self, now: float) -> list[object]:
        return self._drain(now)

    # ----- release -----------------------------------------------------------------
    def _head_gap_exposed_at(self) -> float | None:
        """When the oldest gap opened: the arrival of the earliest packet still held."""
        while self._arrivals and self._arrivals[0][1] not in self._held:
            self._arrivals.popleft()
        return self._arrivals[0][0] if self._arrivals else None

    def _drain(self, now: float, failed: bool = False) -> list[object]:
        out: list[object] = []
        while True:
            self._release_run(now, out)
            if not self._held:
                break
            first_held = self._order[0]
            known = min((self._passed[p] for p in self._live), default=first_held - 1)
            if known >= self._next:
                self._skip(min(known + 1, first_held), "path_failed" if failed else "known_lost")
            elif (len(self._held) > self.params.max_depth
                  or self._held_bytes > self.params.max_bytes):
                self._skip(first_held, "depth")
            elif now >= self._head_gap_exposed_at() + self.timeout_s:
                self._skip(first_held, "timeout")
            else:
                break
        self.stats.max_depth = max(self.stats.max_depth, len(self._held))
        return out

    def _release_run(self, now: float, out: list[object]) -> None:
        while self._order and self._order[0] == self._next:
            heapq.heappop(self._order)
            packet, arrived_at, nbytes = self._held.pop(self._next)
            self._held_bytes -= nbytes
            self.stats.released += 1
            self.stats.record_delay(now - arrived_at)
            out.append(packet)
            self._next += 1

    def _skip(self, end: int, reason: str) -> None:
        self.stats.gaps_skipped += 1
        self.stats.counters_skipped += end - self._next
        self.stats.skipped_by[reason] += 1
        self._skipped.append((self._next, end, self._head_gap_exposed_at() or 0.0))
        while self._skipped and self._skipped[0][1] < end - _LATE_MEMORY:
            self._skipped.popleft()
        self._next = end

    def _skipped_at(self, counter: int) -> float | None:
        """When the skipped gap holding `counter` had opened; None if never skipped."""
        for start, end, exposed_at in self._skipped:
            if start <= counter < end:
                return exposed_at
        return None
