"""The node as production wires it (node/node.py), on the fake internet of tests/nat/sim.py:
the mesh controller, traversal and the engine together."""

from __future__ import annotations

import random

from tests.nat.sim import Host, Internet, Nat
from whalescale.wire.port import channel_of_alias


def relayed_pair() -> Internet:
    """Two symmetric NATs: only an anchor's relay joins them."""
    net = Internet()
    net.add("anchor-1", "198.51.100.1", anchor=True)
    net.add("anchor-2", "198.51.100.2", anchor=True)
    net.add("a", "192.168.1.2", nat="symmetric", public_ip="203.0.113.1")
    net.add("b", "192.168.2.2", nat="symmetric", public_ip="203.0.113.2")
    net.start()
    net.run(10.0)
    return net


def on_relay(net: Internet) -> bool:
    return all(channel_of_alias(net.endpoint(x, y) or ("", 1)) for x, y in (("a", "b"), ("b", "a")))


def test_reloads_at_any_moment_never_move_a_relayed_session_off_its_relay():
    """A reload re-applies where peers are (gossip, static, LKG cache): the relay alias, which
    no such source knows, stays first (session/endpoints.py). Pings every 0.1 s, reloads of
    either end at varied moments: every ping is answered, the relay is never left."""
    net = relayed_pair()
    assert on_relay(net)
    rng = random.Random(12)
    sent = answered = reloads = 0
    while reloads < 12:
        for _ in range(rng.randint(1, 40)):
            payload = f"ping {sent}".encode()
            net.send("a", "b", payload)
            sent += 1
            answered += any(payload in p for p in net.nodes["b"].delivered)
            net.run(0.1)
            assert on_relay(net)
        net.reload(rng.choice("ab"))
        reloads += 1
        assert on_relay(net)
    assert answered == sent


def test_a_reload_leaves_a_direct_session_where_it_is():
    """A session heard from stays where it is, even at an address no candidate names
    (a symmetric NAT's port, learned by passive roaming)."""
    net = Internet()
    net.add("anchor-1", "198.51.100.1", anchor=True)
    net.add("a", "192.168.1.2", nat="symmetric", public_ip="203.0.113.1")
    net.add("b", "203.0.113.2")
    net.start()
    net.run(5.0)
    at = net.endpoint("b", "a")
    assert at is not None and at[0] == "203.0.113.1" and not channel_of_alias(at)
    for _ in range(5):
        net.reload("b")
        net.run(0.3)
        assert net.endpoint("b", "a") == at


def punched_cone_pair(anchors: int) -> tuple[Internet, Host]:
    """a and b behind port-restricted cones, punched direct; returns a's host too."""
    net = Internet()
    for k in range(1, anchors + 1):
        net.add(f"anchor-{k}", f"198.51.100.{k}", anchor=True)
    a = net.add("a", "192.168.1.2", nat="cone", public_ip="203.0.113.1")
    net.add("b", "192.168.2.2", nat="cone", public_ip="203.0.113.2")
    net.start()
    net.run(2.0)
    assert net.endpoint("b", "a") == ("203.0.113.1", 51820)
    return net, a


def longest_gap_while_b_sends(net: Internet, a: Host, seconds: float) -> float:
    """b alone sends a every 0.1 s: the longest time a got none of it."""
    last_answer, longest_gap = net.now, 0.0
    for i in range(round(seconds / 0.1)):
        payload = f"to a {i}".encode()
        net.send("b", "a", payload)
        if any(payload in p for p in a.delivered):
            longest_gap, last_answer = max(longest_gap, net.now - last_answer), net.now
        net.run(0.1)
    return max(longest_gap, net.now - last_answer)


def test_a_nat_rebinding_is_found_by_silence_and_punched_again_within_seconds():
    """a's gateway gets a new public address (invisible to a): b's port-restricted NAT
    drops a's traffic from it. a's data meets silence, a PING too (or an anchor tells a
    it sees a at a new address); a re-probes and asks for a punch at once instead of
    waiting out three keepalives."""
    net, a = punched_cone_pair(anchors=2)
    a.nat = Nat("203.0.113.101", "cone")  # the gateway's new address; its mappings gone
    last_answer, longest_gap = net.now, 0.0
    for i in range(100):  # 10 s of a ping every 0.1 s
        payload = f"after {i}".encode()
        net.send("a", "b", payload)
        net.send("b", "a", payload)  # b answers what it gets (both ways must work)
        if any(payload in p for p in net.nodes["b"].delivered) and any(
                payload in p for p in net.nodes["a"].delivered):
            longest_gap, last_answer = max(longest_gap, net.now - last_answer), net.now
        net.run(0.1)
    assert net.endpoint("b", "a") == ("203.0.113.101", 51820)
    assert longest_gap < 2.5, longest_gap  # 1 s of silence, 0.3 s settling, a 0.5 s punch
    # whichever comes first: an anchor that got a's traffic from the new address tells
    # a, or a's data meets silence
    assert any(("no answer to our data" in line or "sees us at 203.0.113.101:51820" in line)
               and "looking for a new path" in line for line in a.log), a.log[-20:]


def test_a_nat_rebinding_is_found_by_the_stream_that_stops_when_only_the_other_end_sends():
    """a's gateway gets a new public address while only b sends to a: a receives nothing,
    sends nothing, and b's own silence detection can only ask the anchors, which still
    know a's old address. a notices b's steady data stop, its PING goes unanswered, and
    it shows the anchors where it is and asks for a punch, not after its next keepalive."""
    net, a = punched_cone_pair(anchors=1)
    for i in range(10):  # b's flow is under way
        net.send("b", "a", f"before {i}".encode())
        net.run(0.1)
    a.nat = Nat("203.0.113.101", "cone")
    longest_gap = longest_gap_while_b_sends(net, a, 5.0)  # the keepalive is 25 s
    assert net.endpoint("b", "a") == ("203.0.113.101", 51820)
    # up to 0.7 s for the stream to look stopped, 0.35 s for the PING, 0.3 s settling,
    # a 0.5 s punch
    assert longest_gap < 2.5, longest_gap
    assert any("its data stopped" in line and "looking for a new path" in line
               for line in a.log), a.log[-20:]


def test_an_idle_session_is_punched_again_when_an_anchor_sees_us_at_a_new_address():
    """a's gateway gets a new public address while a and b are idle. a's next keepalive
    shows the anchor a's new source; the anchor tells a (SEEN_AT), and a asks for a punch
    to b at once, so b's next packets get through, not after b's own silence."""
    net, a = punched_cone_pair(anchors=1)
    a.nat = Nat("203.0.113.101", "cone")
    net.run(30.0)  # a persistent keepalive to the anchor (25 s), nothing else sent
    assert any("anchor-1 sees us at 203.0.113.101:51820 now, looking for a new path" in line
               for line in a.log), a.log[-20:]
    assert net.endpoint("b", "a") == ("203.0.113.101", 51820)
    assert longest_gap_while_b_sends(net, a, 2.0) < 0.15


def test_a_node_that_moves_is_found_again_though_only_the_other_end_sends():
    """a changes networks (new address, new NAT) and sends nothing: its address change
    alone starts the search (re-probe, publish, punch), not b's silence detection, which
    could only wait for a's next keepalive to show the anchors where a went."""
    net, a = punched_cone_pair(anchors=1)
    a.address, a.nat = "10.20.0.7", Nat("198.18.0.9", "cone")  # another network
    assert a.node is not None
    a.node.set_interfaces(a.interfaces(), net.now)
    longest_gap = longest_gap_while_b_sends(net, a, 5.0)
    assert net.endpoint("b", "a") == ("198.18.0.9", 51820)
    assert longest_gap < 1.5, longest_gap  # 0.3 s settling, a 0.5 s punch
    assert any("our addresses changed, looking for a new path" in line for line in a.log)


def test_a_node_that_lost_its_cache_and_moved_is_followed_by_its_peers():
    """a's earlier runs left its record at seq 2**32 + 1 (its second start's block) with
    the others; now it starts with no cache (seqs from 1 again) at a new address. The
    neighbours it asks send that record back; a publishes above it, and b holds a's new
    endpoints instead of counting its records as `replayed_or_older`."""
    net = Internet()
    net.add("anchor-1", "198.51.100.1", anchor=True)
    net.add("anchor-2", "198.51.100.2", anchor=True)
    a = net.add("a", "203.0.113.10")
    net.add("b", "203.0.113.20")
    net.start()
    net.restart("a", next_self_seq=2**32 + 1)  # a warm restart: the cache's second block
    net.run(10.0)
    b_gossip = net.nodes["b"].node.controller.gossip
    assert b_gossip.current(a.ident.public).seq == 2**32 + 1
    a.address = "203.0.113.77"
    net.restart("a", next_self_seq=1)  # the state dir wiped
    net.run(5.0)
    record = b_gossip.current(a.ident.public)
    assert record.seq > 2**32 + 1
    assert ("203.0.113.77", 51820) in [(e.host, e.port) for e in record.endpoints]
    assert any("gossip: the mesh holds our record at seq 4294967297" in line
               for line in a.log), a.log[-20:]
