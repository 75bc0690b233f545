"""Subnet routers between real agents: a LAN host behind a router answers a peer; a node
on that LAN keeps it out of its tunnel; a standby router takes over when the primary's
agent is killed."""

from __future__ import annotations

import ipaddress
import os
import signal
import sys
import time

import pytest

from whalescale.lab import gaps
from whalescale.lab.mesh import LabMesh, MeshNode

pytestmark = pytest.mark.lab

ECHO_PORT = 7777


def reload(mesh: LabMesh, name: str) -> None:
    node = mesh.nodes[name]
    node.host.run(sys.executable, "-m", "whalescale", "reload", "--state-dir",
                  str(mesh.state_dir(name)))


def tun_routes(node) -> str:
    return node.host.run("ip", "-4", "route", "show", "dev", "ws0").stdout + \
        node.host.run("ip", "-6", "route", "show", "dev", "ws0").stdout


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.2)


def settled_handshakes(node: MeshNode, quiet_s: float = 2.0, timeout_s: float = 20.0) -> int:
    """The node's handshakes once no new one came for `quiet_s`: a pair may start on the
    relay and move to a punched path with a handshake of its own."""
    deadline = time.monotonic() + timeout_s
    count = len(node.handshakes())
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        if (now := len(node.handshakes())) == count:
            return count
        count = now
    raise AssertionError(f"{node.name}'s sessions still changing: {node.handshakes()}")


def test_a_lan_host_behind_a_subnet_router_answers_a_peer(lab):
    """The router carries 10.200.0.0/16 (its LAN, with the printer) and later the
    printer's IPv6 /64 too. peer routes both into its tunnel and pings the printer;
    athome has an address in 10.200.0.0/16 itself and keeps that route out of its TUN.
    The router first runs with forwarding off: it says so in its log and status."""
    hosts = lab.star(["router", "peer", "athome"])
    router_host = hosts["router"]
    printer = lab.host("printer")  # a plain host: no agent
    lan = lab.link(router_host, printer, subnet="10.200.1.0/24", v6=True)
    printer.route_via(lan)  # its default gateway (IPv4 and IPv6) is the router
    lab.link(router_host, hosts["athome"], subnet="10.200.2.0/24")
    printer_v6 = lan.addr_of(printer, v6=True)
    lan_v6 = ipaddress.ip_network(f"{printer_v6}/64", strict=False)

    mesh = LabMesh(lab)
    router = mesh.add_node(router_host, anchor=True)
    peer, athome = mesh.add_node(hosts["peer"]), mesh.add_node(hosts["athome"])
    router.toml_lines = ['routes = ["10.200.0.0/16"]']
    router_host.set_forwarding(False)
    mesh.start_all()

    # step 1: forwarding is off on the router: a warning, and status says it
    assert router.proc.wait_for_log("ipv4 forwarding is off", 10), router.proc.log()
    status = mesh.status("router")
    assert status["routes"]["own"] == ["10.200.0.0/16"]
    assert status["routes"]["forwarding"]["ipv4"] is False
    assert any("ipv4 forwarding is off" in w for w in status["warnings"])

    # step 2: the host turns forwarding on, the router adds its IPv6 LAN; reload everyone
    router_host.set_forwarding(True)
    router.toml_lines = [f'routes = ["10.200.0.0/16", "{lan_v6}"]']
    mesh.write_mesh()
    sessions = settled_handshakes(peer)
    for name in ("router", "peer", "athome"):
        reload(mesh, name)
    status = mesh.status("router")
    assert status["routes"]["forwarding"] == {"ipv4": True, "ipv6": True}
    assert not any("forwarding" in w for w in status["warnings"])

    # step 3: peer reaches the printer over IPv4 and IPv6; the routes are in its TUN
    assert "10.200.0.0/16" in tun_routes(peer) and str(lan_v6) in tun_routes(peer)
    assert peer.host.ping("10.200.1.2", count=3, timeout=2.0)
    assert peer.host.ping(printer_v6, count=3, timeout=2.0)
    assert len(peer.handshakes()) == sessions  # the reload kept every session
    (seen,) = mesh.status("peer")["routes"]["mesh"][:1]
    assert (seen["network"], seen["via"], seen["routed"]) == ("10.200.0.0/16", "router", True)

    # step 4: athome sits in 10.200.0.0/16: not in its TUN, and it says why
    assert "10.200.0.0/16" not in tun_routes(athome)
    assert str(lan_v6) in tun_routes(athome)  # it has no address in the IPv6 LAN
    (mine,) = [r for r in mesh.status("athome")["routes"]["mesh"]
               if r["network"] == "10.200.0.0/16"]
    assert mine["routed"] is False and mine["skip"].startswith("we sit in it: our address "
                                                               "10.200.2.2/24")
    assert "10.200.0.0/16 via router: not routed into the tunnel (we sit in it" in \
        athome.proc.log()
    # the router keeps its own LAN out of its TUN too
    assert "10.200.0.0/16" not in tun_routes(router)


def shared_lan(printer, routers: dict, printer_addr: str) -> None:
    """One Ethernet segment: a bridge in the printer's namespace joins its links to each
    router; every end gets the address given (one /24)."""
    printer.run("ip", "link", "add", "br0", "type", "bridge")
    for link, address in routers.items():
        router = link.peer_of(printer)
        mine = link.b_ifname if link.b is printer else link.a_ifname
        theirs = link.a_ifname if link.b is printer else link.b_ifname
        printer.run("ip", "addr", "flush", "dev", mine)
        printer.run("ip", "link", "set", mine, "master", "br0")
        router.run("ip", "addr", "flush", "dev", theirs)
        router.run("ip", "addr", "add", f"{address}/24", "dev", theirs)
    printer.run("ip", "addr", "add", f"{printer_addr}/24", "dev", "br0")
    printer.run("ip", "link", "set", "br0", "up")


MASQUERADE = """\
table ip subnet_router {
    chain postrouting {
        type nat hook postrouting priority srcnat;
        ip saddr 100.96.0.0/16 oifname "%s" masquerade
    }
}
"""


def test_a_standby_router_takes_over_within_5_s_when_the_primary_agent_is_killed(lab):
    """home and backup sit on one LAN with the printer; home's routes are backup's
    standby_routes. Both forward and masquerade what comes from the tunnel (host policy:
    the printer answers whichever router asked). laptop sends a UDP echo to the printer
    every 0.1 s; home's agent is killed (SIGKILL, by PID): the echoes resume through
    backup; then home's agent starts again and takes its LAN back."""
    hosts = lab.star(["home", "backup", "laptop"])
    printer = lab.host("printer")
    links = {lab.link(hosts["home"], printer): "10.200.1.2",
             lab.link(hosts["backup"], printer): "10.200.1.3"}
    shared_lan(printer, links, "10.200.1.10")
    for link in links:
        router = link.peer_of(printer)
        router.set_forwarding(True)
        router.nft(MASQUERADE % (link.a_ifname if link.a is router else link.b_ifname))

    mesh = LabMesh(lab)
    laptop = mesh.add_node(hosts["laptop"], anchor=True)
    home, backup = mesh.add_node(hosts["home"]), mesh.add_node(hosts["backup"])
    home.toml_lines = ['routes = ["10.200.1.0/24"]']
    backup.toml_lines = ['standby_routes = ["10.200.1.0/24"]']
    mesh.start_all()
    assert laptop.host.ping("10.200.1.10", count=5, timeout=2.0)
    (route,) = mesh.status("laptop")["routes"]["mesh"]
    assert (route["via"], route["primary_state"], route["routed"]) == ("home", "up", True)

    echo = gaps.start_echo(printer, "10.200.1.10", ECHO_PORT)
    probe = gaps.start_probe(laptop.host, "10.200.1.10", ECHO_PORT, 12.0)
    time.sleep(3.0)
    os.kill(home.proc.pid, signal.SIGKILL)  # the primary's agent dies: its TUN goes
    found = gaps.result(probe, 30.0)
    echo.stop()
    gap = found["longest_gap_s"]
    print(f"lab: the echo to the LAN host paused {gap:.2f} s when the primary's agent "
          f"was killed ({found['answered']} of {found['sent']} answered)")
    assert gap <= 5.0, found
    assert "primary home unreachable" in laptop.proc.log()
    assert mesh.status("laptop")["routes"]["mesh"][0]["via"] == "backup"

    # home comes back: after its hysteresis it carries the LAN again
    home.proc.stop()
    mesh.start("home")
    mesh.wait_up("home")
    wait_for(lambda: "primary home back" in laptop.proc.log(), 30.0, "home carries again")
    assert mesh.status("laptop")["routes"]["mesh"][0]["via"] == "home"
    assert laptop.host.ping("10.200.1.10", count=3, timeout=2.0)
