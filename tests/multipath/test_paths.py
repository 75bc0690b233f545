"""Path health, RTT and MTU (fake clock from now = 0)."""

from __future__ import annotations

import pytest

from whalescale.multipath.paths import (
    TRANSITIONS,
    HealthParams,
    Path,
    PathEvent,
    PathState,
    PathStateError,
    tunnel_mtu,
)


def path(pid: int = 0, mtu: int = 1420) -> Path:
    return Path(pid, ("10.0.0.1", 1), ("10.0.0.2", 2), mtu, created_at=0.0)


def test_silence_fails_a_path_after_the_heartbeat_intervals():
    p = path()
    hp = HealthParams()
    fail_at = hp.fail_after_intervals * hp.heartbeat_interval_s
    assert p.next_health_deadline() == pytest.approx(fail_at)
    assert p.evaluate(0.25) is PathState.DEGRADED  # silent over 2 intervals
    assert p.evaluate(fail_at) is PathState.FAILED
    p.on_heard(1.0)
    assert p.evaluate(1.0) is PathState.DEGRADED  # back, on probation
    assert p.evaluate(1.05) is PathState.HEALTHY


def test_loss_degrades_and_recovery_needs_the_lower_threshold():
    p = path()
    for i in range(20):
        p.on_report(packets=90 * (i + 1), nbytes=0, lost=10 * (i + 1), now=0.05 * i)
    assert p.loss_rate > 0.05
    assert p.evaluate(0.95) is PathState.DEGRADED
    lost = 200
    n = 1800
    for i in range(30):
        n += 100
        p.on_report(n, 0, lost, now=1.0 + 0.05 * i)
        p.evaluate(1.0 + 0.05 * i)
    assert p.state is PathState.HEALTHY


def test_illegal_move_names_state_and_event():
    p = path()
    p.state = PathState.FAILED
    with pytest.raises(PathStateError, match="GOOD in FAILED"):
        p.apply(PathEvent.GOOD)


def test_every_state_has_a_silent_move():
    assert all((s, PathEvent.SILENT) in TRANSITIONS for s in PathState)


def test_rtt_smoothing_follows_rfc6298():
    p = path()
    p.on_rtt_sample(0.1)
    assert (p.srtt, p.rttvar) == (0.1, 0.05)
    p.on_rtt_sample(0.2)
    assert p.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.2)
    assert p.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.1)
    assert p.min_rtt == 0.1


def test_stale_cumulative_report_is_ignored():
    p = path()
    assert p.on_report(10, 14000, 0, now=0.1) == 14000
    assert p.on_report(5, 7000, 0, now=0.2) == 0


def test_tunnel_mtu_is_the_minimum_over_usable_paths():
    a, b = path(0, 1420), path(1, 1280)
    assert tunnel_mtu([a, b]) == 1280
    b.state = PathState.FAILED
    assert tunnel_mtu([a, b]) == 1420
    a.state = PathState.FAILED
    assert tunnel_mtu([a, b]) is None


def test_a_loaded_path_fails_once_its_oldest_unreported_packet_is_overdue():
    p = path()
    p.on_rtt_sample(0.01)
    p.rttvar = 0.0
    p.on_heard(1.0)
    for i in range(10):
        p.on_send(1.0 + i * 0.001)  # seqs 0..9
    # srtt + 4 rttvar + report slack is 0.11 s, under the 0.2 s floor
    assert p.next_health_deadline() == pytest.approx(1.2)
    p.on_report(packets=5, nbytes=7000, lost=0, now=1.05, highest_seq=4)
    assert p.next_health_deadline() == pytest.approx(1.005 + 0.2)  # seq 5's send
    p.on_report(packets=10, nbytes=14000, lost=0, now=1.06, highest_seq=9)
    assert p.next_health_deadline() == pytest.approx(1.06 + 0.4)  # only silence is left
    p.on_send(1.1)
    assert p.evaluate(1.3) is PathState.FAILED  # 0.2 s: the heartbeat rule waits 0.4


def test_a_path_back_from_an_outage_forgets_the_outages_loss():
    p = path()
    p.on_report(packets=100, nbytes=0, lost=0, now=0.1)
    assert p.evaluate(0.6) is PathState.FAILED  # silent
    # Back: the report counts everything sent into the outage as lost.
    p.on_report(packets=101, nbytes=0, lost=200, now=1.0)
    assert p.loss_rate > 0.1
    assert p.evaluate(1.0) is PathState.DEGRADED
    assert p.loss_rate == 0.0
    assert p.evaluate(1.05) is PathState.HEALTHY
