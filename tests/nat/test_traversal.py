"""nat/traversal.py on a fake internet (tests/nat/sim.py): real session engines, NATs
simulated, a clock moved by hand. Which path each pair ends up on, and why."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whalescale.nat import bootstrap, nattype, punch, relay, traversal
from whalescale.nat import punch_messages as pm
from whalescale.nat.bootstrap import MAGIC
from whalescale.session import events
from whalescale.wire import port

from .sim import PORT, Internet, Nat


def internet(kind_a: str | None, kind_b: str | None) -> Internet:
    net = Internet()
    net.add("anchor-1", "198.51.100.1", anchor=True)
    net.add("anchor-2", "198.51.100.2", anchor=True)
    net.add("a", "192.168.1.2", nat=kind_a, public_ip="203.0.113.1" if kind_a else None)
    net.add("b", "192.168.2.2", nat=kind_b, public_ip="203.0.113.2" if kind_b else None)
    if kind_a is None:
        net.nodes["a"].address = "203.0.113.1"
    if kind_b is None:
        net.nodes["b"].address = "203.0.113.2"
    net.start()
    return net


def reaches(net: Internet, source: str, to: str) -> bool:
    payload = f"{source} to {to} at {net.now}".encode()
    net.send(source, to, payload)
    return any(payload in packet for packet in net.nodes[to].delivered)


def test_nat_type_comes_from_what_two_anchors_saw():
    net = internet("cone", "symmetric")
    a, b = net.nodes["a"].traversal, net.nodes["b"].traversal
    assert a.report.nat_type.name == "CONE" and a.report.observed == ("203.0.113.1", PORT)
    assert b.report.nat_type.name == "SYMMETRIC" and b.report.observed is None
    assert a.public_endpoints() == [("203.0.113.1", PORT)]
    assert b.public_endpoints() == []


def test_an_unanswered_probe_is_retried_soon():
    net = internet("cone", "symmetric")
    b = net.nodes["b"].traversal
    b.observations.clear()
    b.report = type(b.report)(type(b.report.nat_type).UNKNOWN)
    b.probe([(net.nodes["b"].local, ("198.51.100.77", PORT))], net.now)  # nobody there
    net.run(bootstrap.PROBE_TIMEOUT_S + traversal.PROBE_RETRY_S + 1.5)
    assert b.report.nat_type.name == "SYMMETRIC"


def test_two_port_restricted_cones_punch_a_direct_path():
    net = internet("cone", "cone")
    # at once: the punch is requested as the anchors come up, and starts on receipt
    net.run(punch.START_DELAY_S + 0.2)
    assert net.endpoint("a", "b") == ("203.0.113.2", PORT)
    assert net.endpoint("b", "a") == ("203.0.113.1", PORT)
    assert reaches(net, "a", "b") and reaches(net, "b", "a")
    for anchor in ("anchor-1", "anchor-2"):
        assert net.nodes[anchor].traversal.relays.channels() == 0


def test_symmetric_to_public_is_direct():
    net = internet("symmetric", None)
    net.run(4.0)
    assert net.endpoint("b", "a")[0] == "203.0.113.1"  # the symmetric side's new port
    assert not port.channel_of_alias(net.endpoint("a", "b"))
    assert reaches(net, "a", "b") and reaches(net, "b", "a")


def test_two_symmetric_nats_are_relayed_by_one_anchor_that_holds_no_key_of_theirs():
    net = internet("symmetric", "symmetric")
    net.run(5.0)
    assert port.channel_of_alias(net.endpoint("a", "b"))
    assert port.channel_of_alias(net.endpoint("b", "a"))
    assert reaches(net, "a", "b") and reaches(net, "b", "a")
    relays = [net.nodes[x].traversal.relays for x in ("anchor-1", "anchor-2")]
    assert sorted(r.channels() for r in relays) == [0, 1]
    assert sum(r.counters["forwarded"] for r in relays) > 0
    # the anchors' engines have sessions with a and with b, none between them
    for x in ("anchor-1", "anchor-2"):
        assert set(net.nodes[x].engine.peers[net.nodes[y].ident.x25519_public].name
                   for y in ("a", "b")) == {"a", "b"}


@pytest.mark.parametrize("nat", ["symmetric", "cone"])
def test_ipv6_is_tried_first_and_spares_two_symmetric_nats_the_relay(nat):
    net = Internet()
    net.add("anchor-1", "198.51.100.1", anchor=True)
    net.add("anchor-2", "198.51.100.2", anchor=True)
    net.add("a", "192.168.1.2", nat=nat, public_ip="203.0.113.1", ipv6="fd00:a::2")
    net.add("b", "192.168.2.2", nat=nat, public_ip="203.0.113.2", ipv6="fd00:b::2")
    net.start()
    net.run(4.0)
    assert net.endpoint("a", "b") == ("fd00:b::2", PORT)
    assert net.endpoint("b", "a") == ("fd00:a::2", PORT)
    assert all(n.traversal.relays.channels() == 0 for n in net.nodes.values())
    assert reaches(net, "a", "b") and reaches(net, "b", "a")


def test_two_nodes_on_one_lan_find_each_other_without_any_anchor():
    net = Internet()
    net.add("a", "192.168.1.2", lan="home")
    net.add("b", "192.168.1.3", lan="home")
    net.add("stranger", "192.168.7.9")
    net.start()
    net.run(1.0)
    assert net.endpoint("a", "b") == ("192.168.1.3", PORT)
    assert net.endpoint("b", "a") == ("192.168.1.2", PORT)
    assert reaches(net, "a", "b")
    # a hello from outside our LAN is not taken, even from a member
    hello = bootstrap.encode_lan_hello(net.nodes["a"].ident.public, b"n" * 16)
    net.nodes["a"].traversal.datagrams([(hello, ("192.168.7.9", PORT))], net.now)
    assert net.nodes["a"].traversal.lan.counters["not_from_lan"] == 1


def test_a_relay_opened_beside_a_punch_that_got_through_does_not_take_the_session():
    """Full cone against symmetric may fail (a full cone looks like any cone): each end
    opens the relay at once and punches on. The punch gets through first; the relay that
    comes up after it, or the invitation to it, must not move the session back."""
    net = internet("full", "symmetric")
    net.run(3.0)
    direct = net.endpoint("b", "a")
    assert not port.channel_of_alias(direct) and not port.channel_of_alias(net.endpoint("a", "b"))
    assert all(net.nodes[x].traversal.relays.channels() == 0 for x in ("anchor-1", "anchor-2"))
    # What the lab saw under load, in either order: the anchor's invitation (A opened)
    # arrives after B's punch got through, or B's own relay gets ready after it.
    b = net.nodes["b"].traversal
    a_id = b.engine.peer_named("a").spec.node_id
    anchor = b.engine.peer_named("anchor-1")
    b.control(anchor, relay.encode(relay.RelayOpen(a_id)), net.now)
    assert b.relay_client.counters["invitation_declined"] == 1
    b.relay_client.open(a_id, anchor.spec.node_id, net.now)
    b.control(anchor, relay.encode(relay.RelayReady(a_id, 77)), net.now)
    assert b.relay_client.state(a_id) is None  # closed again at once
    assert any("not needed, the direct path works" in line for line in b.log_lines)
    net.run(1.0)
    assert net.endpoint("b", "a") == direct
    assert reaches(net, "a", "b") and reaches(net, "b", "a")


def test_a_relayed_session_meeting_silence_tells_the_anchors_where_we_are():
    """An anchor relays only from where its own session sees a member: a relayed node
    whose gateway got a new public address is dropped there until that session hears
    it. On silence it sends each anchor a keepalive at once (the lab's recovery test:
    otherwise its persistent keepalive, 25 s at the default)."""
    net = internet("symmetric", "symmetric")
    net.run(5.0)
    assert port.channel_of_alias(net.endpoint("a", "b"))
    net.run(1.0)  # quiet: the anchors last heard from a before now
    a = net.nodes["a"]
    heard = {name: net.nodes[name].engine.peer_named("a").last_received_at
             for name in ("anchor-1", "anchor-2")}
    assert all(at < net.now for at in heard.values())
    a.traversal.engine_events([events.PeerUnanswered("b", 1.05, "no answer to our data")], net.now)
    net.pump()
    for name in heard:
        assert net.nodes[name].engine.peer_named("a").last_received_at == net.now


def test_an_anchor_tells_a_member_seen_on_data_at_a_new_source_not_on_a_handshake():
    net = internet("cone", "cone")
    net.run(5.0)
    anchor = net.nodes["anchor-1"].traversal
    moved, at = ("203.0.113.1", 40999), ("203.0.113.1", PORT)
    for event in (events.EndpointChanged("a", at, moved),  # a handshake: may be a replay
                  events.EndpointChanged("a", None, moved, on_data=True),  # first contact
                  events.EndpointChanged("a", port.relay_alias(3), moved, on_data=True),
                  events.EndpointChanged("anchor-2", at, moved, on_data=True)):
        anchor.engine_events([event], net.now)
    assert anchor.coordinator.counters["seen_at_sent"] == 0
    anchor.engine_events([events.EndpointChanged("a", at, moved, on_data=True)], net.now)
    assert anchor.coordinator.counters["seen_at_sent"] == 1
    net.pump()
    assert any("anchor-1 sees us at 203.0.113.1:40999 now" in line
               for line in net.nodes["a"].log), net.nodes["a"].log[-10:]


def test_a_relayed_pair_moves_to_a_direct_path_when_one_appears():
    net = internet("symmetric", "symmetric")
    net.run(5.0)
    assert port.channel_of_alias(net.endpoint("a", "b"))
    for name in ("a", "b"):  # both routers replaced by cone NATs (mappings start afresh)
        net.nodes[name].nat = Nat(net.nodes[name].nat.public_ip, "cone")
    net.run(relay.ClientParams().retry_direct_first_s + 5.0)
    assert net.endpoint("a", "b") == ("203.0.113.2", PORT)
    assert net.endpoint("b", "a") == ("203.0.113.1", PORT)
    assert all(net.nodes[x].traversal.relays.channels() == 0 for x in ("anchor-1", "anchor-2"))
    assert reaches(net, "a", "b") and reaches(net, "b", "a")


def test_punch_requests_back_off_while_the_peer_stays_out_of_reach():
    net = internet("cone", "cone")
    net.nodes["b"].nat.admits = lambda port, source: False  # b reaches nobody
    a = net.nodes["a"].traversal
    asked: list[float] = []
    request = a.puncher.request
    a.puncher.request = lambda *args: (asked.append(args[2]), request(*args))[1]
    net.run(150.0)
    gaps = [later - earlier for earlier, later in itertools.pairwise(asked)]
    # without the backoff: one every ~13 s (request timeout, then a relay that never opens)
    assert 4 <= len(asked) <= 8 and max(gaps) >= 30.0, asked


def test_traversal_messages_from_a_peer_that_is_no_anchor_are_counted_and_ignored():
    net = internet("cone", "cone")
    net.run(4.0)
    a = net.nodes["a"]
    peer_b = a.engine.peers[net.nodes["b"].ident.x25519_public]
    a.traversal.control(peer_b, bytes([3]) + b"\0" * 60, net.now)
    assert a.traversal.counters["traversal_from_non_anchor"] == 1


_SHARED = internet("cone", "cone")


@given(st.binary(min_size=0, max_size=120))
def test_garbage_on_the_shared_port_never_raises(junk):
    for first in (MAGIC, 1, 2, 3, 4):
        datagram = bytes([first]) + junk
        for name in ("a", "anchor-1"):
            traversal = _SHARED.nodes[name].traversal
            assert traversal.datagrams([(datagram, ("203.0.113.9", 4000))], _SHARED.now) == []


@given(st.binary(min_size=0, max_size=200), st.sampled_from(["a", "anchor-1"]),
       st.sampled_from(["b", "anchor-2"]))
def test_hostile_traversal_messages_never_raise(body, to, sender):
    """Any TRAVERSAL body, from an anchor or from a plain member, to a node or an anchor."""
    target = _SHARED.nodes[to]
    peer = target.traversal.engine.peers[_SHARED.nodes[sender].ident.x25519_public]
    target.traversal.control(peer, body, _SHARED.now)
    target.traversal.tick(_SHARED.now)


_IDS = st.sampled_from([n.ident.public for n in _SHARED.nodes.values()]) | st.binary(
    min_size=32, max_size=32)
_INFO = st.builds(
    pm.NatInfo, st.sampled_from(list(nattype.NatType)), st.sampled_from(list(nattype.Filtering)),
    st.lists(st.builds(pm.Candidate, st.just(pm.CandidateKind.OBSERVED), st.just("203.0.113.9"),
                       st.integers(1, 65535)), max_size=2).map(tuple))
_MESSAGES = st.one_of(
    st.builds(relay.RelayOpen, _IDS).map(relay.encode),
    st.builds(relay.RelayReady, _IDS, st.integers(1, port.MAX_CHANNEL)).map(relay.encode),
    st.builds(relay.RelayClose, _IDS).map(relay.encode),
    st.builds(pm.NatInfoMessage, _INFO).map(pm.encode),
    st.builds(pm.PunchRequest, _IDS, _INFO).map(pm.encode),
    st.builds(pm.Punch, _IDS, st.integers(0, 2**32 - 1), st.just(0.5), _INFO).map(pm.encode),
)


@given(st.lists(st.tuples(_MESSAGES, st.sampled_from(["a", "anchor-1"]),
                          st.sampled_from(["b", "anchor-2"])), max_size=8))
def test_well_formed_hostile_sequences_never_raise(messages):
    for body, to, sender in messages:
        target = _SHARED.nodes[to]
        peer = target.traversal.engine.peers[_SHARED.nodes[sender].ident.x25519_public]
        target.traversal.control(peer, body, _SHARED.now)
    _SHARED.run(0.5)
