"""The reordering buffer, from numbered tables (fake clock from now = 0).

Two paths, A = 0 and B = 1. Each step pushes (counter, path, path_seq) at a
time and expects the counters released by that push.
"""

from __future__ import annotations

import pytest

from whalescale.multipath.reorder import ReorderBuffer, ReorderParams

A, B = 0, 1
FIXED = ReorderParams(min_timeout_s=0.05, max_timeout_s=0.05)  # timeout exactly 50 ms


def buffer(params: ReorderParams = FIXED) -> ReorderBuffer:
    buf = ReorderBuffer(params)
    buf.path_added(A)
    buf.path_added(B)
    return buf


# (name, [(now, counter, path, path_seq, released)], expected stats)
CASES = [
    ("in order", [
        (0.000, 0, A, 0, [0]),
        (0.001, 1, B, 0, [1]),
        (0.002, 2, A, 1, [2]),
    ], dict(released=3, gaps_skipped=0)),
    ("one gap filled", [
        (0.000, 0, A, 0, [0]),
        (0.001, 2, A, 1, []),
        (0.010, 1, B, 0, [1, 2]),
    ], dict(released=3, gaps_skipped=0, max_depth=1)),
    ("gap filled by the slow path, fast path runs ahead", [
        (0.000, 1, A, 0, []),
        (0.001, 2, A, 1, []),
        (0.002, 3, A, 2, []),
        (0.030, 0, B, 0, [0, 1, 2, 3]),
    ], dict(released=4, max_depth=3)),
    ("duplicate of a held and of a released packet", [
        (0.000, 0, A, 0, [0]),
        (0.001, 2, A, 1, []),
        (0.002, 2, A, 2, []),
        (0.003, 0, A, 3, []),
    ], dict(duplicates=2)),
    ("known lost: both paths moved past the gap", [
        (0.000, 0, A, 0, [0]),
        (0.001, 2, A, 2, []),  # A's seq 1 (counter 1) never came
        (0.002, 3, B, 0, [2, 3]),  # B is past counter 1 too: it cannot come
    ], dict(gaps_skipped=1, counters_skipped=1)),
]


@pytest.mark.parametrize(("name", "steps", "expected"), CASES, ids=[c[0] for c in CASES])
def test_reorder_table(name, steps, expected):
    buf = buffer()
    for i, (now, counter, path, seq, released) in enumerate(steps):
        assert buf.push(counter, path, seq, counter, now) == released, f"step {i}"
    for key, value in expected.items():
        assert getattr(buf.stats, key) == value, key


def test_gap_times_out_after_exactly_the_timeout_then_late_packet_is_dropped():
    buf = buffer()
    assert buf.push(1, A, 0, 1, now=0.0) == []
    assert buf.next_deadline() == pytest.approx(0.05)
    assert buf.handle_timer(0.049) == []
    assert buf.handle_timer(0.05) == [1]
    assert buf.stats.skipped_by["timeout"] == 1
    assert buf.next_deadline() is None
    # Counter 0 was on B, 60 ms late: it is dropped and counted, not delivered.
    assert buf.push(0, B, 0, 0, now=0.06) == []
    assert buf.stats.late_drops == 1 and buf.stats.duplicates == 0


def test_depth_overflow_forces_the_oldest_gap_skipped():
    buf = buffer(ReorderParams(max_depth=4, min_timeout_s=1.0, max_timeout_s=1.0))
    for c in range(1, 5):  # counter 0 missing; B keeps silent so 0 is not known lost
        assert buf.push(c, A, c - 1, c, now=0.0) == []
    assert buf.depth == 4
    assert buf.push(5, A, 4, 5, now=0.001) == [1, 2, 3, 4, 5]
    assert buf.stats.skipped_by["depth"] == 1
    assert buf.stats.max_depth <= 4


def test_hard_bound_of_4_mb_holds_under_a_long_gap():
    buf = ReorderBuffer(ReorderParams(min_timeout_s=10.0, max_timeout_s=10.0))
    buf.path_added(A)
    buf.path_added(B)
    for c in range(1, 5000):
        buf.push(c, A, c - 1, c, now=c * 1e-4, nbytes=1400)
        assert buf.depth * 1400 <= 4 << 20
    assert buf.stats.max_depth > 2900  # ~4 MB of 1400-byte packets: beyond 128, as rates need
    assert buf.stats.skipped_by["depth"] > 0


def test_path_failure_flushes_its_gaps_at_once():
    # A carries even counters, B odd ones; B dies after counter 1.
    buf = buffer(ReorderParams(min_timeout_s=1.0, max_timeout_s=1.0))
    assert buf.push(0, A, 0, 0, now=0.0) == [0]
    assert buf.push(1, B, 0, 1, now=0.0) == [1]
    for seq, c in enumerate([2, 4, 6], start=1):
        buf.push(c, A, seq, c, now=0.01 * seq)
    assert buf.next_counter == 3  # waiting on B's counter 3
    released = buf.path_failed(B, now=0.05)
    assert released == [4, 6]
    assert buf.stats.skipped_by["path_failed"] >= 1
    assert buf.next_deadline() is None


def test_gap_above_a_live_paths_progress_still_waits_after_a_failure():
    buf = buffer(ReorderParams(min_timeout_s=1.0, max_timeout_s=1.0))
    buf.path_added(2)
    buf.push(0, A, 0, 0, now=0.0)
    buf.push(3, A, 1, 3, now=0.0)  # 1 and 2: on B or on path 2
    assert buf.path_failed(B, now=0.01) == []  # path 2 may still bring them
    assert buf.push(1, 2, 0, 1, now=0.02) == [1]
    assert buf.push(2, 2, 1, 2, now=0.03) == [2, 3]


def test_heartbeat_on_an_idle_path_tells_what_it_no_longer_carries():
    buf = buffer(ReorderParams(min_timeout_s=1.0, max_timeout_s=1.0))
    buf.push(0, A, 0, 0, now=0.0)
    buf.push(2, A, 2, 2, now=0.0)  # A lost its seq 1 (counter 1); B idle
    assert buf.next_counter == 1
    assert buf.heartbeat(B, 0, counter_mark=3, now=0.1) == [2]
    assert buf.stats.skipped_by["known_lost"] == 1


def test_timeout_follows_the_path_spread_and_clamps():
    buf = ReorderBuffer()
    buf.set_latency(spread_s=0.09, jitter_s=0.005)
    assert buf.timeout_s == pytest.approx(0.002 + 0.09 + 4 * 0.005)
    buf.set_latency(spread_s=0.0, jitter_s=0.0)
    assert buf.timeout_s == pytest.approx(0.005)
    buf.set_latency(spread_s=2.0, jitter_s=0.0)
    assert buf.timeout_s == pytest.approx(0.25)


def test_a_late_packet_raises_the_timeout():
    buf = buffer(ReorderParams())
    buf.set_latency(0.0, 0.0)
    buf.push(1, A, 0, 1, now=0.0)
    buf.handle_timer(0.005)
    buf.push(0, B, 0, 0, now=0.02)  # 20 ms after its gap opened: late
    assert buf.timeout_s == pytest.approx(1.25 * 0.02)


def test_added_delay_is_recorded():
    buf = buffer()
    buf.push(1, A, 0, 1, now=0.0)
    buf.push(0, B, 0, 0, now=0.01)
    assert buf.stats.added_delay_max_s == pytest.approx(0.01)
    assert buf.stats.added_delay_mean_s == pytest.approx(0.005)
    assert sum(buf.stats.added_delay_histogram) == 2


def test_a_path_outside_the_senders_data_paths_holds_no_gap():
    # B is idle (the harm rule skips it): A's loss of counter 1 is known at once.
    buf = buffer(ReorderParams(min_timeout_s=1.0, max_timeout_s=1.0))
    assert buf.push(0, A, 0, 0, now=0.0, data_paths=1 << A) == [0]
    assert buf.push(2, A, 2, 2, now=0.001, data_paths=1 << A) == [2]
    assert buf.stats.skipped_by["known_lost"] == 1
    # The same arrival without the mask waits: counter 1 might be on B.
    plain = buffer(ReorderParams(min_timeout_s=1.0, max_timeout_s=1.0))
    plain.push(0, A, 0, 0, now=0.0)
    assert plain.push(2, A, 2, 2, now=0.001) == []


def test_a_named_path_not_heard_yet_holds_every_gap():
    buf = ReorderBuffer(ReorderParams(min_timeout_s=1.0, max_timeout_s=1.0))
    both = 1 << A | 1 << B
    assert buf.push(0, A, 0, 0, now=0.0, data_paths=both) == [0]
    assert buf.push(2, A, 1, 2, now=0.001, data_paths=both) == []  # 1 may be on B
    assert buf.push(1, B, 0, 1, now=0.09, data_paths=both) == [1, 2]


def test_a_path_the_sender_dropped_has_its_gaps_flushed_by_the_next_packet():
    # A carries even counters, B odd ones; B dies after counter 1, the sender notices.
    buf = buffer(ReorderParams(min_timeout_s=1.0, max_timeout_s=1.0))
    both = 1 << A | 1 << B
    assert buf.push(0, A, 0, 0, now=0.0, data_paths=both) == [0]
    assert buf.push(1, B, 0, 1, now=0.0, data_paths=both) == [1]
    for seq, c in enumerate([2, 4, 6], start=1):
        buf.push(c, A, seq, c, now=0.01 * seq, data_paths=both)
    assert buf.next_counter == 3
    assert buf.push(8, A, 4, 8, now=0.2, data_paths=1 << A) == [4, 6, 8]
