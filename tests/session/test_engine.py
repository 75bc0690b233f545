"""Scenarios of two engines on a fake clock, starting at now = 0."""

from __future__ import annotations

import itertools

import attrs
import pytest

from whalescale.identity import Identity
from whalescale.session import events
from whalescale.session.timers import (
    INITIATION_COPIES,
    INITIATION_COPY_EVERY_S,
    MAX_HANDSHAKE_ATTEMPTS,
    REKEY_TIMEOUT_S,
)
from whalescale.wire import control
from whalescale.wire import messages as wire

from .pair import A_ADDR, A_TUNNEL, B_TUNNEL, Pair, ip_packet, make_engine


def sizes(pair: Pair) -> list[tuple[str, int]]:
    return [(who, len(d)) for who, d in pair.wire]


def test_first_packet_triggers_handshake_and_arrives():
    pair = Pair()
    packet = pair.alice_to_bob(b"x" * 100)
    pair.pump()
    # initiation 148, response 92, then the staged packet (128 padded + 32)
    assert sizes(pair)[:2] == [("alice", 148), ("bob", 92)]
    assert pair.bob.inbox == [packet]
    assert len(pair.wire[2][1]) == 16 + 128 + 16
    completed = [e for e in pair.alice.events if isinstance(e, events.HandshakeCompleted)]
    assert completed and completed[0].initiator
    bob_done = [e for e in pair.bob.events if isinstance(e, events.HandshakeCompleted)]
    assert bob_done and not bob_done[0].initiator


def test_responder_learns_endpoint_and_answers():
    pair = Pair()
    pair.alice_to_bob()
    pair.pump()
    reply = pair.bob_to_alice(b"pong")
    pair.pump()
    assert pair.alice.inbox == [reply]
    assert pair.bob.peers[pair.alice_id.x25519_public].endpoint == A_ADDR


def test_replayed_transport_is_dropped():
    pair = Pair()
    pair.alice_to_bob()
    pair.pump()
    _, transport = pair.wire[-1]
    pair.bob.receive_datagram(transport, A_ADDR, pair.now)
    assert len(pair.bob.inbox) == 1
    assert pair.bob.drops["bad_tag_or_replay"] == 1


def test_replayed_initiation_gets_no_answer():
    pair = Pair()
    pair.alice_to_bob()
    pair.pump()
    _, initiation = pair.wire[0]
    pair.now += 1
    pair.bob.receive_datagram(initiation, A_ADDR, pair.now)
    assert pair.bob.outbox == []
    assert pair.bob.drops["replayed_initiation"] == 1


def test_unknown_peer_with_valid_mac1_gets_nothing():
    pair = Pair()
    stranger_id = Identity.from_seed(b"\x09" * 32)
    stranger = make_engine(stranger_id, [("bob", pair.bob_id, B_TUNNEL, (("10.0.0.2", 1),))],
                           seed=7)
    stranger.send_packets([ip_packet("100.96.0.9", B_TUNNEL)], 0.0)
    (initiation, _, _), = stranger.outbox
    pair.bob.receive_datagram(initiation, ("10.0.0.9", 5555), 0.0)
    assert pair.bob.outbox == []
    assert pair.bob.drops["unknown_peer"] == 1


def test_garbage_and_truncated_messages_are_counted():
    pair = Pair()
    for junk in (b"", b"\x01", b"\x04\0\0\0" + b"\0" * 10, b"\x01\0\0\0" + b"\0" * 144,
                 b"\x07\0\0\0hello", b"\x02\0\0\0" + b"\0" * 10):
        assert pair.bob.receive_datagram(junk, A_ADDR, 0.0) == []
    assert pair.bob.outbox == [] and pair.bob.inbox == []
    assert pair.bob.drops["malformed"] == 5
    assert pair.bob.drops["bad_mac1"] == 1


def test_bootstrap_and_relay_tagged_datagrams_are_returned_for_nat_traversal():
    """The NAT traversal protocols share the port: 0x57 starts a bootstrap message, and a
    WireGuard message with non-zero reserved bytes carries a relay channel."""
    pair = Pair()
    probe = b"\x57\x01\x01\x00" + b"\0" * 36
    tagged = b"\x04\x00\x00\x07" + b"\0" * 40
    others = pair.bob.receive_datagrams([(probe, A_ADDR), (tagged, A_ADDR)], 0.0)
    assert others == [(probe, A_ADDR), (tagged, A_ADDR)]
    assert not pair.bob.drops and pair.bob.outbox == []


def test_packet_from_address_the_peer_does_not_own_is_dropped():
    pair = Pair()
    pair.alice_to_bob()
    pair.pump()
    spoofed = ip_packet("100.96.0.77", B_TUNNEL)
    pair.alice.peers[pair.bob_id.x25519_public].send([spoofed], pair.now)
    pair.pump()
    assert pair.bob.drops["source_not_allowed"] == 1
    assert len(pair.bob.inbox) == 1


def test_rekey_after_120_s_with_traffic_takes_over_without_loss():
    pair = Pair()
    pair.alice_to_bob()
    pair.pump()
    first = pair.alice.peers[pair.bob_id.x25519_public].current
    delivered = 1
    # one packet each way a second for 130 s
    for _ in range(130):
        pair.advance(1.0)
        pair.alice_to_bob()
        pair.bob_to_alice()
        pair.pump()
        delivered += 1
    peer = pair.alice.peers[pair.bob_id.x25519_public]
    assert peer.current is not first and peer.current.born > 120
    assert len(pair.bob.inbox) == delivered
    assert pair.bob.drops == {} and pair.alice.drops == {}


def test_keys_are_not_used_after_reject_time():
    pair = Pair()
    pair.alice_to_bob()
    pair.pump()
    pair.now = 181.0
    pair.wire.clear()
    pair.alice_to_bob()
    # the old keypair is past REJECT_AFTER: a new initiation goes out, the packet waits
    assert sizes(pair) == [] and len(pair.alice.outbox) == 1
    assert len(pair.alice.outbox[0][0]) == wire.INITIATION_SIZE
    pair.pump()
    assert len(pair.bob.inbox) == 2


def test_handshake_retries_with_jitter_then_gives_up():
    pair = Pair()
    pair.lost.add("alice")  # bob never hears
    pair.alice_to_bob()
    pair.pump()
    pair.advance(200.0)
    sent = [d for who, d in pair.wire if who == "alice"]
    # each handshake, the retransmits too, copied INITIATION_COPIES times
    assert len(set(sent)) == MAX_HANDSHAKE_ATTEMPTS + 1
    assert len(sent) == (MAX_HANDSHAKE_ATTEMPTS + 1) * (1 + INITIATION_COPIES)
    initiated = [e for e in pair.alice.events if isinstance(e, events.HandshakeInitiated)]
    assert len(initiated) == MAX_HANDSHAKE_ATTEMPTS + 1
    assert any(isinstance(e, events.HandshakeGaveUp) for e in pair.alice.events)
    assert not pair.alice.peers[pair.bob_id.x25519_public].staged


def test_retry_interval_is_rekey_timeout_plus_jitter():
    pair = Pair()
    times = []
    pair.alice_to_bob()
    times.append(pair.now)
    last = pair.alice.outbox[0][0]
    pair.alice.outbox.clear()
    while len(times) < 4:
        deadline = pair.alice.next_deadline()
        pair.now = deadline
        pair.alice.handle_timer(pair.now)
        assert len(pair.alice.outbox) == 1
        if pair.alice.outbox[0][0] != last:  # not a copy of the last one: a retry
            times.append(pair.now)
            last = pair.alice.outbox[0][0]
        pair.alice.outbox.clear()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(REKEY_TIMEOUT_S <= g < REKEY_TIMEOUT_S + 0.334 for g in gaps)
    assert len(set(gaps)) > 1  # jitter


def test_keepalive_follows_received_data_after_10_s():
    pair = Pair()
    pair.alice_to_bob()
    pair.pump()
    pair.wire.clear()
    pair.advance(10.5)
    # bob received data and sent nothing: one keepalive (32 bytes)
    assert ("bob", 32) in sizes(pair)


def test_persistent_keepalive():
    pair = Pair(alice_kw={})
    alice_peer = pair.alice.peers[pair.bob_id.x25519_public]
    object.__setattr__(alice_peer.spec, "keepalive_s", 25.0)
    pair.alice_to_bob()
    pair.pump()
    pair.wire.clear()
    pair.advance(60.0)
    keepalives = [s for s in sizes(pair) if s == ("alice", 32)]
    assert len(keepalives) >= 2


def test_cookie_reply_under_load_then_mac2_accepted():
    pair = Pair(bob_kw={"under_load_per_s": 0})
    pair.alice_to_bob()
    pair.pump()
    # bob answered the initiation with a cookie reply, not a response; alice sent a new
    # one with the cookie (mac2) at once, not at the retransmit, and bob did the handshake
    assert sizes(pair)[:4] == [("alice", 148), ("bob", 64), ("alice", 148), ("bob", 92)]
    assert pair.bob.drops["cookie_required"] == 1
    # counted for status and metrics at both ends
    assert pair.bob.cookie_replies == {"sent": 1} and pair.alice.cookie_replies == {"accepted": 1}
    assert len(pair.bob.inbox) == 1


def test_under_load_the_initiation_with_the_cookie_is_copied_until_answered():
    """A flood fills the responder's queue: the initiation with the cookie is lost like
    most of what arrives. Copies follow every INITIATION_COPY_EVERY_S (not the retransmit
    1-5 s later); the first copy through completes the handshake, and the copies stop."""
    pair = Pair(bob_kw={"under_load_per_s": 0})
    pair.alice_to_bob()
    out, pair.alice.outbox = pair.alice.outbox, []
    (initiation, _, _), = out
    pair.bob.receive_datagram(initiation, A_ADDR, pair.now)
    pair.lost = {"alice"}
    pair.pump()  # bob's cookie reply reaches alice; her initiation with the cookie is lost
    pair.lost = set()
    assert sizes(pair) == [("bob", 64), ("alice", 148)]
    with_cookie = pair.wire[-1][1]
    assert pair.alice.next_deadline() == pytest.approx(INITIATION_COPY_EVERY_S)
    pair.advance(INITIATION_COPY_EVERY_S)
    initiations = [d for who, d in pair.wire if who == "alice" and len(d) == 148]
    assert initiations == [with_cookie, with_cookie]  # a copy: one handshake
    assert len(pair.bob.inbox) == 1 and pair.alice.handshake_outcomes["completed"] == 1
    pair.wire.clear()
    pair.advance(2.0)
    assert all(len(d) != 148 for who, d in pair.wire if who == "alice")  # no more copies


def test_a_lost_first_initiation_is_copied_and_the_copy_completes_the_handshake():
    """A responder's queue under a flood passes about one datagram in six, before it
    can even send a cookie: the first initiation goes out again as it is every
    INITIATION_COPY_EVERY_S, not only at the retransmit 1-5 s later."""
    pair = Pair()
    pair.lost = {"alice"}
    pair.alice_to_bob()
    pair.pump()  # lost
    pair.lost = set()
    assert pair.alice.next_deadline() == pytest.approx(INITIATION_COPY_EVERY_S)
    pair.advance(INITIATION_COPY_EVERY_S)
    initiations = [d for who, d in pair.wire if who == "alice" and len(d) == 148]
    assert len(initiations) == 2 and initiations[0] == initiations[1]  # one handshake
    assert pair.alice.handshake_outcomes["completed"] == 1 and len(pair.bob.inbox) == 1
    started = [e for e in pair.alice.events if isinstance(e, events.HandshakeInitiated)]
    assert len(started) == 1
    pair.wire.clear()
    pair.advance(2.0)
    assert all(len(d) != 148 for who, d in pair.wire if who == "alice")  # copies stopped


def test_an_answered_initiation_is_not_copied():
    pair = Pair()
    pair.alice_to_bob()
    pair.pump()
    pair.advance(INITIATION_COPY_EVERY_S * (INITIATION_COPIES + 1))
    assert [len(d) for who, d in pair.wire if who == "alice"].count(148) == 1


def test_diffie_hellman_work_for_unproven_sources_is_bounded_however_many_they_are():
    """Spoofed sources each stay under their own bucket; all together get the first
    UNDER_LOAD_HANDSHAKES_PER_S of a second, the rest a cookie reply (no DH)."""
    from whalescale.session.cookie import CookieGenerator
    from whalescale.session.engine import UNDER_LOAD_HANDSHAKES_PER_S

    pair = Pair()
    sealer = CookieGenerator(pair.bob_id.x25519_public)
    for i in range(200):
        body = wire.build_initiation_body(i, bytes(32 + 48 + 28))  # not a valid Noise message
        pair.bob.receive_datagram(sealer.seal(body, 0.0), (f"10.9.{i // 250}.{i % 250}", 1),
                                  0.5)
    assert pair.bob.drops["bad_initiation"] == UNDER_LOAD_HANDSHAKES_PER_S  # DH, then failed
    assert pair.bob.drops["cookie_required"] == 200 - UNDER_LOAD_HANDSHAKES_PER_S


def test_forged_cookie_reply_is_ignored():
    pair = Pair()
    pair.alice_to_bob()
    (initiation, _, _), = pair.alice.outbox
    sender = int.from_bytes(initiation[4:8], "little")
    forged = wire.build_cookie_reply(sender, b"\0" * 24, b"\1" * 32)
    pair.alice.receive_datagram(forged, ("10.0.0.2", 51820), 0.0)
    assert pair.alice.drops["bad_cookie_reply"] == 1
    assert not pair.alice.cookie_replies


def test_handshake_flood_from_one_source_is_rate_limited():
    pair = Pair()
    junk = b"\x01\0\0\0" + b"\0" * 144
    for _ in range(100):
        pair.bob.receive_datagram(junk, ("10.9.9.9", 1), 0.0)
    assert pair.bob.drops["rate_limited"] == 95
    assert pair.bob.drops["bad_mac1"] == 5


def test_update_peers_keeps_unchanged_sessions_and_wipes_removed_ones():
    pair = Pair()
    pair.alice_to_bob()
    pair.pump()
    bob_peer = pair.alice.peers[pair.bob_id.x25519_public]
    session = bob_peer.current
    carol = Identity.from_seed(b"\x33" * 32)
    spec = bob_peer.spec
    new_carol = make_engine(pair.alice_id, [("carol", carol, "100.96.0.3", ())], 5)
    carol_spec = next(iter(new_carol.peers.values())).spec
    changes = pair.alice.update_peers([spec, carol_spec])
    assert (changes.added, changes.removed, changes.unchanged) == (["carol"], [], ["bob"])
    assert pair.alice.peers[pair.bob_id.x25519_public].current is session
    assert pair.alice.route(ip_packet(A_TUNNEL, "100.96.0.3")).name == "carol"

    changes = pair.alice.update_peers([carol_spec])
    assert changes.removed == ["bob"]
    assert pair.alice.route(ip_packet(A_TUNNEL, B_TUNNEL)) is None
    # bob's next datagram on the old session finds no keypair
    pair.bob_to_alice()
    pair.pump()
    assert pair.alice.drops["unknown_index"] == 1 and pair.alice.inbox == []


def test_control_messages_only_between_whalescale_peers():
    pair = Pair(alice_kw={"spec_kw": {"whalescale": True}},
                bob_kw={"spec_kw": {"whalescale": True}})
    pair.alice_to_bob()
    pair.pump()
    at_bob, at_alice = [], []
    pair.bob.handle_control(control.Kind.GOSSIP, lambda *message: at_bob.append(message))
    pair.alice.handle_control(control.Kind.PONG, lambda *message: at_alice.append(message))
    to_bob = pair.alice.peers[pair.bob_id.x25519_public]
    pair.alice.send_control(to_bob, control.Kind.GOSSIP, b"rumour", pair.now)
    pair.alice.send_control(to_bob, control.Kind.PING, b"12345678", pair.now)
    pair.alice.send_control(to_bob, control.Kind.TRAVERSAL, b"\x01", pair.now)  # no handler
    pair.pump()
    (peer, kind, body, source, local, _), = at_bob  # the PING was answered by the engine
    assert (peer.name, kind, body, source, local) == ("alice", control.Kind.GOSSIP, b"rumour",
                                                      A_ADDR, None)
    (_, kind, body, _, _, _), = at_alice
    assert (kind, body) == (control.Kind.PONG, b"12345678")
    assert pair.bob.drops["unhandled_control"] == 1
    assert pair.bob.inbox == [pair.bob.inbox[0]]  # only the first IP packet reached the TUN


def test_a_vanilla_peer_never_gets_control_messages_nor_sends_them():
    pair = Pair(bob_kw={"spec_kw": {"whalescale": True}})  # alice sees bob as vanilla
    pair.alice_to_bob()
    pair.pump()
    with pytest.raises(ValueError, match="vanilla"):
        pair.alice.send_control(pair.alice.peers[pair.bob_id.x25519_public],
                                control.Kind.GOSSIP, b"x", pair.now)
    # a vanilla peer's control-looking plaintext is dropped and counted
    handled = []
    pair.alice.handle_control(control.Kind.GOSSIP, lambda *message: handled.append(message))
    pair.bob.peers[pair.alice_id.x25519_public].spec = attrs.evolve(
        pair.bob.peers[pair.alice_id.x25519_public].spec, node_id=None)
    pair.bob.peers[pair.alice_id.x25519_public].send([control.encode(control.Kind.GOSSIP,
                                                                     b"y")], pair.now)
    pair.pump()
    assert pair.alice.drops["control_from_vanilla_peer"] == 1
    assert handled == []
