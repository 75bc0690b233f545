"""The DNS responder for the mesh's names: what each question gets, that nothing from the
network makes it raise, and that no answer is bigger than the rules allow."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.node.dns_queries import MESH, PEER, parsed, query
from whalescale.config import parse_mesh
from whalescale.identity import Identity
from whalescale.node import dns_message as dns
from whalescale.node.dns_answer import MAX_UDP_BYTES, TTL_S, DnsResponder


@pytest.fixture
def responder() -> DnsResponder:
    return DnsResponder(parse_mesh(MESH, "mesh.toml"))


def ask(responder: DnsResponder, data: bytes) -> tuple[int, int, list[tuple[int, str]], int]:
    response = responder.answer_udp(data, PEER)
    assert response is not None
    return parsed(response)


@pytest.mark.parametrize(("name", "qtype", "rcode", "answers"), [
    ("nas.home.arpa", dns.TYPE_A, dns.RCODE_NOERROR, [(dns.TYPE_A, "100.96.0.1")]),
    ("nas.home.arpa", dns.TYPE_AAAA, dns.RCODE_NOERROR, [(dns.TYPE_AAAA, "fd7a::1")]),
    ("nas.home.arpa", dns.TYPE_ANY, dns.RCODE_NOERROR,
     [(dns.TYPE_A, "100.96.0.1"), (dns.TYPE_AAAA, "fd7a::1")]),
    ("NaS.Home.ARPA.", dns.TYPE_A, dns.RCODE_NOERROR, [(dns.TYPE_A, "100.96.0.1")]),
    ("phone.home.arpa", dns.TYPE_A, dns.RCODE_NOERROR, [(dns.TYPE_A, "100.96.0.9")]),
    # known names without an address of that type, other types, the apex: NODATA
    ("laptop.home.arpa", dns.TYPE_AAAA, dns.RCODE_NOERROR, []),
    ("nas.home.arpa", 16, dns.RCODE_NOERROR, []),  # TXT
    ("home.arpa", dns.TYPE_A, dns.RCODE_NOERROR, []),
    # unknown under the suffix, and below a node's name: NXDOMAIN
    ("printer.home.arpa", dns.TYPE_A, dns.RCODE_NXDOMAIN, []),
    ("www.nas.home.arpa", dns.TYPE_A, dns.RCODE_NXDOMAIN, []),
    # not ours: REFUSED (no recursion), including a name that only ends like the suffix
    ("example.com", dns.TYPE_A, dns.RCODE_REFUSED, []),
    ("nas.myhome.arpa", dns.TYPE_A, dns.RCODE_REFUSED, []),
    ("arpa", dns.TYPE_A, dns.RCODE_REFUSED, []),
    ("", dns.TYPE_A, dns.RCODE_REFUSED, []),
])
def test_each_question_gets_its_answer(responder, name, qtype, rcode, answers):
    data = query(name, qtype)
    response = responder.answer_udp(data, PEER)
    assert response is not None
    flags, got_rcode, got, ttl = parsed(response)
    assert (got_rcode, got) == (rcode, answers)
    assert flags & dns.QR and flags & dns.AA and flags & dns.RD and not flags & dns.TC
    assert not flags & 0x0080  # RA: not a recursive resolver
    assert response[12:12 + len(data) - 12] == data[12:]  # the question, echoed as sent
    assert ttl == (TTL_S if answers else 0)


def test_another_class_is_refused(responder):
    assert ask(responder, query("nas.home.arpa", qclass=3))[1] == dns.RCODE_REFUSED  # CHAOS


def test_a_reload_changes_the_answers(responder):
    assert ask(responder, query("tablet.home.arpa"))[1] == dns.RCODE_NXDOMAIN
    added = MESH + ('\n[[node]]\nname = "tablet"\n'
                    f'public_key = "{Identity.generate().public_b64}"\naddress = "100.96.0.7"\n')
    responder.set_mesh(parse_mesh(added.replace('suffix = "home.arpa"', 'suffix = "lan"'),
                                  "mesh.toml"))
    assert ask(responder, query("tablet.lan"))[2] == [(dns.TYPE_A, "100.96.0.7")]
    assert ask(responder, query("tablet.home.arpa"))[1] == dns.RCODE_REFUSED


def test_the_suffix_defaults_to_the_mesh_name():
    responder = DnsResponder(parse_mesh(MESH.replace('suffix = "home.arpa"\n', ""), "m.toml"))
    assert ask(responder, query("laptop.home"))[2] == [(dns.TYPE_A, "100.96.0.2")]


@pytest.mark.parametrize("source", ["100.96.0.2", "fd7a::2", "192.168.1.20", "127.0.0.1",
                                    "::1", "::ffff:100.96.0.2"])
def test_queries_from_the_mesh_and_this_host_are_answered(responder, source):
    assert responder.answer_udp(query("nas.home.arpa"), ipaddress.ip_address(source))


@pytest.mark.parametrize("source", ["192.168.7.3", "10.0.0.1", "2001:db8::1"])
def test_queries_from_outside_the_mesh_get_nothing(responder, source):
    """The weak host model delivers a packet for the tunnel address that came in on the
    LAN interface too; the mesh's names are not for the LAN."""
    assert responder.answer_udp(query("nas.home.arpa"), ipaddress.ip_address(source)) is None
    assert responder.counters["dropped_not_from_mesh"] == 1


def test_responses_and_malformed_queries_get_nothing(responder):
    good = query("nas.home.arpa")
    bad = {
        "a response": query("nas.home.arpa", flags=dns.QR | dns.RD),
        "short": good[:11],
        "cut in the name": good[:16],
        "no type and class": good[:-3],
        "trailing bytes": good + b"\x00",
        "two questions": good[:4] + b"\x00\x02" + good[6:],
        "an answer record": good[:6] + b"\x00\x01" + good[8:],
        "a compression pointer": good[:12] + b"\xc0\x0c" + good[-4:],
        "an additional record that is not OPT": good[:10] + b"\x00\x01" + good[12:]
        + b"\x00" + struct.pack("!HHIH", dns.TYPE_A, 1, 0, 0),
        "a name over 255 bytes": query(".".join(["a" * 63] * 4) + ".home.arpa"),
    }
    for what, data in bad.items():
        assert responder.answer_udp(data, PEER) is None, what
    assert responder.counters["dropped_malformed"] == len(bad)


def test_another_opcode_gets_a_bare_notimp(responder):
    data = query("nas.home.arpa", flags=5 << 11)  # UPDATE
    response = responder.answer_udp(data, PEER)
    assert response is not None and len(response) == 12
    assert struct.unpack_from("!HH", response) == (0x1234, dns.QR | 5 << 11 | dns.RCODE_NOTIMP)


def test_edns_is_answered_with_opt_and_an_unknown_version_with_badvers(responder):
    response = responder.answer_udp(query("nas.home.arpa", edns_size=4096), PEER)
    assert response is not None
    assert response[-11:] == b"\x00" + struct.pack("!HHBBHH", dns.TYPE_OPT, MAX_UDP_BYTES,
                                                   0, 0, 0, 0)
    assert struct.unpack_from("!H", response, 10) == (1,)
    response = responder.answer_udp(query("nas.home.arpa", edns_size=4096, edns_version=1),
                                    PEER)
    assert response is not None
    assert struct.unpack_from("!HHH", response, 6) == (0, 0, 1)  # no answers, an OPT
    assert response[-11:] == b"\x00" + struct.pack("!HHBBHH", dns.TYPE_OPT, MAX_UDP_BYTES,
                                                   1, 0, 0, 0)  # 16 = 1 << 4


def big_mesh(count: int) -> str:
    addresses = ", ".join(f'"fd7a::{0x100 + i:x}"' for i in range(count))
    return MESH.replace('address = "100.96.0.2"', f'address = ["100.96.0.2", {addresses}]')


def test_an_answer_too_big_for_udp_is_truncated_and_whole_over_tcp():
    responder = DnsResponder(parse_mesh(big_mesh(30), "mesh.toml"))
    data = query("laptop.home.arpa", dns.TYPE_AAAA)
    flags, rcode, answers, _ = parsed(responder.answer_udp(data, PEER) or b"")
    assert flags & dns.TC and rcode == dns.RCODE_NOERROR and answers == []
    flags, _, answers, _ = parsed(responder.answer_udp(
        query("laptop.home.arpa", dns.TYPE_AAAA, edns_size=1232), PEER) or b"")
    assert not flags & dns.TC and len(answers) == 30  # 12 + 22 + 30 * 28 + 11 bytes
    flags, _, answers, _ = parsed(responder.answer_tcp(data, PEER) or b"")
    assert not flags & dns.TC and len(answers) == 30


BIG = DnsResponder(parse_mesh(big_mesh(40), "mesh.toml"))  # fits 1232 bytes, not 512
QUERIES = [query("laptop.home.arpa", t, edns_size=s) for t in (dns.TYPE_A, dns.TYPE_ANY)
           for s in (None, 512, 65535)] + [query("x.home.arpa"), query("example.com", 16)]


@given(st.binary(max_size=600))
def test_no_bytes_make_it_raise(data):
    response = BIG.answer_udp(data, PEER)
    assert response is None or len(response) <= MAX_UDP_BYTES


@settings(max_examples=500)
@given(st.sampled_from(QUERIES), st.data())
def test_mutated_queries_never_raise_and_answers_stay_bounded(original, data):
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(mutated) - 1))
        mutated[pos] ^= data.draw(st.integers(1, 255))
    datagram = bytes(mutated[:data.draw(st.integers(0, len(mutated)))])
    response = BIG.answer_udp(datagram, PEER)
    if response is None:
        return
    assert datagram[2] & 0x80 == 0  # a response is never answered
    edns = dns.parse_query(datagram).edns
    limit = dns.PLAIN_UDP_BYTES if edns is None else max(min(edns.udp_size, MAX_UDP_BYTES), 512)
    assert len(response) <= limit
    assert response[:2] == datagram[:2]
