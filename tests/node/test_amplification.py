"""No unauthenticated datagram is answered with more bytes than it carried (issue 15).

A stranger on the anchor's LAN sends every message the shared port takes before a
session exists; what the node sends back to that source is weighed against it. A
spoofed source would be a victim, so the answer must never outweigh the request.
"""

from __future__ import annotations

import functools

import hypothesis.strategies as st
from hypothesis import given, settings

from tests.nat import pre_handshake
from tests.nat.sim import PORT, Internet
from tests.session.pair import WALL, Pair
from whalescale.wire import messages as wire
from whalescale.wire.port import BOOTSTRAP_MAGIC

STRANGER = ("192.168.1.66", 40000)  # on the anchor's LAN: LAN hellos from it are heard


@functools.cache
def anchor_net(purpose: str) -> Internet:
    """An anchor on a LAN, three members elsewhere; handshakes done, nothing pending.
    One per `purpose`: the fuzz test drains rate limits that the table relies on."""
    net = Internet()
    net.add("anchor", "192.168.1.1", anchor=True, lan="home")
    net.add("b", "203.0.113.2")
    net.add("c", "203.0.113.3")
    net.add("d", "203.0.113.4")
    net.start()
    net.run(1.0)
    return net


def answers(net: Internet, datagram: bytes) -> list[bytes]:
    """What the anchor sends back to the stranger for `datagram`."""
    node = net.nodes["anchor"].node
    assert node is not None
    node.receive_datagrams([(datagram, STRANGER)], net.now)
    return [d for dest, _, sent in node.datagrams_to_send() if dest == STRANGER for d in sent]


def test_each_pre_handshake_message_is_answered_with_no_more_bytes_than_it_carried():
    net = anchor_net("table")
    anchor, b, c, d = (net.nodes[name] for name in ("anchor", "b", "c", "d"))
    table = pre_handshake.messages(anchor.ident.x25519_public, anchor.local, STRANGER, b.ident,
                                   (c.ident.public, d.ident.public), wall_s=WALL + 1e6)
    for what, datagram, expected in table:
        sent = answers(net, datagram)
        assert sum(map(len, sent)) == expected, what
        assert all(len(answer) <= len(datagram) for answer in sent), what
    # nor later: a legacy hello leaves no LAN candidate for handshake retries to go to
    assert anchor.engine.peers[d.ident.x25519_public].candidates.lan is None


def test_a_cookie_reply_is_smaller_than_the_initiation_it_answers():
    """Under load the responder answers with a cookie reply (whitepaper §5.4.7): 64 < 148."""
    pair = Pair(bob_kw={"under_load_per_s": 0})
    pair.alice.peers[pair.bob_id.x25519_public].initiate(0.0, retry=False, reason="test")
    (initiation, _, _), = pair.alice.outbox
    pair.bob.receive_datagrams([(initiation, ("192.0.2.1", PORT))], 0.0)
    (reply, _, _), = pair.bob.outbox
    assert wire.message_type(reply) == wire.MessageType.COOKIE_REPLY
    assert len(reply) == wire.COOKIE_REPLY_SIZE < len(initiation)


@settings(max_examples=300, deadline=None)
@given(first=st.sampled_from([BOOTSTRAP_MAGIC, 1, 2, 3, 4, 0]),
       second=st.integers(0, 255), kind=st.integers(0, 4), rest=st.binary(max_size=200))
def test_no_datagram_from_a_stranger_is_answered_with_more_bytes(first, second, kind, rest):
    datagram = bytes([first, second, kind]) + rest
    assert all(len(d) <= len(datagram) for d in answers(anchor_net("fuzz"), datagram))
