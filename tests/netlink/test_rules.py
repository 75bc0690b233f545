"""Policy routing rules and a table's routes over our netlink: what it sets, `ip rule` and
`ip route show table` read back; what `ip` sets, it reads; the rule parser takes any bytes."""

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whalescale.lab import Lab
from whalescale.netlink import Rule, pack_rule, parse_rule

from .test_netlink import run_script

SCRIPT = """
ip("link", "set", "wsnl0", "up")
v4, v6 = socket.AF_INET, socket.AF_INET6
ours = [
    Rule(v4, 30570, 30579, dst=ipaddress.ip_network("10.64.0.53/32")),
    Rule(v4, 30571, RT_TABLE_MAIN, suppress_prefixlen=0),
    Rule(v4, 30572, 30579, fwmark=0x7773, invert=True),
    Rule(v6, 30572, 30579, fwmark=0x7773, invert=True),
]
with Netlink() as nl:
    for rule in ours:
        nl.add_rule(rule)
    try:
        nl.add_rule(ours[0])
    except NetlinkError as exc:
        out["duplicate"] = exc.errno
    out["ip_rules"] = ip("-o", "rule") + ip("-o", "-6", "rule")
    read = nl.rules(v4) + nl.rules(v6)
    out["read_back"] = all(rule in read for rule in ours)
    ip("rule", "add", "pref", "400", "fwmark", "0x10", "lookup", "77")
    out["theirs"] = [[r.priority, r.table, r.fwmark, r.invert] for r in nl.rules(v4)
                     if r.priority == 400]
    nl.replace_route(ipaddress.ip_network("0.0.0.0/0"), index, table=30579, mtu=1400)
    nl.replace_route(ipaddress.ip_network("0.0.0.0/0"), None, table=30579,
                     kind=RTN_UNREACHABLE, metric=4000)
    nl.replace_route(ipaddress.ip_network("::/0"), None, table=30579,
                     kind=RTN_UNREACHABLE, metric=4000)
    out["ip_table"] = ip("-o", "route", "show", "table", "30579") + ip(
        "-o", "-6", "route", "show", "table", "30579")
    out["table"] = sorted(
        [str(r.network), r.kind, r.metric, r.oif == index, r.mtu]
        for family in (v4, v6) for r in nl.routes(family, (RTN_UNICAST, RTN_UNREACHABLE))
        if r.table == 30579)
    out["main_default"] = any(r.network.prefixlen == 0 for r in nl.routes(v4)
                              if r.table == RT_TABLE_MAIN)
    nl.delete_route(ipaddress.ip_network("0.0.0.0/0"), None, table=30579, metric=4000)
    nl.delete_route(ipaddress.ip_network("::/0"), None, table=30579, metric=4000)
    nl.delete_route(ipaddress.ip_network("0.0.0.0/0"), index, table=30579)
    for rule in ours:
        nl.delete_rule(rule)
    out["rules_after"] = ip("-o", "rule") + ip("-o", "-6", "rule")
    out["table_after"] = ip("-o", "route", "show", "table", "all")
"""


@pytest.mark.lab
def test_rules_and_table_routes_iproute2_reads_and_back(lab: Lab) -> None:
    out = run_script(lab, SCRIPT)
    assert out["duplicate"] == 17  # EEXIST: NLM_F_EXCL
    rules = out["ip_rules"]
    assert "30570:\tfrom all to 10.64.0.53 lookup 30579" in rules
    assert "30571:\tfrom all lookup main suppress_prefixlength 0" in rules
    assert "30572:\tnot from all fwmark 0x7773 lookup 30579" in rules  # iproute2 says "not" so
    assert rules.count("fwmark 0x7773 lookup 30579") == 2  # IPv4 and IPv6
    assert out["read_back"] is True
    assert out["theirs"] == [[400, 77, 0x10, False]]
    table = out["ip_table"]
    assert "default dev wsnl0 proto static scope link mtu 1400" in table
    assert "unreachable default proto static metric 4000" in table
    assert out["table"] == [["0.0.0.0/0", 1, 0, True, 1400], ["0.0.0.0/0", 7, 4000, False, None],
                            ["::/0", 7, 4000, False, None]]
    assert out["main_default"] is False  # nothing of it leaked into the main table
    assert "30579" not in out["rules_after"] and "30579" not in out["table_after"]


_FAMILIES = st.sampled_from([socket.AF_INET, socket.AF_INET6])


@st.composite
def rules(draw: st.DrawFn) -> Rule:
    family = draw(_FAMILIES)
    dst = None
    if draw(st.booleans()):
        bits = 32 if family == socket.AF_INET else 128
        dst = ipaddress.ip_network((draw(st.integers(0, 2**bits - 1)) if bits == 32
                                    else ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1))),
                                    draw(st.integers(0, bits))), strict=False)
    return Rule(family, draw(st.integers(0, 2**32 - 1)), draw(st.integers(1, 2**32 - 1)),
                dst=dst, fwmark=draw(st.none() | st.integers(0, 2**32 - 1)),
                invert=draw(st.booleans()),
                suppress_prefixlen=draw(st.none() | st.integers(0, 128)))


@given(rules())
def test_a_rule_reads_back_as_packed(rule: Rule) -> None:
    assert parse_rule(pack_rule(rule)) == rule


@given(st.binary(max_size=120))
def test_the_rule_parser_takes_any_bytes(data: bytes) -> None:
    rule = parse_rule(data)
    assert rule is None or rule.family in (socket.AF_INET, socket.AF_INET6)
