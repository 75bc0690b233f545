"""Recovery of whalescale peers (design.txt §3.8): backoff 1 s -> 60 s, anchors first,
every known endpoint in turn, never giving up; vanilla WireGuard peers keep WireGuard's."""

from __future__ import annotations

import itertools

import pytest

from whalescale.identity import Identity
from whalescale.session import events

from .pair import B_ADDR, Pair, ip_packet, make_engine

ME = Identity.from_seed(b"\x51" * 32)
PEER = Identity.from_seed(b"\x52" * 32)
ENDPOINTS = (("10.0.0.2", 51820), ("10.0.1.2", 51820), ("fd00::2", 51820))


def initiation_times(spec_kw: dict, until: float) -> tuple[list[float], list[tuple], object]:
    """Initiations sent to a peer that never answers, from a packet sent at now = 0 (new
    handshakes: the first one's copies, the same bytes again, are not retries)."""
    engine = make_engine(ME, [("peer", PEER, "100.96.0.2", ENDPOINTS)], 3, spec_kw=spec_kw)
    engine.send_packets([ip_packet("100.96.0.1", "100.96.0.2")], 0.0)
    times, where, last = [0.0], [engine.outbox[0][1]], engine.outbox[0][0]
    engine.outbox.clear()
    while (deadline := engine.next_deadline()) is not None and deadline <= until:
        engine.handle_timer(deadline)
        for datagram, addr, _ in engine.outbox:
            if datagram != last:
                times.append(deadline)
                where.append(addr)
                last = datagram
        engine.outbox.clear()
    return times, where, engine


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def test_an_anchor_is_retried_after_1_2_4_s_up_to_60_s_and_never_given_up():
    times, _, engine = initiation_times({"whalescale": True, "anchor": True}, until=600.0)
    expected = [1, 2, 4, 8, 16, 32, 60, 60, 60]
    for gap, want in zip(gaps(times), expected, strict=False):
        assert want <= gap < want + 0.334
    assert gaps(times)[-1] == pytest.approx(60, abs=0.34)
    assert times[-1] > 540  # still trying after nine minutes
    assert not any(isinstance(e, events.HandshakeGaveUp) for e in engine.events)


def test_other_peers_start_later_so_anchors_come_first():
    times, _, _ = initiation_times({"whalescale": True, "anchor": False}, until=200.0)
    assert [round(g) for g in gaps(times)[:4]] == [4, 8, 16, 32]


def test_each_retry_goes_to_the_next_known_endpoint():
    _, where, _ = initiation_times({"whalescale": True, "anchor": True}, until=40.0)
    assert where[:6] == [ENDPOINTS[0], ENDPOINTS[1], ENDPOINTS[2], ENDPOINTS[0], ENDPOINTS[1],
                         ENDPOINTS[2]]


def test_a_vanilla_peer_keeps_wireguards_schedule_and_gives_up():
    times, _, engine = initiation_times({}, until=600.0)
    assert all(5 <= g < 5.334 for g in gaps(times))
    assert len(times) == 19
    assert any(isinstance(e, events.HandshakeGaveUp) for e in engine.events)


def test_data_sent_to_a_lost_peer_does_not_undo_the_backoff():
    engine = make_engine(ME, [("peer", PEER, "100.96.0.2", ENDPOINTS)], 4,
                         spec_kw={"whalescale": True, "anchor": True})
    initiations: set[bytes] = set()  # handshakes: a copy of one is the same bytes
    now = 0.0
    while now < 200.0:  # a packet every half second, and the timers in between
        engine.send_packets([ip_packet("100.96.0.1", "100.96.0.2")], now)
        while (deadline := engine.next_deadline()) is not None and deadline <= now + 0.5:
            engine.handle_timer(deadline)
        initiations.update(datagram for datagram, _, _ in engine.outbox)
        engine.outbox.clear()
        now += 0.5
    # 1+2+4+...+60: about 10 attempts in 200 s, not one every 5 s (40)
    assert 8 <= len(initiations) <= 12


def test_a_failed_hole_punch_leaves_a_working_session_where_it_is():
    """A punch towards an endpoint that never answers (nat/traversal.py) must not move a
    live session (say, one through a relay) to another endpoint when it times out."""
    pair = Pair(bob_kw={"spec_kw": {"whalescale": True}},
                alice_kw={"spec_kw": {"whalescale": True, "keepalive_s": 5.0}})
    pair.alice_to_bob()
    pair.pump()
    bob_at_alice = pair.alice.peers[pair.bob_id.x25519_public]
    bob_at_alice.learn_endpoints([B_ADDR, ("192.0.2.77", 51820)], pair.now)
    bob_at_alice.punch(("198.51.100.9", 4444), pair.now)  # goes nowhere
    pair.pump()
    for _ in range(6):
        pair.advance(5.0)
        pair.alice_to_bob()
        pair.pump()
    # (this pair delivers whatever the address: look where alice sent, not what arrived)
    assert ("alice", ("192.0.2.77", 51820)) not in pair.sent_to
    assert bob_at_alice.endpoint == B_ADDR and bob_at_alice.current is not None
