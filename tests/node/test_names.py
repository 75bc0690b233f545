"""Endpoints by DNS name (node/names.py): looked up at start, every minute and when a peer
goes silent; a failed lookup keeps what the name stood for; a new answer is tried at once."""

from __future__ import annotations

from tests.nat.sim import Internet
from whalescale.config import Endpoint, parse_mesh
from whalescale.node.names import RESOLVE_AGAIN_S, RESOLVE_EVERY_S, Names

ANCHOR = ("198.51.100.1", 51820)


def named_anchor() -> Internet:
    net = Internet()
    net.add("anchor", ANCHOR[0], anchor=True, dns_name="anchor.mesh.test")
    net.add("a", "203.0.113.1")
    net.add("b", "203.0.113.2")
    return net


def anchor_endpoints(net: Internet, of: str) -> tuple:
    peer = net.nodes[of].engine.peers[net.nodes["anchor"].ident.x25519_public]
    return peer.spec.endpoints


def test_a_node_reaches_an_anchor_listed_by_name_once_the_name_resolves():
    net = named_anchor()
    net.start()
    assert {(who, name) for who, name, at in net.lookups} == {
        (n, "anchor.mesh.test") for n in ("anchor", "a", "b")}
    net.run(2.0)
    assert anchor_endpoints(net, "a") == (ANCHOR,)
    assert net.endpoint("a", "anchor") == ANCHOR and net.endpoint("a", "b") is not None
    assert "dns: anchor.mesh.test is 198.51.100.1" in net.nodes["a"].log
    # the new answer is tried at once (a node out of reach), whatever else it knows
    assert ("handshake with anchor at 198.51.100.1:51820: initiating (anchor.mesh.test "
            "resolved anew)") in net.nodes["a"].log


def test_a_failed_lookup_keeps_the_address_and_says_so_once():
    net = named_anchor()
    net.start()
    net.run(2.0)
    del net.dns["anchor.mesh.test"]
    net.run(2 * RESOLVE_EVERY_S + 1)
    assert anchor_endpoints(net, "a") == (ANCHOR,)
    assert net.endpoint("a", "anchor") == ANCHOR
    warnings = [line for line in net.nodes["a"].log if line.startswith("dns: ")]
    assert warnings[1:] == ["dns: anchor.mesh.test: Name or service not known; keeping "
                            "198.51.100.1"]


def test_the_name_is_looked_up_again_every_minute_and_a_new_answer_is_tried_at_once():
    net = named_anchor()
    net.start()
    net.run(2.0)
    net.dns["anchor.mesh.test"] = ["198.51.100.9", ANCHOR[0]]  # a second address first
    net.run(RESOLVE_EVERY_S)
    times = [at for who, name, at in net.lookups if who == "a"]
    assert len(times) == 2 and RESOLVE_EVERY_S - 1 <= times[1] - times[0] <= RESOLVE_EVERY_S + 1
    assert anchor_endpoints(net, "a") == (("198.51.100.9", 51820), ANCHOR)
    assert net.endpoint("a", "anchor") == ANCHOR  # a live session stays where it works


def test_a_silent_peer_with_a_named_endpoint_is_looked_up_again_soon():
    names = Names(parse_mesh(named_anchor().mesh_text(), "sim.toml"))
    assert names.due(0.0) == ("anchor.mesh.test",) and names.due(1.0) == ()
    names.soon((Endpoint("anchor.mesh.test", 51820), Endpoint("192.0.2.1", 1)), 2.0)
    assert names.next_deadline() == RESOLVE_AGAIN_S  # not sooner than 5 s after the last
    assert names.due(RESOLVE_AGAIN_S) == ("anchor.mesh.test",)
    names.soon((Endpoint("anchor.mesh.test", 51820),), 30.0)
    assert names.due(30.0) == ("anchor.mesh.test",)


def test_an_answer_for_a_name_the_mesh_dropped_is_ignored():
    names = Names(parse_mesh(named_anchor().mesh_text(), "sim.toml"))
    names.set_mesh(parse_mesh(named_anchor().mesh_text().replace(
        "anchor.mesh.test", "198.51.100.1"), "sim.toml"))
    assert names.answer("anchor.mesh.test", ["192.0.2.7"], "") == (False, None)
    assert names.expand((Endpoint("anchor.mesh.test", 1),)) == ()
