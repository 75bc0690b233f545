"""Using an exit node, the shell's rules (agent/exit_routes.py): which resolvers are routed
to the exit, and the wg-quick-style rules for both families."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from whalescale.agent.exit_routes import (
    FWMARK,
    TABLE,
    nameservers,
    resolvers,
    wanted_routes,
    wanted_rules,
)
from whalescale.agent.nft import exit_ruleset, marks_ruleset
from whalescale.netlink import RT_TABLE_MAIN, RTN_UNREACHABLE, Rule
from whalescale.node.effects import ConfigureExit


@pytest.mark.parametrize(("text", "found"), [
    ("nameserver 10.9.0.53\n", ["10.9.0.53"]),
    ("# a comment\nsearch lan\nnameserver 192.168.1.1\nnameserver fe80::1%eth0\n",
     ["192.168.1.1", "fe80::1"]),
    ("nameserver\nnameserver not-an-address\noptions ndots:2\n", []),
])
def test_resolv_conf_names_its_resolvers(text: str, found: list[str]) -> None:
    assert [str(a) for a in nameservers(text)] == found


def test_behind_a_local_stub_its_upstreams_are_the_resolvers(tmp_path: Path) -> None:
    stub, upstreams = tmp_path / "resolv.conf", tmp_path / "upstreams.conf"
    stub.write_text("nameserver 127.0.0.53\n")
    upstreams.write_text("nameserver 10.9.0.53\nnameserver 10.9.0.53\n")
    assert [str(a) for a in resolvers(stub, upstreams)] == ["10.9.0.53"]
    stub.write_text("nameserver 192.168.1.1\n")  # a LAN resolver: routed to the exit too
    assert [str(a) for a in resolvers(stub, upstreams)] == ["192.168.1.1"]
    assert resolvers(tmp_path / "missing", upstreams) == []


def test_rules_send_everything_but_our_marked_sockets_and_main_specifics_to_our_table():
    lan_resolver = ipaddress.ip_address("192.168.1.1")
    rules = sorted(wanted_rules([lan_resolver]), key=lambda r: (r.priority, r.family))
    v4, v6 = socket.AF_INET, socket.AF_INET6
    assert rules == [
        Rule(v4, 30570, TABLE, dst=ipaddress.ip_network("192.168.1.1/32")),  # before main
        Rule(v4, 30571, RT_TABLE_MAIN, suppress_prefixlen=0),
        Rule(v6, 30571, RT_TABLE_MAIN, suppress_prefixlen=0),
        Rule(v4, 30572, TABLE, fwmark=FWMARK, invert=True),
        Rule(v6, 30572, TABLE, fwmark=FWMARK, invert=True),
    ]


def test_the_kill_switch_adds_an_unreachable_default_behind_the_tunnel():
    fail_open = wanted_routes(ConfigureExit("vps", 1420, False, False), tun_index=7)
    assert {(str(r.network), r.oif, r.mtu) for r in fail_open} == {("0.0.0.0/0", 7, 1420),
                                                                  ("::/0", 7, 1420)}
    killing = wanted_routes(ConfigureExit("vps", 1420, True, False), tun_index=7)
    blocks = killing - fail_open
    assert {(str(r.network), r.kind, r.oif) for r in blocks} == {
        ("0.0.0.0/0", RTN_UNREACHABLE, None), ("::/0", RTN_UNREACHABLE, None)}
    assert all(b.metric > t.metric for b in blocks for t in fail_open)


def test_the_exit_masquerades_what_comes_from_the_tunnel_and_leaves_elsewhere():
    text = exit_ruleset("ws0")
    assert text.startswith("table inet whalescale-exit\ndelete table inet whalescale-exit\n")
    assert 'postrouting iifname "ws0" oifname != "ws0" masquerade' in text


def test_answers_to_our_marked_datagrams_get_the_mark_back():
    text = marks_ruleset(FWMARK, "ws0", [])
    assert "prerouting meta l4proto udp meta mark set ct mark" in text
    assert "postrouting meta l4proto udp meta mark 0x7773 ct mark set meta mark" in text
    assert "dport 53" not in text  # no resolvers, nothing to pin


def test_dns_pinned_to_another_interface_is_routed_anew_into_the_tunnel():
    resolvers = [ipaddress.ip_address(a) for a in ("9.9.9.9", "2620:fe::fe", "10.0.5.1")]
    text = marks_ruleset(FWMARK, "ws0", resolvers)
    assert ("add chain inet whalescale-marks dns { type route hook output priority mangle; "
            "policy accept; }") in text
    assert ('dns ip daddr { 10.0.5.1, 9.9.9.9 } meta l4proto { udp, tcp } th dport 53 '
            'oifname != "ws0" meta mark set 0x7774') in text
    assert ('dns ip6 daddr { 2620:fe::fe } meta l4proto { udp, tcp } th dport 53 '
            'oifname != "ws0" meta mark set 0x7774') in text
    assert 'dns-source oifname "ws0" meta mark 0x7774 masquerade' in text
