"""The mesh file's routes and access keys: subnet routes, exit nodes, groups, firewall
rules, the name suffix; each mistake reported where it is written."""

from __future__ import annotations

import ipaddress
import logging

import pytest

from tests.config.meshfile import VALID, edit, problems
from whalescale.config import parse_mesh
from whalescale.config.schema import Rule

ANCHOR_END = 'interfaces = ["eth0", "wlan0"]\n'
LAPTOP_END = "relay = true\n"


def with_keys(anchor: str = "", laptop: str = "", text: str = VALID) -> str:
    if anchor:
        text = edit(ANCHOR_END, ANCHOR_END + anchor, text)
    if laptop:
        text = edit(LAPTOP_END, LAPTOP_END + laptop, text)
    return text


def test_the_keys_are_read_into_the_records() -> None:
    text = with_keys(
        anchor='routes = ["192.168.1.0/24", "fd00:1::/64"]\nexit = true\ngroups = "servers"\n'
               'firewall_default = "deny"\n'
               'firewall = [{ action = "allow", from = ["laptops"], proto = "tcp", '
               'ports = [22, "8000-8100"] }, { action = "allow", proto = "icmp" }]\n',
        laptop='standby_routes = ["192.168.1.0/24"]\nexit_node = "anchor-1"\n'
               'kill_switch = true\naccept_routes = false\ngroups = ["laptops", "kids"]\n')
    anchor, laptop = parse_mesh(text, "mesh.toml").nodes
    net = ipaddress.ip_network
    assert anchor.routes == (net("192.168.1.0/24"), net("fd00:1::/64"))
    assert (anchor.exit, anchor.groups, anchor.firewall_default) == (True, ("servers",), "deny")
    assert anchor.firewall == (Rule("allow", ("laptops",), "tcp", ((22, 22), (8000, 8100))),
                               Rule("allow", (), "icmp", ()))
    assert str(anchor.firewall[0]) == "allow from laptops tcp port 22,8000-8100"
    assert laptop.standby_routes == (net("192.168.1.0/24"),)
    assert (laptop.exit_node, laptop.kill_switch, laptop.accept_routes) == ("anchor-1", True,
                                                                           False)
    assert laptop.groups == ("laptops", "kids")


def test_defaults_change_nothing() -> None:
    mesh = parse_mesh(VALID, "mesh.toml")
    node = mesh.nodes[0]
    assert (node.routes, node.standby_routes, node.accept_routes, node.exit, node.exit_node,
            node.kill_switch, node.groups, node.firewall, node.firewall_default) == (
        (), (), True, False, None, False, (), (), "allow")
    assert mesh.suffix == "home"


def test_a_rule_may_name_a_vanilla_wireguard_peer() -> None:
    text = VALID + '\n[[node.firewall]]\naction = "deny"\nfrom = "old-router"\n'
    assert parse_mesh(text, "mesh.toml").nodes[-1].firewall == (Rule("deny", ("old-router",)),)


def test_firewall_rules_as_an_array_of_tables() -> None:
    text = VALID + '\n[[node.firewall]]\naction = "deny"\nfrom = "anchor-1"\nproto = "udp"\n'
    rules = parse_mesh(text, "mesh.toml").nodes[-1].firewall  # the last [[node]] above it
    assert rules == (Rule("deny", ("anchor-1",), "udp", ()),)


@pytest.mark.parametrize(("anchor", "laptop", "where", "message"), [
    ('routes = ["100.96.0.0/30"]\n', "", "node[0].routes[0]",
     "overlaps anchor-1's tunnel address"),
    ('routes = "192.168.50.128/25"\n', "", "node[0].routes",
     "overlaps WireGuard peer old-router's allowed_ips"),
    ('routes = ["10.0.0.0/8"]\n', 'routes = ["10.1.0.0/16"]\n', "node[1].routes[0]",
     "overlaps 10.0.0.0/8 of anchor-1; two nodes may carry one network only as"),
    ("", 'standby_routes = ["10.1.0.0/16"]\n', "node[1].standby_routes[0]",
     "standby route 10.1.0.0/16 has no primary"),
    ('routes = ["10.0.0.0/8"]\nstandby_routes = ["10.0.0.0/8"]\n', "",
     "node[0].standby_routes[0]", "has no primary"),
    ('routes = ["10.0.0.0/33"]\n', "", "node[0].routes[0]", "is not a network"),
    ("", 'exit_node = "anchor-1"\n', "node[1].exit_node",
     "'anchor-1' is not another node with exit = true (those offering: none)"),
    ("exit = true\n", 'exit_node = "nobody"\n', "node[1].exit_node",
     "(those offering: anchor-1)"),
    ("exit = true\n", 'exit = true\nexit_node = "laptop"\n', "node[1].exit_node",
     "'laptop' is not another node"),
    ('groups = ["laptop"]\n', "", "node[0].groups[0]", "group 'laptop' has the name of a node"),
    ('groups = ["old-router"]\n', "", "node[0].groups[0]",
     "group 'old-router' has the name of a WireGuard peer"),
    ('firewall = [{ action = "deny", from = "kids" }]\n', "", "node[0].firewall[0].from",
     "'kids' is no node, WireGuard peer or group, expected one of: anchor-1, laptop, "
     "old-router"),
    ('firewall = [{ action = "drop" }]\n', "", "node[0].firewall[0].action",
     "'drop' is not one of 'allow', 'deny'"),
    ('firewall = [{ from = "laptop" }]\n', "", "node[0].firewall[0]",
     "missing required key 'action'"),
    ('firewall = [{ action = "deny", ports = [22] }]\n', "", "node[0].firewall[0].ports",
     'ports need proto = "tcp" or "udp"'),
    ('firewall = [{ action = "deny", proto = "tcp", ports = ["90-80"] }]\n', "",
     "node[0].firewall[0].ports[0]", "runs backwards"),
    ('firewall = [{ action = "deny", proto = "tcp", port = 22 }]\n', "",
     "node[0].firewall[0].port", "unknown key 'port', expected one of: action, from, proto"),
    ('firewall_default = "reject"\n', "", "node[0].firewall_default", "is not one of"),
])
def test_mistakes_are_reported_where_they_are(anchor: str, laptop: str, where: str,
                                              message: str) -> None:
    found = problems(with_keys(anchor, laptop))
    assert [(key, message in text) for _, _, key, text in found] == [(where, True)], found


def test_a_route_error_points_at_its_line_and_column() -> None:
    ((line, col, _, _),) = problems(with_keys(anchor='routes = ["192.168.1.0/24", '
                                                     '"100.96.0.1/32"]\n'))
    assert (line, col) == (14, 29)


def test_a_primary_and_its_standby_are_accepted() -> None:
    text = with_keys(anchor='routes = ["10.0.0.0/8"]\n', laptop='standby_routes = ["10.0.0.0/8"]\n')
    mesh = parse_mesh(text, "mesh.toml")
    assert mesh.nodes[1].standby_routes == mesh.nodes[0].routes


def test_suffix_is_read_and_checked() -> None:
    text = edit("mtu = 1420\n", 'mtu = 1420\nsuffix = ".Home.Arpa"\n')
    assert parse_mesh(text, "mesh.toml").suffix == "home.arpa"
    found = problems(edit("mtu = 1420\n", 'mtu = 1420\nsuffix = "not a name"\n'))
    assert [key for _, _, key, _ in found] == ["mesh.suffix"]


@pytest.mark.parametrize(("setting", "warned"), [
    ('name = "home"', False), ('name = "dev"', True), ('name = "de"', True),
    ('name = "home"\nsuffix = "example.com"', True), ('name = "home"\nsuffix = "home.arpa"', False),
])
def test_a_suffix_that_shadows_a_public_top_level_domain_is_warned_about(
        setting: str, warned: bool, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="whalescale.config"):
        parse_mesh(edit('name = "home"', setting).replace("relay = true\n", ""), "mesh.toml")
    assert any("shadows the public top-level domain" in r.getMessage()
               for r in caplog.records) == warned
