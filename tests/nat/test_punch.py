"""Hole punching: the message bodies, the plan for each NAT-type pair, and a
scenario anchor + two peers on a clock from now = 0.0."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whalescale.nat import punch, punch_messages
from whalescale.nat.nattype import Filtering, NatType
from whalescale.nat.punch import (
    Attempt,
    IllegalPunchTransition,
    Initiate,
    Method,
    PunchCoordinator,
    Puncher,
    PunchState,
    Side,
    UseRelay,
    plan,
)
from whalescale.nat.punch_messages import (
    Candidate,
    CandidateKind,
    MalformedPunch,
    NatInfo,
    NatInfoMessage,
    Punch,
    PunchRequest,
    SeenAt,
)

A_ID, B_ID, ANCHOR_ID, STRANGER = b"\x0a" * 32, b"\x0b" * 32, b"\xaa" * 32, b"\xee" * 32
A_SEEN, B_SEEN = ("192.0.2.1", 40001), ("198.51.100.2", 50002)
A_MAPPED = ("192.0.2.1", 51820)
A_V6, B_V6 = ("2001:db8::a", 51820), ("2001:db8:1::b", 51820)


def obs(addr):
    return Candidate(CandidateKind.OBSERVED, *addr)


def info(nat, seen, *extra, filtering=Filtering.UNKNOWN):
    return NatInfo(nat, filtering, (obs(seen), *extra))


# ----- wire format -------------------------------------------------------------------

FULL_INFO = NatInfo(NatType.CONE, Filtering.ADDRESS_DEPENDENT, (
    obs(A_SEEN), Candidate(CandidateKind.MAPPED, *A_MAPPED),
    Candidate(CandidateKind.LAN, "192.168.1.10", 51820, 24),
    Candidate(CandidateKind.IPV6, *A_V6)))


@pytest.mark.parametrize("message", [
    NatInfoMessage(NatInfo()),
    NatInfoMessage(FULL_INFO),
    PunchRequest(B_ID, FULL_INFO),
    Punch(A_ID, 0xDEADBEEF, 0.5, FULL_INFO),
    SeenAt(A_SEEN),
    SeenAt(A_V6),
])
def test_round_trip(message):
    assert punch_messages.decode(punch_messages.encode(message)) == message


GOOD = punch_messages.encode(
    NatInfoMessage(NatInfo(NatType.CONE, Filtering.UNKNOWN, (obs(A_SEEN),))))
# type 1 | nat 2 | filtering 0 | n 1 | kind 1 | family 4 | prefix 0 | 192.0.2.1 | 40001


@pytest.mark.parametrize("body, why", [
    (b"", "empty"),
    (b"\x09", "unknown type"),
    (b"\x10", "a relay message"),
    (GOOD[:1], "no info"),
    (GOOD[:1] + b"\x07" + GOOD[2:], "NAT type"),
    (GOOD[:2] + b"\x09" + GOOD[3:], "filtering"),
    (GOOD[:3] + b"\x09" + GOOD[4:], "too many candidates"),
    (GOOD[:3] + b"\x02" + GOOD[4:], "a candidate missing"),
    (GOOD[:4] + b"\x09" + GOOD[5:], "candidate kind"),
    (GOOD[:5] + b"\x05" + GOOD[6:], "family"),
    (GOOD[:5] + b"\x06" + GOOD[6:], "family 6 with 4 address bytes"),
    (GOOD[:6] + b"\x18" + GOOD[7:], "prefix on an observed candidate"),
    (GOOD[:-2] + b"\x00\x00", "port zero"),
    (GOOD[:-1], "truncated"),
    (GOOD + b"\x00", "trailing byte"),
    (b"\x01\x00\x00\x02" + GOOD[4:] + GOOD[4:], "repeated candidate"),
    (b"\x01\x00\x00\x01\x03\x04\x00" + GOOD[7:], "LAN without a prefix"),
    (b"\x01\x00\x00\x01\x03\x04\x21" + GOOD[7:], "LAN prefix /33"),
    (b"\x01\x00\x00\x01\x04\x04\x00" + GOOD[7:], "IPV6 candidate with an IPv4 address"),
    (b"\x02" + B_ID[:31], "PUNCH_REQUEST truncated"),
    (b"\x03" + B_ID + b"\x00", "PUNCH truncated"),
    (b"\x04", "SEEN_AT without an endpoint"),
    (b"\x04\x05" + bytes(6), "SEEN_AT family"),
    (b"\x04\x06" + bytes(6), "SEEN_AT family 6 with 4 address bytes"),
    (b"\x04\x04\xc0\x00\x02\x01\x00\x00", "SEEN_AT port zero"),
    (b"\x04\x04\xc0\x00\x02\x01\x9c", "SEEN_AT truncated"),
    (b"\x04\x04\xc0\x00\x02\x01\x9c\x41\x00", "SEEN_AT trailing byte"),
])
def test_malformed(body, why):
    with pytest.raises(MalformedPunch):
        punch_messages.decode(body)


def check_decode(body: bytes) -> None:
    try:
        message = punch_messages.decode(body)
    except MalformedPunch:
        return
    assert punch_messages.encode(message) == body


@given(st.binary(max_size=400))
def test_decode_raises_only_malformed(body):
    check_decode(body)


@given(st.sampled_from([b"\x01", b"\x02" + B_ID, b"\x03" + B_ID + bytes(6), b"\x04\x04",
                        b"\x04\x06"]),
       st.binary(max_size=120))
def test_decode_after_a_valid_prefix(prefix, rest):
    check_decode(prefix + rest)


candidates = st.builds(
    lambda kind, ip, port, prefix: Candidate(
        kind, str(ip), port, (prefix % (ip.max_prefixlen) + 1) if kind == CandidateKind.LAN
        else 0),
    st.sampled_from([CandidateKind.OBSERVED, CandidateKind.MAPPED, CandidateKind.LAN]),
    st.ip_addresses(), st.integers(1, 65535), st.integers(0, 200))
infos = st.builds(NatInfo, st.sampled_from(NatType), st.sampled_from(Filtering),
                  st.lists(candidates, max_size=8, unique=True).map(tuple))


@given(infos, st.integers(0, 2**32 - 1), st.integers(0, 65535))
def test_punch_round_trips(nat_info, punch_id, delay_ms):
    message = Punch(B_ID, punch_id, delay_ms / 1000, nat_info)
    assert punch_messages.decode(punch_messages.encode(message)) == message


# ----- the plan: one row per NAT-type pair ---------------------------------------------

OPEN_PUBLIC = info(NatType.PUBLIC, A_SEEN)
FULL_CONE = info(NatType.CONE, A_SEEN, filtering=Filtering.ENDPOINT_INDEPENDENT)
MAPPED = info(NatType.SYMMETRIC, A_SEEN, Candidate(CandidateKind.MAPPED, *A_MAPPED))
CONE = info(NatType.CONE, A_SEEN)
PORT_RESTRICTED = info(NatType.CONE, A_SEEN, filtering=Filtering.ADDRESS_AND_PORT_DEPENDENT)
SYMMETRIC = info(NatType.SYMMETRIC, A_SEEN)
UNKNOWN = info(NatType.UNKNOWN, A_SEEN)


def b_side(nat_info: NatInfo) -> NatInfo:
    """The same kind of NAT, at B's address."""
    return NatInfo(nat_info.nat_type, nat_info.filtering, tuple(
        at_b(c) for c in nat_info.candidates))


def at_b(c: Candidate) -> Candidate:
    moved = {A_SEEN: B_SEEN, A_MAPPED: ("198.51.100.2", 51820)}
    return Candidate(c.kind, *moved[c.addr], c.prefix)


RELAY = Attempt(Method.RELAY, None, None)
B_MAPPED = ("198.51.100.2", 51820)
SIMULTANEOUS = Attempt(Method.SIMULTANEOUS, B_SEEN, A_SEEN)

TABLE = [
    # (A, B, IPv4 attempt or None for relay only)
    ("public <-> public", OPEN_PUBLIC, OPEN_PUBLIC, Attempt(Method.ONE_WAY, B_SEEN, None)),
    ("public <-> symmetric", OPEN_PUBLIC, SYMMETRIC, Attempt(Method.ONE_WAY, None, A_SEEN)),
    ("full cone <-> symmetric", FULL_CONE, SYMMETRIC, Attempt(Method.ONE_WAY, None, A_SEEN)),
    ("port-mapped <-> symmetric", MAPPED, SYMMETRIC, Attempt(Method.ONE_WAY, None, A_MAPPED)),
    ("symmetric <-> port-mapped", SYMMETRIC, MAPPED, Attempt(Method.ONE_WAY, B_MAPPED, None)),
    ("cone <-> public", CONE, OPEN_PUBLIC, Attempt(Method.ONE_WAY, B_SEEN, None)),
    ("cone <-> cone", CONE, CONE, SIMULTANEOUS),
    ("cone <-> port-restricted cone", CONE, PORT_RESTRICTED, SIMULTANEOUS),
    ("cone <-> symmetric", CONE, SYMMETRIC, SIMULTANEOUS),
    ("symmetric <-> cone", SYMMETRIC, CONE, SIMULTANEOUS),
    ("port-restricted cone <-> symmetric", PORT_RESTRICTED, SYMMETRIC, None),
    ("symmetric <-> port-restricted cone", SYMMETRIC, PORT_RESTRICTED, None),
    ("symmetric <-> symmetric", SYMMETRIC, SYMMETRIC, None),
    ("unknown <-> symmetric", UNKNOWN, SYMMETRIC, SIMULTANEOUS),
    ("unknown <-> unknown", UNKNOWN, UNKNOWN, SIMULTANEOUS),
    ("no observed endpoint", NatInfo(NatType.CONE), CONE, None),
]


@pytest.mark.parametrize("a, b, ipv4", [row[1:] for row in TABLE], ids=[r[0] for r in TABLE])
def test_plan_table(a, b, ipv4):
    the_plan = plan(Side(A_ID, a), Side(B_ID, b_side(b)))
    expected = (ipv4, RELAY) if ipv4 is not None else (RELAY,)
    assert the_plan.attempts == expected
    assert the_plan.direct == (ipv4 is not None)


def lan(host, prefix=24):
    return Candidate(CandidateKind.LAN, host, 51820, prefix)


def test_ipv6_first_when_both_have_it():
    a = NatInfo(NatType.SYMMETRIC, Filtering.UNKNOWN,
                (obs(A_SEEN), Candidate(CandidateKind.IPV6, *A_V6)))
    b = NatInfo(NatType.SYMMETRIC, Filtering.UNKNOWN,
                (obs(B_SEEN), Candidate(CandidateKind.IPV6, *B_V6)))
    assert plan(Side(A_ID, a), Side(B_ID, b)).attempts == (
        Attempt(Method.IPV6, B_V6, A_V6), RELAY)
    one_sided = NatInfo(NatType.SYMMETRIC, Filtering.UNKNOWN, (obs(B_SEEN),))
    assert plan(Side(A_ID, a), Side(B_ID, one_sided)).attempts == (RELAY,)


HOME = ("192.0.2.1", 40001)


@pytest.mark.parametrize("a_lan, b_lan, b_seen, discovered, lan_attempt", [
    ("192.168.1.10", "192.168.1.20", ("192.0.2.1", 40002), False,
     Attempt(Method.LAN, ("192.168.1.20", 51820), ("192.168.1.10", 51820))),
    # same public IP, different subnets (e.g. two VLANs): no hairpinning, no LAN
    ("192.168.1.10", "192.168.2.20", ("192.0.2.1", 40002), False, None),
    # different public IPs, same private subnet: two different homes
    ("192.168.1.10", "192.168.1.20", B_SEEN, False, None),
    # ... unless LAN discovery (mDNS) found the peer
    ("192.168.1.10", "10.0.0.20", B_SEEN, True,
     Attempt(Method.LAN, ("10.0.0.20", 51820), ("192.168.1.10", 51820))),
])
def test_lan(a_lan, b_lan, b_seen, discovered, lan_attempt):
    a = NatInfo(NatType.SYMMETRIC, Filtering.UNKNOWN, (obs(HOME), lan(a_lan)))
    b = NatInfo(NatType.SYMMETRIC, Filtering.UNKNOWN, (obs(b_seen), lan(b_lan)))
    attempts = plan(Side(A_ID, a), Side(B_ID, b), lan_discovered=discovered).attempts
    assert attempts == ((lan_attempt,) if lan_attempt else ()) + (RELAY,)


@given(infos, infos, st.booleans())
def test_plan_is_the_same_from_both_sides(x, y, discovered):
    forward = plan(Side(A_ID, x), Side(B_ID, y), lan_discovered=discovered)
    assert plan(Side(B_ID, y), Side(A_ID, x), lan_discovered=discovered) == forward
    assert forward.attempts[-1] == RELAY
    # never a port nobody observed, mapped or configured (anti-patterns 1.5)
    known = {c.addr for c in x.candidates + y.candidates}
    for node in (A_ID, B_ID):
        assert {endpoint for _, endpoint in forward.sends_for(node)} <= known


# ----- scenario: anchor + two peers ---------------------------------------------------

class Mesh:
    """The anchor sees A and B at their observed endpoints; control messages arrive at once."""

    def __init__(self, a_info: NatInfo, b_info: NatInfo) -> None:
        counter = itertools.count(7)
        seen = {A_ID: A_SEEN, B_ID: B_SEEN}
        self.anchor = PunchCoordinator([A_ID, B_ID], seen.get,
                                       random_bytes=lambda n: next(counter).to_bytes(n, "big"))
        self.peers = {A_ID: Puncher(A_ID, a_info), B_ID: Puncher(B_ID, b_info)}

    def deliver(self, now: float) -> None:
        while any(p.outbox for p in self.peers.values()) or self.anchor.outbox:
            for node_id, peer in self.peers.items():
                for _, body in peer.outbox:
                    self.anchor.receive(node_id, body, now)
                peer.outbox.clear()
            for to, body in self.anchor.outbox:
                self.peers[to].receive_punch(ANCHOR_ID, body, now)
            self.anchor.outbox.clear()


def test_cone_and_cone_punch_at_the_same_moment():
    mesh = Mesh(info(NatType.CONE, ("10.9.9.9", 1)), info(NatType.CONE, ("10.9.9.9", 2)))
    a, b = mesh.peers[A_ID], mesh.peers[B_ID]
    # B told the anchor about itself earlier; A's request carries A's own info.
    mesh.anchor.receive(B_ID, b.set_info(b.info), now=0.0)
    a.request(B_ID, ANCHOR_ID, now=1.0)
    assert a.state(B_ID) == PunchState.REQUESTED
    mesh.deliver(now=1.0)
    # the anchor replaced each side's own idea of its endpoint by what it saw
    # each starts on its own receipt (a common delay could not align two receipts)
    until = 1.0 + punch.PUNCH_FOR_S
    assert a.events == [Initiate(B_ID, Method.SIMULTANEOUS, B_SEEN, 1.0, 0.5, until)]
    assert b.events == [Initiate(A_ID, Method.SIMULTANEOUS, A_SEEN, 1.0, 0.5, until)]
    assert a.state(B_ID) == b.state(A_ID) == PunchState.PUNCHING
    assert a.next_deadline() == until
    a.established(B_ID, now=1.6)
    b.established(A_ID, now=1.6)
    assert a.state(B_ID) == b.state(A_ID) == PunchState.DIRECT
    assert a.next_deadline() is None
    assert mesh.anchor.counters == {"nat_info": 1, "punch_sent": 1}


def test_symmetric_pair_goes_to_the_relay_at_once():
    mesh = Mesh(info(NatType.SYMMETRIC, A_SEEN), info(NatType.SYMMETRIC, B_SEEN))
    a, b = mesh.peers[A_ID], mesh.peers[B_ID]
    mesh.anchor.receive(B_ID, b.set_info(b.info), now=0.0)
    a.request(B_ID, ANCHOR_ID, now=0.0)
    mesh.deliver(now=0.0)
    assert [type(e) for e in a.events] == [UseRelay]
    assert [type(e) for e in b.events] == [UseRelay]
    assert a.state(B_ID) == b.state(A_ID) == PunchState.RELAYED


def test_an_uncertain_punch_opens_the_relay_alongside_then_upgrades():
    """Cone against symmetric may fail: the relay is asked for at once, on the PUNCH (the
    first packet needs no success), punching goes on until D."""
    mesh = Mesh(info(NatType.CONE, A_SEEN), info(NatType.SYMMETRIC, B_SEEN))
    a = mesh.peers[A_ID]
    a.request(B_ID, ANCHOR_ID, now=0.0)
    mesh.deliver(now=0.0)
    (initiate,) = a.events
    assert a.next_deadline() == 0.0 == initiate.at
    a.handle_timer(a.next_deadline())
    assert a.events[-1] == UseRelay(B_ID, initiate_plan := a.events[-1].plan)
    assert initiate_plan is not None and initiate_plan.uncertain
    assert a.state(B_ID) == PunchState.PUNCHING and a.counters["relay_alongside"] == 1
    a.handle_timer(punch.PUNCH_FOR_S - 0.01)
    assert len(a.events) == 2
    a.handle_timer(a.next_deadline())
    assert a.events[-1] == UseRelay(B_ID, a.events[-1].plan)
    assert a.state(B_ID) == PunchState.RELAYED and a.counters["punch_failed"] == 1
    # later a direct handshake succeeds (a new punch, or B's side roamed): upgrade
    a.established(B_ID, now=60.0)
    assert a.state(B_ID) == PunchState.DIRECT


def test_two_cones_punch_without_the_relay_alongside():
    mesh = Mesh(info(NatType.CONE, A_SEEN), info(NatType.CONE, B_SEEN))
    b_said = mesh.peers[B_ID].set_info(info(NatType.CONE, B_SEEN))  # else B's type is unknown
    mesh.anchor.receive(B_ID, b_said, now=0.0)
    a = mesh.peers[A_ID]
    a.request(B_ID, ANCHOR_ID, now=0.0)
    mesh.deliver(now=0.0)
    (initiate,) = a.events
    assert a.next_deadline() == punch.PUNCH_FOR_S  # the deadline only
    a.handle_timer(punch.PUNCH_FOR_S - 0.01)
    assert a.events == [initiate]


def test_one_way_only_the_closed_side_sends():
    mesh = Mesh(info(NatType.PUBLIC, A_SEEN), info(NatType.SYMMETRIC, B_SEEN))
    mesh.peers[A_ID].request(B_ID, ANCHOR_ID, now=0.0)
    mesh.deliver(now=0.0)
    assert mesh.peers[A_ID].events == []  # the open side waits to be reached
    assert mesh.peers[B_ID].events == [
        Initiate(A_ID, Method.ONE_WAY, A_SEEN, 0.0, 0.5, punch.PUNCH_FOR_S)]


def test_a_previous_releases_start_delay_is_honoured():
    """An anchor of the previous release sends a start delay of 0.5 s: every attempt,
    the IPv6 one first, starts then, and the deadline counts from it."""
    v6 = {A_ID: Candidate(CandidateKind.IPV6, *A_V6), B_ID: Candidate(CandidateKind.IPV6, *B_V6)}
    mesh = Mesh(info(NatType.CONE, A_SEEN, v6[A_ID]), info(NatType.CONE, B_SEEN, v6[B_ID]))
    mesh.anchor.start_delay_s = 0.5
    b = mesh.peers[B_ID]
    mesh.anchor.receive(B_ID, b.set_info(b.info), now=0.0)
    mesh.peers[A_ID].request(B_ID, ANCHOR_ID, now=1.0)
    mesh.deliver(now=1.0)
    until = 1.5 + punch.PUNCH_FOR_S
    assert mesh.peers[A_ID].events == [
        Initiate(B_ID, Method.IPV6, B_V6, 1.5, 0.5, until),
        Initiate(B_ID, Method.SIMULTANEOUS, B_SEEN, 1.5, 0.5, until)]
    assert mesh.peers[A_ID].next_deadline() == until


def test_the_open_side_with_a_direct_session_does_not_wait_for_a_punch():
    """B asked for a punch just before A's handshake reached it: the PUNCH finds A (the
    open side, nothing to send) direct already. Waiting for a handshake that B has no
    reason to start would end in a relay beside a working path (seen in the NAT matrix)."""
    mesh = Mesh(info(NatType.PUBLIC, A_SEEN), info(NatType.SYMMETRIC, B_SEEN))
    a = mesh.peers[A_ID]
    a.request(B_ID, ANCHOR_ID, now=0.0)
    mesh.deliver(now=0.0)
    a.established(B_ID, now=0.1)
    # B's side of it, anew: it asks (it has not heard A's handshake yet)
    b = mesh.peers[B_ID] = Puncher(B_ID, mesh.peers[B_ID].info)
    b.request(A_ID, ANCHOR_ID, now=0.2)
    mesh.deliver(now=0.2)
    assert a.state(B_ID) is PunchState.DIRECT and a.next_deadline() is None
    a.handle_timer(0.2 + 0.5 + punch.PUNCH_FOR_S)
    assert a.events == [] and a.counters["already_direct"] == 1
    assert [type(e) for e in b.events] == [Initiate]  # B punches on


@pytest.mark.parametrize("direct_at, punches", [(A_SEEN, False), (("192.0.2.9", 40009), True)],
                         ids=["where-the-punch-aims", "elsewhere"])
@pytest.mark.parametrize("asked_by", ["B", "A"])
def test_a_side_already_direct_where_the_punch_aims_does_not_punch_again(
        direct_at, punches, asked_by):
    """A punch was asked for before B's handshake to A's known endpoint got through: by B
    at its start, or by A (an anchor holds that request until B is up). Punching towards
    that endpoint would only redo a working handshake (the exit-node lab saw a second
    one). Direct somewhere else (A moved), the punch goes on."""
    mesh = Mesh(info(NatType.PUBLIC, A_SEEN), info(NatType.SYMMETRIC, B_SEEN))
    b = mesh.peers[B_ID] = Puncher(B_ID, mesh.peers[B_ID].info, direct_at={A_ID: direct_at}.get)
    a = mesh.peers[A_ID]
    mesh.anchor.receive(A_ID, a.set_info(a.info), now=0.0)
    if asked_by == "B":
        b.request(A_ID, ANCHOR_ID, now=0.0)
        b.established(A_ID, now=0.01)
    else:
        mesh.anchor.receive(B_ID, b.set_info(b.info), now=0.0)
        a.request(B_ID, ANCHOR_ID, now=0.01)
    mesh.deliver(now=0.02)
    if punches:
        assert b.events == [Initiate(A_ID, Method.ONE_WAY, A_SEEN, 0.02, 0.5,
                                     0.02 + punch.PUNCH_FOR_S)]
        assert b.state(A_ID) is PunchState.PUNCHING
    else:
        assert b.events == [] and b.counters["already_direct"] == 1
        assert b.state(A_ID) is {"B": PunchState.DIRECT, "A": None}[asked_by]
        assert b.next_deadline() is None


def test_an_unanswered_request_times_out():
    a = Puncher(A_ID, info(NatType.CONE, A_SEEN))
    a.request(B_ID, ANCHOR_ID, now=0.0)
    a.handle_timer(3.0)
    assert a.events == [UseRelay(B_ID, None)]
    assert a.counters["timed_out"] == 1


def test_the_coordinator_refuses_what_it_cannot_do():
    seen = {A_ID: A_SEEN}  # B has no session with the anchor
    anchor = PunchCoordinator([A_ID, B_ID], seen.get, random_bytes=bytes)
    request = punch_messages.encode(PunchRequest(B_ID, NatInfo()))
    anchor.receive(A_ID, request, now=0.0)
    anchor.receive(A_ID, punch_messages.encode(PunchRequest(STRANGER, NatInfo())), now=0.0)
    anchor.receive(A_ID, punch_messages.encode(PunchRequest(A_ID, NatInfo())), now=0.0)
    anchor.receive(STRANGER, request, now=0.0)
    anchor.receive(A_ID, b"\x02", now=0.0)
    anchor.receive(A_ID, punch_messages.encode(Punch(B_ID, 1, 0.5, NatInfo())), now=0.0)
    for _ in range(punch.MAX_TRACKED_PEERS):  # a start's sweep, then over the burst
        anchor.receive(A_ID, request, now=0.0)
    assert anchor.outbox == []
    # the requests for B wait for it (below); none was refused for lack of a session
    assert anchor.counters == {"target_pending": punch.MAX_TRACKED_PEERS - 2,
                               "bad_target": 2, "not_a_member": 1,
                               "malformed": 1, "unexpected_punch": 1, "rate_limited": 3}


def test_an_anchor_tells_a_member_where_it_sees_it_and_the_member_hears_it():
    anchor = PunchCoordinator([A_ID, B_ID], {}.get, random_bytes=bytes)
    anchor.seen_at(A_ID, A_SEEN)
    anchor.seen_at(STRANGER, B_SEEN)  # not a member: told nothing
    anchor.receive(A_ID, punch_messages.encode(SeenAt(B_SEEN)), now=0.0)  # not a member's
    assert anchor.outbox == [(A_ID, punch_messages.encode(SeenAt(A_SEEN)))]
    assert anchor.counters == {"seen_at_sent": 1, "unexpected_punch": 1}
    a = Puncher(A_ID, info(NatType.CONE, A_SEEN))
    a.receive_punch(ANCHOR_ID, anchor.outbox[0][1], now=0.0)
    assert a.events == [punch.SeenElsewhere(ANCHOR_ID, A_SEEN)] and a.outbox == []


def test_a_request_for_a_member_not_up_yet_waits_for_its_first_word():
    """Both ends starting at once: A asks before B's session with the anchor is up. The
    PUNCH pair goes out when B's NAT_INFO arrives, not after A's 3 s timeout."""
    seen: dict[bytes, tuple[str, int]] = {A_ID: A_SEEN}
    anchor = PunchCoordinator([A_ID, B_ID], seen.get, random_bytes=bytes)
    anchor.receive(A_ID, punch_messages.encode(PunchRequest(B_ID, info(NatType.CONE, A_SEEN))),
                   now=0.0)
    assert anchor.outbox == []
    seen[B_ID] = B_SEEN
    anchor.receive(B_ID, punch_messages.encode(NatInfoMessage(info(NatType.CONE, B_SEEN))),
                   now=0.2)
    assert [(to, type(punch_messages.decode(body))) for to, body in anchor.outbox] == [
        (A_ID, Punch), (B_ID, Punch)]
    anchor.outbox.clear()
    anchor.receive(B_ID, punch_messages.encode(NatInfoMessage(info(NatType.CONE, B_SEEN))),
                   now=0.3)
    assert anchor.outbox == []  # answered once


def test_two_ends_asking_for_each_other_get_one_punch_pair():
    """A asks for B before B is up; B's first word is its own request for A: one PUNCH
    each, not two pairs with two punch ids racing on both ends."""
    seen: dict[bytes, tuple[str, int]] = {A_ID: A_SEEN}
    anchor = PunchCoordinator([A_ID, B_ID], seen.get, random_bytes=bytes)
    anchor.receive(A_ID, punch_messages.encode(PunchRequest(B_ID, NatInfo())), now=0.0)
    seen[B_ID] = B_SEEN
    anchor.receive(B_ID, punch_messages.encode(PunchRequest(A_ID, NatInfo())), now=0.1)
    assert sorted(to for to, _ in anchor.outbox) == sorted([A_ID, B_ID])


def test_a_waiting_request_expires_and_one_from_an_unreachable_requester_is_refused():
    seen: dict[bytes, tuple[str, int]] = {A_ID: A_SEEN}
    anchor = PunchCoordinator([A_ID, B_ID], seen.get, random_bytes=bytes)
    anchor.receive(A_ID, punch_messages.encode(PunchRequest(B_ID, NatInfo())), now=0.0)
    seen[B_ID] = B_SEEN
    anchor.receive(B_ID, punch_messages.encode(NatInfoMessage(NatInfo())),
                   now=punch.PENDING_FOR_S + 0.1)
    assert anchor.outbox == []  # A has given up by then
    del seen[A_ID]  # A's session is gone: its own request cannot be answered
    anchor.receive(A_ID, punch_messages.encode(PunchRequest(B_ID, NatInfo())), now=10.0)
    assert anchor.outbox == []
    assert (anchor.counters["target_pending"], anchor.counters["target_unreachable"]) == (1, 1)


def test_duplicate_and_stray_punches_are_counted():
    b = Puncher(B_ID, info(NatType.CONE, B_SEEN))
    body = punch_messages.encode(Punch(A_ID, 42, 0.5, info(NatType.CONE, A_SEEN)))
    b.receive_punch(ANCHOR_ID, body, now=0.0)
    b.receive_punch(ANCHOR_ID, body, now=0.1)
    b.receive_punch(ANCHOR_ID, punch_messages.encode(Punch(A_ID, 43, 0.5, NatInfo())), now=0.2)
    b.receive_punch(ANCHOR_ID, punch_messages.encode(Punch(B_ID, 44, 0.5, NatInfo())), now=0.2)
    b.receive_punch(ANCHOR_ID, b"\x03", now=0.2)
    assert len(b.events) == 1
    assert b.counters == {"punching": 1, "duplicate_punch": 1, "punch_while_punching": 1,
                          "unexpected_message": 1, "malformed": 1}


def test_a_local_call_out_of_turn_names_state_and_event():
    a = Puncher(A_ID)
    a.request(B_ID, ANCHOR_ID, now=0.0)
    with pytest.raises(IllegalPunchTransition, match="request in state requested"):
        a.request(B_ID, ANCHOR_ID, now=0.1)


def test_tracked_peers_are_bounded():
    a = Puncher(A_ID)
    for i in range(punch.MAX_TRACKED_PEERS + 1):
        a.request(i.to_bytes(32, "big"), ANCHOR_ID, now=float(i))
    assert a.state((0).to_bytes(32, "big")) is None
    assert a.counters["forgotten"] == 1
