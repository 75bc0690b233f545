"""PATH_PROBE / PATH_PROBE_REPLY: the wire format, the anchor's responder, the prober.

Scenarios start at now = 0.0; randomness is a counter, so nonces are predictable.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whalescale.nat import bootstrap
from whalescale.nat.bootstrap import (
    PROBE_BYTES,
    MalformedBootstrap,
    Observation,
    PathProbe,
    PathProbeReply,
    Prober,
    ProbeTimedOut,
    Responder,
)
from whalescale.session.ratelimit import TokenBuckets
from whalescale.wire import port
from whalescale.wire.messages import INITIATION_SIZE

Addr = tuple[str, int]
LOCAL = ("192.168.1.10", 51820)
ANCHOR_1 = ("198.51.100.1", 51820)
ANCHOR_2 = ("203.0.113.7", 51820)
OUR_NAT = ("192.0.2.33", 40001)


def counting_bytes():
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


# ----- wire format -------------------------------------------------------------

@pytest.mark.parametrize("message, size", [
    (PathProbe(bytes(range(16))), 40),
    (PathProbeReply(bytes(16), ("192.0.2.33", 40001)), 26),
    (PathProbeReply(b"\xff" * 16, ("2001:db8::1", 1)), 38),
])
def test_round_trip(message, size):
    wire = (bootstrap.encode_probe(message) if isinstance(message, PathProbe)
            else bootstrap.encode_reply(message))
    assert len(wire) == size
    assert wire[0] == 0x57 and port.protocol_of(wire) is port.Protocol.BOOTSTRAP
    assert bootstrap.decode(wire) == message


def test_no_reply_is_larger_than_a_probe():
    assert bootstrap.MAX_REPLY_BYTES <= PROBE_BYTES


def test_a_wireguard_message_is_not_bootstrap():
    for kind in (1, 2, 3, 4):
        assert port.protocol_of(bytes((kind, 0, 0, 0)) + bytes(44)) is port.Protocol.WIREGUARD
    assert port.protocol_of(b"") is port.Protocol.WIREGUARD  # the engine counts it
    assert port.protocol_of(bytes((2, 0, 0, 9)) + bytes(44)) is port.Protocol.RELAYED


PROBE = bootstrap.encode_probe(PathProbe(bytes(16)))
REPLY = bootstrap.encode_reply(PathProbeReply(bytes(16), OUR_NAT))


@pytest.mark.parametrize("wire, why", [
    (b"", "empty"),
    (PROBE[:3], "short header"),
    (b"\x58" + PROBE[1:], "magic"),
    (PROBE[:1] + b"\x02" + PROBE[2:], "version"),
    (PROBE[:2] + b"\x09" + PROBE[3:], "unknown type"),
    (PROBE[:3] + b"\x01" + PROBE[4:], "probe with a non-zero x byte"),
    (PROBE[:-1], "probe truncated"),
    (PROBE + b"\x00", "probe too long"),
    (PROBE[:-1] + b"\x01", "probe padding not zero"),
    (REPLY[:-1], "reply truncated"),
    (REPLY + b"\x00", "reply too long for its family"),
    (REPLY[:3] + b"\x05" + REPLY[4:], "reply family"),
    (REPLY[:20] + b"\x00\x00" + REPLY[22:], "reply port zero"),
])
def test_malformed(wire, why):
    with pytest.raises(MalformedBootstrap):
        bootstrap.decode(wire)


def decode_strictly(data: bytes) -> None:
    try:
        message = bootstrap.decode(data)
    except MalformedBootstrap:
        return
    if isinstance(message, bootstrap.LanHello):  # its tag cannot be re-made: rebuild it
        body = data[:4] + message.nonce + message.tag
        again = body + bytes(bootstrap.LAN_HELLO_BYTES - len(body)) if message.padded else body
    elif isinstance(message, PathProbe):
        again = bootstrap.encode_probe(message)
    else:
        again = bootstrap.encode_reply(message)
    assert again == data  # strict: one message has one encoding


@given(st.binary(max_size=160))
def test_decode_raises_only_malformed(data):
    decode_strictly(data)


@given(st.binary(min_size=16, max_size=16), st.ip_addresses(), st.integers(1, 65535))
def test_reply_round_trips(nonce, ip, port):
    reply = PathProbeReply(nonce, (str(ip), port))
    assert bootstrap.decode(bootstrap.encode_reply(reply)) == reply


@given(st.binary(min_size=4, max_size=40).map(lambda b: b"\x57\x01" + b[2:]))
def test_decode_near_valid_headers(data):
    decode_strictly(data)


# ----- responder ----------------------------------------------------------------

def test_responder_reports_the_source_it_saw():
    anchor = Responder()
    anchor.receive(bootstrap.encode_probe(PathProbe(b"n" * 16)), OUR_NAT, now=0.0)
    [(wire, to)] = anchor.outbox
    assert to == OUR_NAT
    assert bootstrap.decode(wire) == PathProbeReply(b"n" * 16, OUR_NAT)


def test_responder_counts_what_it_does_not_answer():
    anchor = Responder()
    anchor.receive(b"\x57garbage", OUR_NAT, now=0.0)
    anchor.receive(REPLY, OUR_NAT, now=0.0)
    assert anchor.outbox == []
    assert anchor.counters == {"malformed": 1, "unexpected_reply": 1}


def test_responder_rate_limits_per_source():
    anchor = Responder(TokenBuckets(rate_per_s=1.0, burst=2.0))
    for _ in range(5):
        anchor.receive(PROBE, OUR_NAT, now=0.0)
    anchor.receive(PROBE, ("192.0.2.99", 1), now=0.0)  # another source has its own bucket
    anchor.receive(PROBE, OUR_NAT, now=1.0)  # one token back after a second
    assert anchor.counters == {"answered": 4, "rate_limited": 3}


# ----- prober -------------------------------------------------------------------

def answer(prober: Prober, seen_as: Addr, now: float) -> None:
    """Every target answers every probe, seeing us at `seen_as`."""
    for wire, target in prober.outbox:
        anchor = Responder()
        anchor.receive(wire, seen_as, now)
        for reply, _ in anchor.outbox:
            prober.receive(reply, target, LOCAL, now)
    prober.outbox.clear()



def test_probe_two_anchors_and_observe():
    prober = Prober(random_bytes=counting_bytes())
    prober.probe(LOCAL, [ANCHOR_1, ANCHOR_2], now=0.0)
    assert [to for _, to in prober.outbox] == [ANCHOR_1, ANCHOR_2]
    assert prober.next_deadline() == 2.0
    answer(prober, OUR_NAT, now=0.03)
    assert prober.events == [Observation(LOCAL, ANCHOR_1, OUR_NAT, 0.03),
                             Observation(LOCAL, ANCHOR_2, OUR_NAT, 0.03)]
    assert prober.next_deadline() is None


def test_a_probe_times_out():
    prober = Prober(random_bytes=counting_bytes(), timeout_s=1.0)
    prober.probe(LOCAL, [ANCHOR_1], now=0.0)
    prober.probe(LOCAL, [ANCHOR_2], now=0.5)
    prober.handle_timer(0.99)
    assert prober.events == []
    prober.handle_timer(prober.next_deadline())
    assert prober.events == [ProbeTimedOut(LOCAL, ANCHOR_1)]
    assert prober.next_deadline() == 1.5


def test_replies_from_the_wrong_place_are_not_taken():
    prober = Prober(random_bytes=counting_bytes())
    prober.probe(LOCAL, [ANCHOR_1], now=0.0)
    [(wire, _)] = prober.outbox
    nonce = bootstrap.decode(wire).nonce
    reply = bootstrap.encode_reply(PathProbeReply(nonce, OUR_NAT))
    prober.receive(reply, ANCHOR_2, LOCAL, now=0.1)  # right nonce, wrong sender
    prober.receive(bootstrap.encode_reply(PathProbeReply(b"x" * 16, OUR_NAT)),
                   ANCHOR_1, LOCAL, now=0.1)
    prober.receive(PROBE, ANCHOR_1, LOCAL, now=0.1)
    prober.receive(b"\x57", ANCHOR_1, LOCAL, now=0.1)
    assert prober.events == []
    assert prober.counters == {"wrong_path": 1, "unknown_nonce": 1, "unexpected_probe": 1,
                               "malformed": 1}
    prober.receive(reply, ANCHOR_1, LOCAL, now=0.2)
    prober.receive(reply, ANCHOR_1, LOCAL, now=0.3)  # a duplicate: already matched
    assert prober.events == [Observation(LOCAL, ANCHOR_1, OUR_NAT, 0.2)]


def test_pending_probes_are_bounded():
    prober = Prober(random_bytes=counting_bytes())
    prober.probe(LOCAL, [ANCHOR_1] * (bootstrap.MAX_PENDING + 1), now=0.0)
    assert prober.events == [ProbeTimedOut(LOCAL, ANCHOR_1)]
    assert prober.counters["pending_overflow"] == 1


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=16, max_size=16))
def test_lan_hello_names_its_sender_to_members_only(node_id, nonce):
    hello = bootstrap.decode(bootstrap.encode_lan_hello(node_id, nonce))
    assert isinstance(hello, bootstrap.LanHello) and hello.is_from(node_id)
    assert not hello.is_from(bytes(b ^ 1 for b in node_id))
    # a new nonce gives an unrelated tag: hellos cannot be linked by a non-member
    other = bootstrap.decode(bootstrap.encode_lan_hello(node_id, bytes(b ^ 0xFF for b in nonce)))
    assert other.tag != hello.tag


def test_a_lan_hello_is_padded_to_the_initiation_it_may_be_answered_with():
    """A hello is answered with a WireGuard initiation (lan.py): no reflection gain."""
    hello = bootstrap.encode_lan_hello(bytes(32), bytes(16))
    assert len(hello) == bootstrap.LAN_HELLO_BYTES == INITIATION_SIZE
    legacy = bootstrap.encode_lan_hello(bytes(32), bytes(16), padded=False)
    assert len(legacy) == bootstrap.LEGACY_LAN_HELLO_BYTES == 36
    assert hello.startswith(legacy)
    assert bootstrap.decode(hello).padded and not bootstrap.decode(legacy).padded
    assert bootstrap.decode(hello).tag == bootstrap.decode(legacy).tag


@given(st.binary(min_size=32, max_size=32), st.integers(0, 120), st.integers(-1, 119))
def test_lan_hello_lengths_and_padding(nonce_and_tag, padding, flipped):
    """Only the legacy length or the padded one, with zero padding, is a hello."""
    tail = bytearray(padding)
    if 0 <= flipped < padding:
        tail[flipped] = 1
    data = bytes((0x57, 1, bootstrap.MessageType.LAN_HELLO, 0)) + nonce_and_tag + tail
    ok = padding in (0, INITIATION_SIZE - 36) and not any(tail)
    try:
        hello = bootstrap.decode(data)
    except MalformedBootstrap:
        assert not ok
    else:
        assert ok and hello.padded == (padding > 0)
        decode_strictly(data)
