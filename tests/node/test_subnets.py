"""Subnet routes in the node (node/subnets.py, standby.py): allowed IPs, which routes
go into the TUN and why not, forwarding, and a standby taking over from its primary."""

from __future__ import annotations

import ipaddress
import logging
import random

import pytest

from tests.nat.sim import Host as SimHost
from tests.nat.sim import Internet
from whalescale.config import parse_mesh
from whalescale.identity import Identity, b64
from whalescale.node.names import Names
from whalescale.node.node import Node
from whalescale.node.specs import peer_specs
from whalescale.node.standby import (
    DOWN_AFTER_S,
    START_GRACE_S,
    UP_AFTER_S,
    PrimaryState,
    StandbyWatch,
)
from whalescale.node.subnets import OWN, Route, Subnets, decide

from ..session.pair import ip_packet

LAN = ipaddress.ip_network("192.168.1.0/24")
LAN6 = ipaddress.ip_network("fd00:1::/64")
KEYS = {name: Identity.from_seed(bytes([i + 1]) * 32)
        for i, name in enumerate(("home", "backup", "laptop", "phone"))}


def mesh_text(**extra: str) -> str:
    """home routes the LAN (v4 and v6), backup stands by for its IPv4 half, laptop
    accepts routes, phone does not."""
    lines = {"home": 'routes = ["192.168.1.0/24", "fd00:1::/64"]\n',
             "backup": 'standby_routes = ["192.168.1.0/24"]\n',
             "phone": "accept_routes = false\n"}
    text = '[mesh]\nname = "t"\nport = 51820\nprefixes = ["100.96.0.0/16"]\n'
    for i, (name, ident) in enumerate(KEYS.items()):
        text += (f'\n[[node]]\nname = "{name}"\npublic_key = "{b64(ident.public)}"\n'
                 f'address = "100.96.0.{i + 1}"\nendpoints = ["192.0.2.{i + 1}:51820"]\n'
                 + lines.get(name, "") + extra.get(name, ""))
    return text


def node(name: str, text: str | None = None) -> Node:
    return Node(parse_mesh(text or mesh_text(), "m.toml"), KEYS[name],
                random_bytes=random.Random(1).randbytes)


def allowed(of: str, failed_over: frozenset = frozenset()) -> dict[str, tuple]:
    mesh = parse_mesh(mesh_text(), "m.toml")
    me = mesh.node_by_name(of)
    return {s.name: s.allowed_ips[1:] for s in peer_specs(mesh, me, Names(mesh).expand,
                                                          failed_over)}


def test_a_nodes_routes_join_its_allowed_ips_and_the_standby_only_after_a_failover():
    assert allowed("laptop") == {"home": (LAN, LAN6), "backup": (), "phone": ()}
    # the IPv4 half moved to the standby; the IPv6 half has none and stays
    assert allowed("laptop", frozenset({LAN})) == {"home": (LAN6,), "backup": (LAN,),
                                                   "phone": ()}


def iface(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    return ipaddress.ip_interface(text)


@pytest.mark.parametrize(("me", "interfaces", "network", "skip"), [
    ("laptop", ["203.0.113.5/24"], LAN, None),
    ("laptop", ["192.168.1.23/24"], LAN, "we sit in it: our address 192.168.1.23/24"),
    # a LAN that holds the route (or lies inside it) is ours too: never tunnel any of it
    ("laptop", ["192.168.0.9/16"], LAN, "we sit in it"),
    ("laptop", ["192.168.1.23/24"], LAN6, None),  # an IPv4 LAN says nothing of IPv6
    ("laptop", ["fd00:1::7/64"], LAN6, "we sit in it: our address fd00:1::7/64"),
    ("phone", ["203.0.113.5/24"], LAN, "accept_routes = false"),
    ("home", [], LAN, OWN),
    ("backup", [], LAN, OWN),
])
def test_which_routes_go_into_the_tun_and_why_not(me, interfaces, network, skip):
    mesh = parse_mesh(mesh_text(), "m.toml")
    route = Route(network, "home", "backup" if network == LAN else None)
    found = decide(route, mesh.node_by_name(me), [iface(i) for i in interfaces])
    assert (found is None) if skip is None else (found or "").startswith(skip)


def test_tun_routes_follow_our_interfaces_and_each_change_is_logged_once():
    laptop = node("laptop")
    laptop.start(0.0, 0.0)
    assert {"192.168.1.0/24", "fd00:1::/64"} <= laptop.tun_config().routes.keys()
    laptop.set_interfaces([iface("192.168.1.23/24")], 1.0)  # came home
    routes = laptop.tun_config().routes
    assert "192.168.1.0/24" not in routes and "fd00:1::/64" in routes
    laptop.set_interfaces([iface("192.168.1.23/24"), iface("10.9.0.2/24")], 2.0)
    laptop.set_interfaces([iface("203.0.113.5/24")], 3.0)  # left
    assert "192.168.1.0/24" in laptop.tun_config().routes
    lines = [e.message for e in laptop.effects() if hasattr(e, "message")
             and e.message.startswith("routes: 192.168.1.0/24")]
    assert len(lines) == 3, lines  # at start, on arrival, on leaving: not on the 2nd change
    assert "not routed into the tunnel (we sit in it" in lines[1]
    # cryptokey routing keeps the route: what comes from it through home is accepted
    assert laptop.engine.peer_for_address(ipaddress.ip_address("192.168.1.9")).name == "home"


def test_a_node_that_does_not_accept_routes_keeps_them_out_of_its_tun():
    assert "192.168.1.0/24" not in node("phone").tun_config().routes
    home = node("home")
    assert "192.168.1.0/24" not in home.tun_config().routes  # its own LAN


def forwarding_warnings(ipv4: bool | None, ipv6: bool | None, text: str | None = None
                        ) -> list[tuple[int, str]]:
    mesh = parse_mesh(text or mesh_text(), "m.toml")
    subnets = Subnets(mesh, mesh.node_by_name("home"))
    subnets.log_lines = []
    subnets.set_forwarding(ipv4, ipv6)
    return subnets.log_lines


def test_forwarding_off_is_a_warning_saying_how_to_turn_it_on():
    ((level, text),) = forwarding_warnings(False, True)
    assert level == logging.WARNING
    assert "ipv4 forwarding is off" in text and "sysctl -w net.ipv4.ip_forward=1" in text
    assert "192.168.1.0/24" in text
    assert "net.ipv6.conf.all.forwarding=1" in forwarding_warnings(True, False)[0][1]
    assert forwarding_warnings(True, True) == []
    assert forwarding_warnings(None, None) == []  # unknown: no false alarm
    v4_only = mesh_text().replace('"192.168.1.0/24", "fd00:1::/64"', '"192.168.1.0/24"')
    assert forwarding_warnings(True, False, v4_only) == []  # no IPv6 routes: off is fine


def test_a_node_with_routes_asks_about_forwarding_at_start_and_shows_it():
    home = node("home")
    home.start(0.0, 0.0)
    assert any(type(e).__name__ == "CheckForwarding" for e in home.effects())
    home.set_forwarding(False, True, 0.1)
    status = home.status(0.1)
    assert status["routes"]["own"] == ["192.168.1.0/24", "fd00:1::/64"]
    assert status["routes"]["forwarding"] == {"ipv4": False, "ipv6": True}
    assert any("ipv4 forwarding is off" in w for w in status["warnings"])
    laptop = node("laptop")
    laptop.start(0.0, 0.0)
    assert not any(type(e).__name__ == "CheckForwarding" for e in laptop.effects())


# ----- the standby watch, on a fake clock ---------------------------------------------------

def run_watch(answers_at: list[float], until: float, step: float = 0.25
              ) -> list[tuple[float, PrimaryState]]:
    """A primary answering at `answers_at` (watched from 0): when the watch switched."""
    watch = StandbyWatch()
    watch.watch(["home"], 0.0)
    heard, switches, now = None, [], 0.0
    while now <= until:
        heard = max((t for t in answers_at if t <= now), default=None)
        switches += [(now, s.state) for s in watch.check(lambda _, h=heard: h, now)]
        now = round(now + step, 6)
    return switches


def test_the_standby_takes_over_within_3_s_and_hands_back_after_3_s_of_answers():
    answers = [t / 10 for t in range(0, 101, 10)] + [t / 10 for t in range(200, 301, 10)]
    (down_at, down), (up_at, up) = run_watch(answers, 30.0)
    assert down is PrimaryState.DOWN and 10.0 + DOWN_AFTER_S <= down_at <= 13.0
    assert up is PrimaryState.UP and 20.0 + UP_AFTER_S <= up_at <= 23.5


def test_one_lost_probe_is_no_failure():
    answers = [float(t) for t in range(0, 31) if t != 12]
    assert run_watch(answers, 30.0) == []


def test_a_primary_answering_one_probe_in_three_stays_down_no_flapping():
    answers = [float(t) for t in range(0, 11)] + [float(t) for t in range(12, 60, 3)]
    switches = run_watch(answers, 60.0)
    assert [s for _, s in switches] == [PrimaryState.DOWN]


def test_a_primary_never_heard_is_given_a_grace_for_its_first_handshake():
    ((at, state),) = run_watch([], 20.0)
    assert state is PrimaryState.DOWN and START_GRACE_S <= at <= START_GRACE_S + 0.5


# ----- the whole nodes on the fake internet ---------------------------------------------------

def lan_packets(payloads: list[bytes], host) -> int:
    return sum(any(p in d for d in host.delivered) for p in payloads)


def home_backup_laptop(laptop_toml: str = "") -> Internet:
    """An anchor, home routing 192.168.1.0/24, backup standing by for it, and laptop (with
    `laptop_toml` in its entry), running for 3 s."""
    net = Internet()
    net.add("anchor", "198.51.100.1", anchor=True)
    for name, address in (("home", "198.51.100.2"), ("backup", "198.51.100.3"),
                          ("laptop", "198.51.100.4")):
        net.add(name, address)
    net.nodes["home"].toml = 'routes = ["192.168.1.0/24"]\n'
    net.nodes["backup"].toml = 'standby_routes = ["192.168.1.0/24"]\n'
    net.nodes["laptop"].toml = laptop_toml
    net.start()
    net.run(3.0)
    return net


def test_a_peer_reaches_the_lan_through_the_standby_while_the_primary_is_off():
    """laptop sends a packet to a LAN host every 0.1 s; home (primary) is powered off at
    t0 and back 10 s later: the packets arrive at backup within 3 s, at home again after
    its hysteresis; laptop accepts packets from the LAN through backup only meanwhile."""
    net = home_backup_laptop()
    laptop, home, backup = (net.nodes[n] for n in ("laptop", "home", "backup"))

    def send(i: int) -> bytes:
        payload = f"to the LAN {i}".encode()
        laptop.node.send_packets([ip_packet(laptop.tunnel, "192.168.1.10", payload)], net.now)
        net.run(0.1)
        return payload

    def answer(payload: bytes) -> bool:
        """A LAN host answers laptop through backup: does laptop take it?"""
        backup.node.send_packets([ip_packet("192.168.1.10", laptop.tunnel, payload)], net.now)
        net.run(0.1)
        return any(payload in d for d in laptop.delivered)

    assert lan_packets([send(i) for i in range(10)], home) == 10
    assert not answer(b"from the LAN via backup, home up")
    assert laptop.engine.drops["source_not_allowed"] == 1
    home.down, t0 = True, net.now
    first_at_backup = None
    for i in range(10, 200):
        payload = send(i)
        if first_at_backup is None and any(payload in d for d in backup.delivered):
            first_at_backup = net.now
    assert first_at_backup is not None and first_at_backup - t0 <= 3.5
    assert any("primary home unreachable" in line and "standby backup carries" in line
               for line in laptop.log)
    assert answer(b"from the LAN via backup, home off")
    print(f"sim: the standby carried the LAN {first_at_backup - t0:.2f} s after home went off")
    home.down = False
    net.run(UP_AFTER_S + 3.0)
    assert lan_packets([send(i) for i in range(300, 310)], home) == 10
    assert any("primary home back" in line for line in laptop.log)
    # while home carries the LAN, backup is not its router in laptop's cryptokey routing
    assert laptop.engine.peer_for_address(ipaddress.ip_address("192.168.1.10")).name == "home"


def test_the_watch_starts_with_the_node_whatever_its_clock_reads():
    """The shell's clock is monotonic, far from 0: the grace counts from start."""
    laptop = node("laptop")
    laptop.start(5000.0, 0.0)
    laptop.handle_timer(5001.0)
    (route,) = [r for r in laptop.status(5001.0)["routes"]["mesh"] if r["standby"]]
    assert (route["via"], route["primary_state"]) == ("home", "up")
    laptop.handle_timer(5000.0 + START_GRACE_S + 0.5)  # home never answered
    (route,) = [r for r in laptop.status(5007.0)["routes"]["mesh"] if r["standby"]]
    assert (route["via"], route["primary_state"]) == ("backup", "down")


def test_a_reload_adds_and_removes_routes_and_keeps_the_peer():
    laptop = node("laptop")
    laptop.start(0.0, 0.0)
    home_peer = laptop.engine.peer_named("home")
    text = mesh_text().replace('"fd00:1::/64"', '"10.50.0.0/16"')
    changes = laptop.reload(parse_mesh(text, "m.toml"), 1.0)
    assert changes.changed == ["home"] and laptop.engine.peer_named("home") is home_peer
    routes = laptop.tun_config().routes
    assert "10.50.0.0/16" in routes and "fd00:1::/64" not in routes
    assert laptop.engine.peer_for_address(ipaddress.ip_address("fd00:1::9")) is None
    logged = [e.message for e in laptop.effects() if hasattr(e, "message")]
    assert "routes: 10.50.0.0/16 via home: routed into the tunnel" in logged
    assert "routes: fd00:1::/64: no longer in the mesh file" in logged


def test_after_a_standby_takes_over_the_firewall_knows_the_lan_by_its_new_router():
    """laptop denies everything from backup; a LAN packet through home passes, and once
    backup carries the LAN the same packet through backup is dropped, not waved through
    by what the firewall remembered of home."""
    net = home_backup_laptop('firewall = [{ action = "deny", from = "backup" }]\n')
    laptop, home, backup = (net.nodes[n] for n in ("laptop", "home", "backup"))

    def through(router: SimHost, payload: bytes) -> bool:
        router.node.send_packets([ip_packet("192.168.1.10", laptop.tunnel, payload)], net.now)
        net.run(0.1)
        return any(payload in d for d in laptop.delivered)

    assert through(home, b"from the LAN via home")
    home.down = True
    net.run(5.0)
    assert any("standby backup carries" in line for line in laptop.log)
    assert not through(backup, b"from the LAN via backup")
    assert laptop.node.firewall.status()["rules"][0]["drops"] == 1
