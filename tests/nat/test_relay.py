"""Anchor relay: bodies, the tag, the anchor's table, the ends' client; now from 0.0."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whalescale.nat import relay
from whalescale.nat.relay import (
    MalformedRelay,
    RelayClient,
    RelayClose,
    RelayDown,
    RelayOpen,
    RelayParams,
    RelayReady,
    RelayTable,
    RelayUp,
    RetryDirect,
)
from whalescale.wire import port

A, B, C, ANCHOR, ANCHOR2, STRANGER = (bytes([x]) * 32
                                      for x in (0x0A, 0x0B, 0x0C, 0xAA, 0xAB, 0xEE))
A_AT, B_AT, ANCHOR_AT = ("192.0.2.1", 40001), ("198.51.100.2", 50002), ("203.0.113.5", 51820)
ANCHOR2_AT = ("203.0.113.6", 51820)
TRANSPORT = bytes((4, 0, 0, 0)) + b"\x11" * 12 + b"ciphertext and tag"


def counting_bytes():
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


# ----- wire ------------------------------------------------------------------------------

@pytest.mark.parametrize("message", [RelayOpen(B), RelayClose(A), RelayReady(B, 1),
                                     RelayReady(A, port.MAX_CHANNEL)])
def test_round_trip(message):
    assert relay.decode(relay.encode(message)) == message


@pytest.mark.parametrize("body", [
    b"", b"\x10" + B[:31], b"\x10" + B + b"\x00", b"\x12", b"\x11" + B + bytes(4),
    b"\x11" + B + b"\x01\x00\x00\x00", b"\x11" + B + b"\x00\x00\x01", b"\x01" + B, b"\x13" + B,
])
def test_malformed(body):
    with pytest.raises(MalformedRelay):
        relay.decode(body)


def check_decode(body: bytes) -> None:
    try:
        message = relay.decode(body)
    except MalformedRelay:
        return
    assert relay.encode(message) == body


@given(st.binary(max_size=48))
def test_decode_raises_only_malformed(body):
    check_decode(body)


@given(st.sampled_from([b"\x10", b"\x11", b"\x12"]), st.binary(max_size=40))
def test_decode_after_a_valid_type(kind, rest):
    check_decode(kind + rest)


@given(st.sampled_from([1, 2, 3, 4]), st.binary(min_size=0, max_size=60),
       st.integers(1, port.MAX_CHANNEL))
def test_tag_round_trips(kind, rest, channel):
    datagram = bytes((kind, 0, 0, 0)) + rest
    tagged = port.tag(datagram, channel)
    assert len(tagged) == len(datagram)  # no bytes added: the MTU is unchanged
    assert port.relay_channel(tagged) == channel
    assert port.untag(tagged) == datagram
    assert port.relay_channel(datagram) == 0


def test_tag_leaves_other_datagrams_alone():
    assert port.relay_channel(b"\x57\x01\x01\x00") == 0  # bootstrap
    assert port.relay_channel(b"\x04") == 0
    with pytest.raises(ValueError):
        port.tag(b"\x57\x01\x01\x00", 5)
    with pytest.raises(ValueError):
        port.tag(port.tag(TRANSPORT, 5), 6)


@pytest.mark.parametrize("addr, channel", [
    (port.relay_alias(1), 1), (port.relay_alias(port.MAX_CHANNEL), port.MAX_CHANNEL),
    (("100::", 0), 0), (("100::5", 51820), 0), (A_AT, 0), (("2001:db8::5", 0), 0),
    (("not an address", 0), 0),
])
def test_aliases(addr, channel):
    assert port.channel_of_alias(addr) == channel


def test_anchor_choice_is_stable_and_spread():
    anchors = [bytes([0xA0 + i]) * 32 for i in range(4)]
    assert relay.choose_anchor(A, B, anchors) == relay.choose_anchor(B, A, anchors[::-1])
    assert relay.choose_anchor(A, B, []) is None
    assert relay.choose_anchor(A, anchors[0], anchors[:1]) is None  # never one of the pair
    pairs = [(bytes([i]) * 32, bytes([i + 100]) * 32) for i in range(40)]
    chosen = {p: relay.choose_anchor(*p, anchors) for p in pairs}
    assert len(set(chosen.values())) == 4  # load spreads over every anchor
    # losing one anchor moves only the pairs it relayed
    survivors = anchors[1:]
    for p, anchor in chosen.items():
        if anchor != anchors[0]:
            assert relay.choose_anchor(*p, survivors) == anchor


# ----- scenario: anchor and two ends ---------------------------------------------------

class Trio:
    def __init__(self, params: RelayParams | None = None) -> None:
        self.at = {A: A_AT, B: B_AT}
        self.anchor = RelayTable([A, B, C], self.at.get, random_bytes=counting_bytes(),
                                 params=params)
        self.ends = {n: RelayClient(accept=lambda peer: peer in (A, B, C),
                                    anchor_endpoint={ANCHOR: ANCHOR_AT}.get) for n in (A, B)}

    def deliver(self, now: float) -> None:
        while self.anchor.outbox or any(e.outbox for e in self.ends.values()):
            for node, end in self.ends.items():
                for _, body in end.outbox:
                    self.anchor.receive(node, body, now)
                end.outbox.clear()
            for to, body in self.anchor.outbox:
                self.ends[to].receive(ANCHOR, body, now)
            self.anchor.outbox.clear()


def test_open_with_consent_then_forward_both_ways():
    trio = Trio()
    a, b = trio.ends[A], trio.ends[B]
    a.open(B, ANCHOR, now=0.0)
    trio.deliver(now=0.0)  # A opens, the anchor invites B, B agrees, both get READY
    assert a.events == [RelayUp(B, ANCHOR, 1)] and b.events == [RelayUp(A, ANCHOR, 1)]
    assert trio.anchor.counters == {"invited": 1, "opened": 1}

    # A's engine sends to B's alias; the shell turns it into a tagged datagram to the anchor
    wire, to = a.outgoing(TRANSPORT, port.relay_alias(1))
    assert to == ANCHOR_AT and port.relay_channel(wire) == 1
    forwarded, dest = trio.anchor.forward(wire, A_AT, now=1.0)
    assert dest == B_AT and forwarded == wire  # ciphertext untouched
    assert b.incoming(forwarded, ANCHOR_AT) == (TRANSPORT, port.relay_alias(1))
    back, _ = b.outgoing(TRANSPORT, port.relay_alias(1))
    assert trio.anchor.forward(back, B_AT, now=1.0) == (back, A_AT)
    # a real endpoint passes through untouched
    assert a.outgoing(TRANSPORT, B_AT) == (TRANSPORT, B_AT)


def test_the_anchor_follows_roaming_and_drops_strangers():
    trio = Trio()
    trio.ends[A].open(B, ANCHOR, now=0.0)
    trio.deliver(now=0.0)
    wire = port.tag(TRANSPORT, 1)
    assert trio.anchor.forward(wire, ("192.0.2.66", 1), now=1.0) is None
    assert trio.anchor.forward(port.tag(TRANSPORT, 2), A_AT, now=1.0) is None
    trio.at[B] = ("198.51.100.2", 60000)  # B's session with the anchor roamed
    assert trio.anchor.forward(wire, A_AT, now=1.0) == (wire, ("198.51.100.2", 60000))
    del trio.at[B]
    assert trio.anchor.forward(wire, A_AT, now=1.0) is None
    assert trio.anchor.counters["wrong_source"] == 1
    assert trio.anchor.counters["unknown_channel"] == 1
    assert trio.anchor.counters["peer_gone"] == 1


def test_an_end_that_does_not_agree_gets_no_traffic():
    trio = Trio()
    trio.ends[B] = RelayClient(accept=lambda _: False, anchor_endpoint={ANCHOR: ANCHOR_AT}.get)
    trio.ends[A].open(B, ANCHOR, now=0.0)
    trio.deliver(now=0.0)
    assert trio.anchor.channels() == 0
    assert trio.anchor.forward(port.tag(TRANSPORT, 1), A_AT, now=1.0) is None
    trio.anchor.handle_timer(trio.anchor.next_deadline())  # the half-open entry goes
    trio.deliver(now=10.0)
    assert trio.ends[A].events == [RelayDown(B)]
    assert trio.anchor.next_deadline() is None


def test_idle_channels_expire_and_forwarding_keeps_them():
    trio = Trio(RelayParams(idle_s=60.0))
    trio.ends[A].open(B, ANCHOR, now=0.0)
    trio.deliver(now=0.0)
    trio.anchor.forward(port.tag(TRANSPORT, 1), A_AT, now=50.0)
    assert trio.anchor.next_deadline() == 110.0
    trio.anchor.handle_timer(110.0)
    trio.deliver(now=110.0)
    assert trio.ends[A].state(B) is None and trio.ends[B].state(A) is None
    assert trio.ends[A].events[-1] == RelayDown(B)


def test_anchor_state_and_rates_are_bounded():
    trio = Trio(RelayParams(max_channels=1, packets_per_s=1.0, packets_burst=2.0))
    trio.ends[A].open(B, ANCHOR, now=0.0)
    trio.deliver(now=0.0)
    trio.at[C] = ("192.0.2.9", 1)
    trio.anchor.receive(C, relay.encode(RelayOpen(A)), now=0.0)
    assert trio.anchor.counters["full"] == 1
    wire = port.tag(TRANSPORT, 1)
    assert [trio.anchor.forward(wire, A_AT, now=1.0) is not None for _ in range(3)] == [
        True, True, False]
    for _ in range(6):
        trio.anchor.receive(C, relay.encode(RelayOpen(B)), now=5.0)
    for body in (relay.encode(RelayOpen(C)), relay.encode(RelayOpen(STRANGER)), b"\x10"):
        trio.anchor.receive(A, body, now=9.0)
    trio.anchor.receive(STRANGER, relay.encode(RelayOpen(A)), now=9.0)
    trio.anchor.receive(A, relay.encode(RelayReady(B, 1)), now=9.0)
    assert trio.anchor.counters == {
        "invited": 1, "opened": 1, "full": 7, "rate_limited": 2, "forwarded": 2,
        "bad_peer": 1, "malformed": 1, "not_a_member": 1, "unexpected_ready": 1}


def test_a_direct_path_closes_the_relay_at_once():
    trio = Trio()
    a = trio.ends[A]
    a.open(B, ANCHOR, now=0.0)
    trio.deliver(now=0.0)
    # while relayed, a direct path is retried with backoff: 30 s, 60 s, ...
    a.handle_timer(a.next_deadline())
    assert a.events[-1] == RetryDirect(B) and a.next_deadline() == 90.0
    a.direct_path(B)
    trio.deliver(now=70.0)
    assert a.state(B) is None and a.counters["upgraded"] == 1
    assert a.events[-1] == RelayDown(B) and trio.ends[B].events[-1] == RelayDown(A)
    assert trio.anchor.channels() == 0
    assert a.outgoing(TRANSPORT, port.relay_alias(1)) is None  # the alias is gone with it
    a.direct_path(B)  # nothing left to close
    assert a.counters["upgraded"] == 1


def test_an_end_follows_its_peer_to_another_anchor():
    """B's relay to A went through anchor 1, the only one B reached then. A restarts and
    asks through anchor 2, the pair's choice now that both are up: B leaves its old
    channel (which leads to an A that forgot it) and agrees. Declining, as it did, left
    each end waiting on its own anchor (lab: a warm restart of a relayed pair stayed
    silent)."""
    anchor_at = {ANCHOR: ANCHOR_AT, ANCHOR2: ANCHOR2_AT}
    at = {A: A_AT, B: B_AT}
    anchors = {a: RelayTable([A, B], at.get, random_bytes=counting_bytes()) for a in anchor_at}
    ends = {n: RelayClient(accept=lambda _: True, anchor_endpoint=anchor_at.get) for n in (A, B)}

    def deliver(now: float) -> None:
        while any(e.outbox for e in ends.values()) or any(t.outbox for t in anchors.values()):
            for node, end in ends.items():
                for anchor, body in end.outbox:
                    anchors[anchor].receive(node, body, now)
                end.outbox.clear()
            for anchor, table in anchors.items():
                for to, body in table.outbox:
                    ends[to].receive(anchor, body, now)
                table.outbox.clear()

    ends[B].open(A, ANCHOR, now=0.0)
    deliver(now=0.0)
    assert ends[B].events == [RelayUp(A, ANCHOR, 1)]
    ends[A] = RelayClient(accept=lambda _: True, anchor_endpoint=anchor_at.get)  # restarted
    ends[A].open(B, ANCHOR2, now=5.0)
    deliver(now=5.0)
    assert ends[A].events == [RelayUp(B, ANCHOR2, 1)]
    assert ends[B].events[1:] == [RelayDown(A), RelayUp(A, ANCHOR2, 1)]
    assert ends[B].counters["moved_anchor"] == 1
    assert anchors[ANCHOR].channels() == 0 and anchors[ANCHOR2].channels() == 1
    # and the same move when B's own side picks the other anchor
    ends[B].open(A, ANCHOR, now=6.0)
    deliver(now=6.0)
    assert ends[B].events[-2:] == [RelayDown(A), RelayUp(A, ANCHOR, 2)]


def test_client_counts_what_it_does_not_take():
    a = RelayClient(accept=lambda _: True, anchor_endpoint={ANCHOR: ANCHOR_AT}.get)
    a.receive(ANCHOR, relay.encode(RelayReady(B, 3)), now=0.0)
    a.receive(ANCHOR, relay.encode(RelayClose(B)), now=0.0)
    a.receive(ANCHOR, b"\x11", now=0.0)
    assert a.incoming(port.tag(TRANSPORT, 3), ANCHOR_AT) is None
    a.open(B, ANCHOR, now=0.0)
    a.receive(STRANGER, relay.encode(RelayReady(B, 3)), now=0.0)  # not the anchor we asked
    assert a.counters == {"unexpected_ready": 2, "unexpected_close": 1, "malformed": 1,
                          "unknown_channel": 1}
    a.handle_timer(10.0)
    assert a.events == [RelayDown(B)] and a.counters["open_timed_out"] == 1
