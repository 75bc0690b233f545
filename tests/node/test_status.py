"""What `whalescale status` and `ping` learn from the node: anchors counted from where the
node stands, a path kind only for a peer that answered, a peer found by tunnel address."""

from __future__ import annotations

from tests.nat.sim import Internet
from tests.session.pair import Pair, make_engine
from whalescale.identity import Identity
from whalescale.node.status import peer_status
from whalescale.session.peer import Peer


def two_anchors_two_laptops() -> Internet:
    net = Internet()
    net.add("anchor-1", "198.51.100.1", anchor=True)
    net.add("anchor-2", "198.51.100.2", anchor=True)
    net.add("a", "203.0.113.1")  # tunnel 100.96.0.3
    net.add("b", "203.0.113.2")  # tunnel 100.96.0.4
    net.start()
    net.run(3.0)
    return net


def status_of(net: Internet, name: str) -> dict:
    node = net.nodes[name].node
    assert node is not None
    return node.status(net.now)


def test_an_anchor_counts_only_the_other_anchors():
    net = two_anchors_two_laptops()
    assert status_of(net, "anchor-1")["anchors"] | {"health": "ok"} == {
        "health": "ok", "reachable": ["anchor-2"], "total": 1}
    assert status_of(net, "a")["anchors"]["total"] == 2


def test_the_only_anchor_has_no_other_anchor_to_reach():
    net = Internet()
    net.add("anchor", "198.51.100.1", anchor=True)
    net.add("a", "203.0.113.1")
    net.start()
    net.run(3.0)
    anchors = status_of(net, "anchor")["anchors"]
    assert anchors["reachable"] == [] and anchors["total"] == 0


def test_ping_finds_a_peer_by_name_or_by_tunnel_address():
    net = two_anchors_two_laptops()
    node = net.nodes["a"].node
    assert node is not None
    by_address = node.ping("100.96.0.4", b"\x01" * 8, net.now)
    assert isinstance(by_address, Peer) and by_address.name == "b"
    assert node.ping("b", b"\x02" * 8, net.now) is by_address
    assert node.ping("100.96.9.9", b"\x03" * 8, net.now) == (
        "no peer has tunnel address 100.96.9.9 in the mesh")
    assert node.ping("nobody", b"\x04" * 8, net.now) == "no peer named 'nobody' in the mesh"


def test_a_peer_never_heard_from_has_no_path_kind_until_it_answers():
    alice, bob = Identity.from_seed(b"\x01" * 32), Identity.from_seed(b"\x02" * 32)
    engine = make_engine(alice, [("bob", bob, "100.96.0.2", (("2001:db8::2", 51820),))], 1)
    (unheard,) = engine.peers.values()
    engine.start(0.0)  # an initiation goes out; nothing ever answers
    assert peer_status(unheard, False, 0.0, [], None, "wrr")["path"] is None

    pair = Pair()
    pair.alice_to_bob()
    pair.pump()
    (answered,) = pair.alice.peers.values()
    assert peer_status(answered, False, pair.now, [], None, "wrr")["path"] == "direct"
