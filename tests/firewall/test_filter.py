"""The server's firewall (firewall/filter.py) as a scenario: rules decide what the tunnel
delivers, replies to the server's own flows pass, drops are counted and told once."""

from __future__ import annotations

import logging

from hypothesis import given
from hypothesis import strategies as st

from tests.firewall.mesh import ADDRESSES, mesh, owner, server_firewall
from tests.firewall.packets import ACK, SYN, fragment6, icmp, ip4, ip6, tcp, udp
from whalescale.config.schema import Rule
from whalescale.firewall.filter import CACHE_FLOWS, Firewall
from whalescale.firewall.flows import IDLE_TIMEOUT_S, Flows
from whalescale.firewall.packet import NO_PORT, TCP, UDP, parse
from whalescale.firewall.rules import Ruleset

SERVER, LAPTOP, TABLET, PRINTER = (ADDRESSES[n][0] for n in ("server", "laptop", "tablet",
                                                             "printer"))
SERVER6, LAPTOP6 = ADDRESSES["server"][1], ADDRESSES["laptop"][1]
SSH_ONLY = (Rule("allow", ("laptops",), "tcp", ((22, 22),)), Rule("allow", (), "icmp"))


def test_the_rules_decide_and_drops_are_counted_by_rule() -> None:
    fw = server_firewall(Rule("deny", ("kids",), "tcp", ((22, 22),)), *SSH_ONLY,
                         default="deny")
    to_ssh = [ip4(LAPTOP, SERVER, tcp(40000, 22)), ip4(TABLET, SERVER, tcp(40001, 22)),
              ip6(LAPTOP6, SERVER6, tcp(40002, 22))]
    assert fw.admit(to_ssh, 0.0) == [to_ssh[0], to_ssh[2]]
    others = [ip4(LAPTOP, SERVER, tcp(40000, 80)), ip4(PRINTER, SERVER, udp(5, 53)),
              ip4(PRINTER, SERVER, icmp(8, 1)), ip6(LAPTOP6, SERVER6, icmp(128, 1, v6=True))]
    assert fw.admit(others, 0.0) == others[2:]
    status = fw.status()
    assert [r["drops"] for r in status["rules"]] == [1, 0, 0]
    assert status["default_drops"] == 2
    assert status["rules"][0]["rule"] == "deny from kids tcp port 22"
    assert (status["default"], status["active"]) == ("deny", True)


def test_a_later_fragment_matches_only_rules_without_ports() -> None:
    fw = server_firewall(Rule("allow", ("laptop",), "udp", ((53, 53),)), default="deny")
    first = ip4(LAPTOP, SERVER, udp(5000, 53), more_fragments=True)
    later = ip4(LAPTOP, SERVER, udp(5000, 53), offset=185)
    later6 = ip6(LAPTOP6, SERVER6, udp(5000, 53), extensions=(fragment6(185),))
    assert fw.admit([first, later, later6], 0.0) == [first]
    fw = server_firewall(Rule("allow", ("laptop",), "udp"), default="deny")
    assert fw.admit([first, later, later6], 0.0) == [first, later, later6]


def test_replies_to_the_servers_own_flows_pass_and_nothing_else() -> None:
    fw = server_firewall(default="deny")
    fw.track([ip4(SERVER, LAPTOP, tcp(41000, 80)), ip4(SERVER, LAPTOP, udp(41001, 53)),
              ip4(SERVER, LAPTOP, icmp(8, ident=7)),
              ip6(SERVER6, LAPTOP6, tcp(41002, 443))], 0.0)
    replies = [ip4(LAPTOP, SERVER, tcp(80, 41000, SYN | ACK)), ip4(LAPTOP, SERVER, udp(53, 41001)),
               ip4(LAPTOP, SERVER, icmp(0, ident=7)),
               ip6(LAPTOP6, SERVER6, tcp(443, 41002, SYN | ACK)),
               # an error about a packet we sent: path MTU discovery needs it
               ip4(LAPTOP, SERVER, icmp(3, quoting=ip4(SERVER, LAPTOP, udp(41001, 53))[:28]))]
    assert fw.admit(replies, 1.0) == replies
    strangers = [ip4(LAPTOP, SERVER, tcp(80, 41999)),  # another port of ours
                 ip4(TABLET, SERVER, tcp(80, 41000)),  # another peer
                 ip4(LAPTOP, SERVER, udp(41001, 53)),  # the flow turned round
                 ip4(LAPTOP, SERVER, icmp(8, ident=7)),  # their echo request, our id
                 ip4(LAPTOP, SERVER, icmp(3, quoting=ip4(TABLET, LAPTOP, udp(1, 2))[:28]))]
    assert fw.admit(strangers, 1.0) == []
    assert fw.status()["default_drops"] == len(strangers)


def test_a_tracked_flow_expires_after_its_idle_timeout() -> None:
    fw = server_firewall(default="deny")
    fw.track([ip4(SERVER, LAPTOP, udp(41001, 53))], 0.0)
    reply = ip4(LAPTOP, SERVER, udp(53, 41001))
    assert fw.admit([reply], IDLE_TIMEOUT_S[UDP]) == [reply]
    fw.track([ip4(SERVER, LAPTOP, udp(41001, 53))], 100.0)  # sending refreshes it
    assert fw.admit([reply], 100.0 + IDLE_TIMEOUT_S[UDP]) == [reply]
    assert fw.admit([reply], 100.0 + IDLE_TIMEOUT_S[UDP] + 0.1) == []
    fw.track([], 1000.0)  # the periodic sweep forgets it
    assert len(fw.flows) == 0


def test_the_flow_table_is_bounded_and_keeps_the_most_recent() -> None:
    flows = Flows(max_flows=16)
    keys = [(TCP, bytes(8) + n.to_bytes(4, "big")) for n in range(40)]
    for t, key in enumerate(keys):
        flows.sent(key, float(t))
    assert len(flows) <= 16
    assert all(flows.answers(k, 40.0) for k in keys[-14:])
    assert not flows.answers(keys[0], 40.0)
    assert flows.evicted == 40 - len(flows)


def test_a_reload_brings_new_rules_and_keeps_the_flows() -> None:
    fw = server_firewall(Rule("deny", ("laptop",), "tcp", ((22, 22),)))
    ssh = ip4(LAPTOP, SERVER, tcp(40000, 22))
    assert fw.admit([ssh], 0.0) == []
    fw.track([ip4(SERVER, TABLET, tcp(41000, 80))], 0.0)
    new = mesh((Rule("allow", ("laptop",), "tcp", ((22, 22),)),), "deny")
    fw.load(new, new.nodes[0], owner)
    assert fw.admit([ssh], 1.0) == [ssh]  # the cached decision went with the old rules
    assert fw.admit([ip4(TABLET, SERVER, tcp(80, 41000, ACK))], 1.0) != []  # flow kept
    assert fw.status()["rules"] == [{"index": 0, "rule": "allow from laptop tcp port 22",
                                     "drops": 0}]


def test_the_first_drop_per_rule_and_source_is_logged_then_a_line_a_minute() -> None:
    fw = server_firewall(Rule("deny", ("laptops",), "tcp", ((22, 22),)))
    fw.admit([ip4(LAPTOP, SERVER, tcp(40000 + n, 22)) for n in range(50)], 0.0)
    fw.admit([ip4(TABLET, SERVER, tcp(40000, 22))], 1.0)
    assert fw.log_lines == [
        (logging.INFO, "firewall: dropped tcp from laptop (100.96.0.2) to port 22 by rule 0 "
                       "(deny from laptops tcp port 22)"),
        (logging.INFO, "firewall: dropped tcp from tablet (100.96.0.3) to port 22 by rule 0 "
                       "(deny from laptops tcp port 22)")]
    fw.log_lines = []
    fw.admit([ip4(LAPTOP, SERVER, tcp(40000, 22))], 59.0)
    assert fw.log_lines == []
    fw.admit([ip4(LAPTOP, SERVER, tcp(40000, 22))], 60.0)
    assert fw.log_lines[0][1].endswith("(50 more since the last line)")
    assert fw.status()["rules"][0]["drops"] == 53


def test_what_has_no_readable_ip_header_is_dropped_as_malformed() -> None:
    fw = server_firewall(default="deny")
    assert fw.admit([b"\x46" + bytes(19), b"\x50" + bytes(40)], 0.0) == []
    assert fw.status()["malformed_drops"] == 2


def test_the_decision_cache_is_bounded() -> None:
    fw = server_firewall(Rule("deny", ("tablet",)))
    fw.admit([ip4(LAPTOP, SERVER, udp(n, 9)) for n in range(CACHE_FLOWS + 10)], 0.0)
    assert len(fw._decisions) <= CACHE_FLOWS


SOURCES = st.sampled_from([ADDRESSES[n][0] for n in ADDRESSES] + ["100.96.0.99"])
SOURCES6 = st.sampled_from([a[1] for a in ADDRESSES.values() if len(a) > 1] + ["fd77:7773::99"])
RULES = (Rule("allow", ("laptop",), "tcp", ((22, 22),)), Rule("deny", ("kids",), "udp"),
         Rule("allow", ("printer",), "icmp"), Rule("deny", (), "tcp", ((1, 1023),)),
         Rule("allow", ("laptops",), "udp", ((53, 53), (5000, 6000))))


@st.composite
def arriving(draw: st.DrawFn) -> bytes:
    transport = draw(st.one_of(
        st.builds(tcp, st.integers(0, 65535), st.sampled_from([22, 53, 80, 5000, 65535])),
        st.builds(udp, st.integers(0, 3), st.sampled_from([22, 53, 80, 5000, 6001])),
        st.builds(icmp, st.sampled_from([0, 3, 8, 11]), st.integers(0, 3))))
    if draw(st.booleans()):
        packet = ip4(draw(SOURCES), SERVER, transport,
                     offset=draw(st.sampled_from([0, 0, 0, 9])))
    else:
        fragment = draw(st.sampled_from([(), (), (fragment6(0, True),), (fragment6(9),)]))
        source = draw(SOURCES6)
        packet = ip6(source, SERVER6, (58, transport[1]) if transport[0] == 1 else transport,
                     extensions=fragment)
    return packet[:draw(st.integers(40 if packet[0] >> 4 == 6 else 20, len(packet)))]


@given(st.lists(arriving(), max_size=40))
def test_every_cached_decision_is_the_rules_decision_for_that_packet(
        packets: list[bytes]) -> None:
    """The hot path's key and the long way's give every packet its own rules' verdict."""
    fw = server_firewall(*RULES, default="deny")
    ruleset = Ruleset.of(mesh(RULES, "deny"), RULES, "deny")

    def verdict(packet: bytes) -> bool:
        header = parse(packet)
        assert header is not None
        dport = header.dport if header.proto in (TCP, UDP) else NO_PORT
        return ruleset.allows(ruleset.decide(owner(header.src), header.proto, dport))

    assert fw.admit(packets, 0.0) == [p for p in packets if verdict(p)]
    assert sum(fw.drops.values()) == sum(not verdict(p) for p in packets)


def test_a_fresh_firewall_allows_everything_and_is_inactive() -> None:
    fw = Firewall()
    assert not fw.active
    assert fw.status()["rules"] == [] and fw.status()["default"] == "allow"


@given(st.lists(st.binary(min_size=20, max_size=80), max_size=20))
def test_whatever_a_peer_sends_is_judged_without_raising(packets: list[bytes]) -> None:
    fw = server_firewall(*RULES, default="deny")
    fw.track(packets, 0.0)
    admitted = fw.admit(packets, 0.0)
    assert len(admitted) + sum(fw.drops.values()) == len(packets)


def test_decisions_follow_the_owner_of_an_address_when_it_changes() -> None:
    """A standby route taking over hands its addresses to another peer without a reload."""
    owners = {"laptop": "laptop"}
    fw = Firewall()
    m = mesh((Rule("deny", ("tablet",)),))
    fw.load(m, m.nodes[0], lambda packed: owners["laptop"])
    packet = ip4(LAPTOP, SERVER, tcp(40000, 80))
    assert fw.admit([packet], 0.0) == [packet]
    owners["laptop"] = "tablet"
    fw.owners_changed()
    assert fw.admit([packet], 0.0) == []
