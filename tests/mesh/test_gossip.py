"""Gossip scenarios: nodes on a simulated clock from now = 0, joined by links of 50 ms.

`Network` (whalescale.mesh.simulate) is the in-memory router: it moves each node's
outbox along its links and fires each node's timer at its deadline.
"""

from __future__ import annotations

import itertools
import random

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whalescale.identity import Identity
from whalescale.mesh import records
from whalescale.mesh.gossip import GossipNode, GossipParams
from whalescale.mesh.gossip_messages import (
    BUCKETS,
    Digest,
    MessageType,
    Request,
    Summary,
    decode_message,
    encode_digest,
    encode_request,
    encode_summary,
)
from whalescale.mesh.records import EndpointRecord, GossipEndpoint, PathType
from whalescale.mesh.simulate import Network

HOME = GossipEndpoint("198.51.100.1", 51820, PathType.IPV4)
ROAMED = GossipEndpoint("203.0.113.9", 40000, PathType.IPV4)
BLACKHOLE = GossipEndpoint("192.0.2.66", 6666, PathType.IPV4)


def update(*recs: EndpointRecord) -> bytes:
    return bytes((MessageType.UPDATE, len(recs))) + b"".join(map(records.encode_record, recs))


def line(*names: str) -> Network:
    net = Network(names)
    for a, b in itertools.pairwise(names):
        net.link(a, b)
    return net


def holds(net: Network, peer: str, record: EndpointRecord) -> set[str]:
    return {n for n, node in net.nodes.items() if node.gossip.current(net[peer].id) == record}


# ----- spreading ----------------------------------------------------------------

def test_record_walks_down_a_line_one_link_delay_per_hop():
    net = line("a", "b", "c", "d", "e")
    record = net.publish("a", [ROAMED])
    net.run_until(0.199)
    assert holds(net, "a", record) == {"a", "b", "c", "d"}
    net.run_until(0.201)
    assert holds(net, "a", record) == {"a", "b", "c", "d", "e"}
    assert net["e"].gossip.current(net["a"].id).endpoints == (ROAMED,)


def test_star_hub_pushes_to_fanout_leaves_then_digests_reach_the_rest():
    leaves = [f"leaf{i}" for i in range(6)]
    net = Network(["hub", *leaves])
    for leaf in leaves:
        net.link("hub", leaf)
    record = net.publish("leaf0", [ROAMED])
    net.run_until(0.11)
    # leaf0 -> hub, then the hub pushes to 3 of the 5 other leaves (fanout).
    assert len(holds(net, "leaf0", record)) == 2 + 3
    # The hub's next digest goes to the two leaves it skipped: they catch up.
    net.run_until(net["hub"].gossip.params.anti_entropy_min_s * 1.25 + 0.3)
    assert holds(net, "leaf0", record) == {"hub", *leaves}


def test_fanout_skips_the_sender_and_the_subject():
    leaves = [f"leaf{i}" for i in range(10)]
    net = Network(["hub", *leaves])
    for leaf in leaves:
        net.link("hub", leaf)
    record = records.sign_self(net["leaf0"].identity, [ROAMED], seq=7)
    hub = net["hub"].gossip
    hub.receive(net["leaf1"].id, update(record), now=0.0)
    targets = [to for to, payload in hub.outbox if payload[0] == MessageType.UPDATE]
    assert len(targets) == 3
    assert net["leaf0"].id not in targets and net["leaf1"].id not in targets


def test_pushes_are_paced_per_neighbour_and_coalesced():
    net = line("a", "b")
    a = net["a"].gossip
    for _ in range(15):
        a.publish_self([ROAMED], now=0.0)
    # Burst of 10 messages (the first, the REQUEST for our own record when the link came
    # up), then the six newer records of the same peer wait as one.
    assert len(a.outbox) == 9
    assert a.next_deadline() == pytest.approx(0.2)
    a.outbox.clear()
    a.handle_timer(0.2)
    [(_, payload)] = a.outbox
    [(last, _)] = decode_message(payload).records
    assert last.seq == 15 == a.current(net["a"].id).seq


def test_anti_entropy_backs_off_to_the_seeds_interval():
    node, _ = _node()
    node.handle_timer(node.next_deadline())  # the first exchange with the neighbour
    node.publish_self([ROAMED], now=0.0)
    node.outbox.clear()
    digests: list[float] = []
    while (now := node.next_deadline()) < 4000:
        node.handle_timer(now)
        if any(payload[0] == MessageType.DIGEST for _, payload in node.outbox):
            digests.append(now)
        node.outbox.clear()
    gaps = [b - a for a, b in itertools.pairwise(digests)]
    assert 2.0 <= digests[0] < 2.5  # anti_entropy_min_s after the change, plus jitter
    # doubling: 4, 8, ... 256 s (each plus up to 25 %), then the seeds' 300 s
    for i, gap in enumerate(gaps[:7]):
        assert 2.0 * 2 ** (i + 1) <= gap < 2.5 * 2 ** (i + 1)
    assert gaps[8:] and all(300 <= g < 375 for g in gaps[8:])


def test_new_neighbour_gets_a_quick_first_exchange():
    net = Network(["a", "b", "c"])
    net.link("a", "b")
    record = net.publish("a", [ROAMED])
    net.run_for(10)
    assert "c" not in holds(net, "a", record)
    net.link("b", "c")  # c's session with b comes up
    net.run_for(1.25 + 0.4)  # first_exchange_s with jitter, then a few link delays
    assert "c" in holds(net, "a", record)


def test_observation_spreads_as_a_hint_only():
    net = line("a", "b", "c")
    home = net.publish("a", [HOME])
    net.run_for(1)
    hint = net.call("b", lambda g, now: g.observe(net["a"].id, ROAMED, now))
    net.run_for(1)
    c = net["c"].gossip
    assert c.current(net["a"].id) == home
    assert c.hints(net["a"].id) == [hint]
    assert c.counters["accepted_hint"] == 1
    # The same endpoint again is nothing new.
    assert net.call("b", lambda g, now: g.observe(net["a"].id, ROAMED, now)) is None


def test_restore_takes_cached_records_without_forwarding():
    net = line("a", "b")
    a_rec = records.sign_self(net["a"].identity, [HOME], 4)
    b_rec = records.sign_self(net["b"].identity, [ROAMED], 9)
    b = net["b"].gossip
    b.restore([a_rec, b_rec])
    assert b.current(net["a"].id) == a_rec and b.current(net["b"].id) == b_rec
    assert b.outbox == []
    net["b"].last_seq = 0  # a seq source behind our own record: we sign above the record
    assert b.publish_self([HOME], now=0.0).seq == 10


def test_removed_member_is_forgotten():
    net = line("a", "b")
    record = net.publish("a", [HOME])
    net.run_for(1)
    b = net["b"].gossip
    assert b.current(net["a"].id) == record
    net.unlink("a", "b")
    b.set_members([net["b"].id])
    assert b.current(net["a"].id) is None
    b.receive(net["a"].id, update(record), net.now)
    assert b.counters["unknown_neighbour"] == 1


# ----- hostile records: no endpoint moves, each counted under its reason ---------

@pytest.fixture
def hostile():
    """bob is the node under attack; victim's authoritative record is seq 5 at HOME;
    mallory is a member with a session to bob; outsider is not in the mesh."""
    net = Network(["bob", "victim", "mallory", "alice"])
    net.link("bob", "mallory")
    net.link("bob", "alice")
    net.now = 10.0
    old = records.sign_self(net["victim"].identity, [BLACKHOLE], 3)
    good = records.sign_self(net["victim"].identity, [HOME], 5)
    net["bob"].gossip.restore([good])
    return net, good, old


def _forged_self(net, good):  # mallory signs "I am victim, at BLACKHOLE"
    observation = records.sign_observation(net["mallory"].identity, good.peer_id, [BLACKHOLE], 6)
    return EndpointRecord(good.peer_id, (BLACKHOLE,), 6, True, net["mallory"].id,
                          observation.signature)


HOSTILE_CASES = {
    "unsigned": ("bad_signature", lambda net, good, old: EndpointRecord(
        good.peer_id, (BLACKHOLE,), 6, True, good.peer_id, bytes(64))),
    "signature of other content": ("bad_signature", lambda net, good, old: EndpointRecord(
        good.peer_id, (BLACKHOLE,), 6, True, good.peer_id, good.signature)),
    "self-attested under another key": ("forged_self_attestation",
                                        lambda net, good, old: _forged_self(net, good)),
    "replay of an older seq": ("replayed_or_older", lambda net, good, old: old),
    "same seq, other endpoints": ("conflicting_same_seq", lambda net, good, old:
                                  records.sign_self(net["victim"].identity, [BLACKHOLE], 5)),
    "unknown peer": ("unknown_peer", lambda net, good, old: records.sign_self(
        Identity.from_seed(b"\x99" * 32), [BLACKHOLE], 1)),
    "observation by a non-member": ("unknown_signer", lambda net, good, old:
                                    records.sign_observation(Identity.from_seed(b"\x99" * 32),
                                                             good.peer_id, [BLACKHOLE], 1)),
    "observation about ourselves": ("about_self", lambda net, good, old:
                                    records.sign_observation(net["mallory"].identity,
                                                             net["bob"].id, [BLACKHOLE], 1)),
}


@pytest.mark.parametrize("case", HOSTILE_CASES)
def test_hostile_record_is_refused(hostile, case):
    net, good, old = hostile
    reason, make = HOSTILE_CASES[case]
    bob = net["bob"].gossip
    bob.receive(net["mallory"].id, update(make(net, good, old)), net.now)
    assert bob.counters[reason] == 1
    assert bob.counters["accepted"] == bob.counters["accepted_hint"] == 0
    assert bob.current(good.peer_id) == good
    assert bob.current(net["bob"].id) is None  # nothing about bob was taken either
    assert bob.outbox == []  # nothing forwarded


def test_observation_never_moves_a_self_attested_endpoint(hostile):
    net, good, _ = hostile
    bob = net["bob"].gossip
    lie = records.sign_observation(net["mallory"].identity, good.peer_id, [BLACKHOLE], 99)
    bob.receive(net["mallory"].id, update(lie), net.now)
    assert bob.counters["accepted_hint"] == 1
    assert bob.current(good.peer_id) == good  # still HOME
    assert bob.hints(good.peer_id) == [lie]  # kept apart, advisory


def test_garbage_and_strangers_and_floods_are_counted(hostile):
    net, good, _ = hostile
    bob = net["bob"].gossip
    bob.receive(net["mallory"].id, b"\x01\x01" + b"\x00" * 40, net.now)
    bob.receive(Identity.from_seed(b"\x99" * 32).public, update(good), net.now)
    for _ in range(30):  # 10/s, burst 20
        bob.receive(net["alice"].id, update(good), net.now)
    assert bob.counters == {"restored": 1, "malformed": 1, "unknown_neighbour": 1,
                            "duplicate": 20, "rate_limited": 10}


def test_one_signer_cannot_make_the_mesh_forward_without_bound(hostile):
    net, good, _ = hostile
    bob = net["bob"].gossip
    for seq in range(1, 16):  # fifteen observations in one instant
        lie = records.sign_observation(net["mallory"].identity, good.peer_id, [BLACKHOLE], seq)
        bob.receive(net["mallory"].id, update(lie), net.now)
    assert bob.counters["accepted_hint"] == 10  # signer burst
    assert bob.counters["signer_rate_limited"] == 5


# ----- split brain (anti-patterns 3.2) --------------------------------------------

def test_split_segments_converge_on_the_highest_seq_when_joined():
    left, right = ["a", "b", "c"], ["d", "e", "f"]
    net = Network([*left, *right, "m"])
    for group in (left, right):
        for x, y in itertools.pairwise(group):
            net.link(x, y)
    net.link("c", "d")
    net.link("m", "a")
    for name in net.nodes:
        net.publish(name, [HOME])
    net.run_for(30)
    assert all(len({n.gossip.current(net[p].id) for n in net.nodes.values()}) == 1
               for p in net.nodes)

    net.unlink("c", "d")  # the split
    net.publish("m", [ROAMED])  # m, on the left, roams ...
    net.run_for(100)
    net.unlink("m", "a")
    net.link("m", "e")  # ... to the right segment
    net.publish("a", [ROAMED])
    a_latest = net.publish("a", [BLACKHOLE])
    d_latest = net.publish("d", [ROAMED])
    m_latest = net.publish("m", [BLACKHOLE])
    net.run_for(1000)  # long apart: several anti-entropy rounds on each side
    assert holds(net, "a", a_latest) == {"a", "b", "c"}
    assert holds(net, "d", d_latest) == {"d", "e", "f", "m"}
    assert holds(net, "m", m_latest) == {"d", "e", "f", "m"}

    net.link("c", "d")  # one link joins them: first exchange, hash-diff, pushes
    net.run_for(5)
    everyone = set(net.nodes)
    assert holds(net, "a", a_latest) == everyone
    assert holds(net, "d", d_latest) == everyone
    assert holds(net, "m", m_latest) == everyone
    digests = [n.gossip.digest() for n in net.nodes.values()]
    assert all(d == digests[0] for d in digests)


# ----- messages ------------------------------------------------------------------

def test_message_encodings_round_trip():
    for message, encode in ((Digest(3, (b"r" * 8,)), encode_digest),
                            (Digest(3, tuple(bytes([i]) * 8 for i in range(BUCKETS))),
                             encode_digest),
                            (Summary(0b101, ((b"p" * 32, 7),)), encode_summary),
                            (Request((b"p" * 32, b"q" * 32)), encode_request)):
        assert decode_message(encode(message)) == message


def _node() -> tuple[GossipNode, bytes]:
    me, other = Identity.from_seed(b"\x01" * 32), Identity.from_seed(b"\x02" * 32)
    rng = random.Random(1)
    node = GossipNode(me, [other.public], random_bytes=rng.randbytes,
                      next_seq=iter(range(1, 10**6)).__next__, params=GossipParams())
    node.set_neighbours({other.public}, 0.0)
    node.outbox.clear()  # the REQUEST for our own record
    node.restore([records.sign_self(other, [HOME], 5)])
    return node, other.public


def _state(node: GossipNode, other: bytes):
    return node.current(other), node.hints(other), node.current(node.id), node.digest()


payloads = st.one_of(
    st.binary(max_size=1300),
    st.builds(lambda t, rest: bytes([t]) + rest, st.integers(1, 4), st.binary(max_size=400)),
)


@given(payloads)
@settings(max_examples=400, deadline=None)
def test_receive_never_raises_and_garbage_changes_nothing_but_counters(payload):
    node, other = _node()
    before = _state(node, other)
    node.receive(other, payload, now=1.0)
    assert _state(node, other) == before
    assert sum(node.counters.values()) >= 0
    try:
        decode_message(payload)
    except ValueError:
        assert node.counters["malformed"] == 1
        assert node.outbox == []


# ----- our own seq after a lost state ---------------------------------------------

def test_a_node_that_lost_its_state_publishes_above_the_seq_the_mesh_holds():
    """a's cache is wiped: its counter starts at 1 again while b and c hold its record at
    seq 23. Asked when its links come up, b sends that record back; a signs above it, and
    its new endpoints reach c, two hops away, instead of being `replayed_or_older`."""
    net = line("a", "b", "c")
    net["a"].last_seq = 22
    old = net.publish("a", [HOME])
    net.run_for(5)
    assert holds(net, "a", old) == {"a", "b", "c"} and old.seq == 23
    net.restart_wiped("a")
    first = net.publish("a", [ROAMED])  # before any link is up again: seq 1
    assert first.seq == 1
    net.run_for(1)
    a, c = net["a"].gossip, net["c"].gossip
    assert a.current(net["a"].id).seq == 24
    assert a.counters["own_seq_returned"] == 1
    assert c.current(net["a"].id).seq == 24 and c.current(net["a"].id).endpoints == (ROAMED,)
    assert a.log_lines and "seq 23" in a.log_lines[0]
    assert a.publish_self([HOME], now=net.now).seq == 25  # and on from there


def test_a_summary_showing_a_higher_seq_of_ours_is_answered_by_a_request():
    node, other = _node()
    node.publish_self([HOME], now=0.0)
    node.outbox.clear()
    node.receive(other, encode_summary(Summary(0, ((node.id, 40),))), now=1.0)
    assert [decode_message(p) for _, p in node.outbox] == [Request((node.id,))]


def test_our_record_sent_back_is_taken_only_if_we_signed_it_and_it_is_not_older():
    node, other = _node()
    me = Identity.from_seed(b"\x01" * 32)
    node.publish_self([HOME], now=0.0)
    older = records.sign_self(me, [ROAMED], 0)
    forged = attrs.evolve(records.sign_self(me, [ROAMED], 50), seq=60)  # signature kept
    node.receive(other, update(older, forged), now=1.0)
    assert node.current(node.id).seq == 1
    assert node.counters["about_self"] == 2 and node.counters["own_seq_returned"] == 0
    # A republish above a returned seq waits out own_republish_spacing_s after the last.
    node.receive(other, update(records.sign_self(me, [ROAMED], 50)), now=2.0)
    assert node.current(node.id).seq == 51 and node.current(node.id).endpoints == (HOME,)
    node.receive(other, update(records.sign_self(me, [ROAMED], 70)), now=3.0)
    assert node.current(node.id).seq == 51
    assert node.next_deadline() <= 32.0
    node.handle_timer(32.0)
    assert node.current(node.id).seq == 71
