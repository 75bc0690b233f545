"""Exit nodes between real agents (issue 17 items 2 and 5).

Topology: an "internet" namespace routes between `server` (a UDP service that answers
with the source address it saw, on port 9000 and on 53 as a resolver would), the anchor
`exit` (exit = true, forwarding on), another node `peer`, and `gw`, a NAT gateway whose
LAN holds `user`; `gw` also answers on UDP 53 on its LAN address, as a home router's
resolver does. `user` sends its default route through `exit`:
- the server sees `user`'s traffic, and its DNS queries, arrive from the exit's address,
  not from the gateway's, while a ping through the tunnel to `peer` works;
- the LAN resolver hears nothing (the configured resolvers go to the exit too);
- a clean stop leaves `ip rule` and every routing table exactly as before;
- kill -9 of the agent: fail-open reaches the server directly; the kill switch reaches
  nothing until the agent starts again and stops cleanly;
- strict reverse path filtering works once the host sets src_valid_mark (and says so
  until then); a reload starts and stops using the exit, sessions untouched.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import sys
import time

import pytest

from whalescale.lab.mesh import LabMesh, MeshNode
from whalescale.lab.natlab import Nat, nat_ruleset
from whalescale.lab.netns import Host

pytestmark = pytest.mark.lab

SERVICE_PORT = 9000
DNS_PORT = 53
REPORTER = """
import select, socket, sys
socks = []
for host in sys.argv[1].split(","):
    for port in map(int, sys.argv[2:]):
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        if ":" in host:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, port))
        socks.append(s)
print("listening", flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        data, addr = s.recvfrom(2048)
        print(f"query from {addr[0]} to port {s.getsockname()[1]}", flush=True)
        s.sendto(addr[0].encode(), addr)
"""
ASK = """
import socket, struct, sys
v6 = ":" in sys.argv[1]
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[3]))
if len(sys.argv) > 4:  # pinned to an interface, as systemd-resolved does a link's servers
    index = struct.pack("!I", socket.if_nametoindex(sys.argv[4]))  # network byte order
    s.setsockopt(*((socket.IPPROTO_IPV6, 76) if v6 else (socket.IPPROTO_IP, 50)), index)
try:
    s.sendto(b"who am I?", (sys.argv[1], int(sys.argv[2])))
    print(s.recvfrom(2048)[0].decode())
except TimeoutError:
    print("no answer")
except OSError as exc:
    print(f"unreachable ({exc.strerror})")
"""


def ask(host: Host, address: str, port: int, timeout_s: float = 2.0,
        pinned_to: str | None = None) -> str:
    """The source address `address` saw our UDP query come from, "no answer", or
    "unreachable (...)" when the kernel refused to send it; `pinned_to`: the query's
    socket is pinned to that interface (IP_UNICAST_IF)."""
    pinned = () if pinned_to is None else (pinned_to,)
    return host.run(sys.executable, "-c", ASK, address, str(port), str(timeout_s),
                    *pinned).stdout.strip()


def routing(host: Host) -> str:
    """Every rule and every route of every table, both families, and the nftables
    tables: what a stop restores."""
    return "".join(host.run("ip", *family, *what).stdout
                   for family in (["-4"], ["-6"])
                   for what in (["rule"], ["route", "show", "table", "all"])
                   ) + host.run("nft", "list", "tables").stdout


def kill_9(node: MeshNode) -> None:
    """A crash: the agent gets no chance to clean up."""
    assert node.proc is not None
    os.killpg(node.proc.pid, signal.SIGKILL)
    node.proc.stop()  # reaps it
    start = time.monotonic()
    while "ws0" in node.host.run("ip", "link").stdout:  # the TUN goes with the process
        assert time.monotonic() < start + 30, "the TUN outlived its agent"
        time.sleep(0.05)


class ExitLab:
    def __init__(self, lab, user_lines: list[str]) -> None:
        hosts = lab.star(["server", "exit", "peer"], v6=True)
        self.server, exit_host = hosts["server"], hosts["exit"]
        self.gw = lab.host("gw")
        wan = lab.link(lab.internet(), self.gw, v6=True)
        self.gw.route_via(wan)
        self.gw.set_forwarding(True)
        self.user_host = lab.host("user")
        # IPv6 routed, not translated (as natlab's v6 sites): the internet has no route
        # back to this LAN, so only the exit's IPv6 address can take the user's out
        lan = lab.link(self.gw, self.user_host, v6=True)
        self.user_host.route_via(lan)
        self.gw.nft(nat_ruleset(Nat.RESTRICTED, wan=wan.b_ifname,
                                lan_subnet=f"{lan.a_addr}/{lan.prefixlen}"))
        self.gw_public, self.lan_resolver = wan.b_addr, lan.a_addr
        self.lan_interface = lan.b_ifname  # the user's
        # another address of the gateway's, a LAN host that is no resolver
        self.lan_host = str(ipaddress.ip_address(lan.b_addr) + 1)
        self.gw.run("ip", "addr", "add", f"{self.lan_host}/{lan.prefixlen}", "dev", lan.a_ifname)
        exit_host.set_forwarding(True)
        # resolv.conf before the agent starts: it routes these resolvers to the exit
        (self.user_host.etc_dir() / "resolv.conf").write_text(
            f"nameserver {self.lan_resolver}\nnameserver {self.server.addr()}\n"
            f"nameserver {self.server.addr6()}\n")
        self.server.spawn(sys.executable, "-c", REPORTER, "0.0.0.0,::", str(SERVICE_PORT),
                          str(DNS_PORT)).wait_for_log("listening", 10)
        self.gw_resolver = self.gw.spawn(sys.executable, "-c", REPORTER, self.lan_resolver,
                                         str(DNS_PORT))
        self.gw_resolver.wait_for_log("listening", 10)
        self.mesh = LabMesh(lab)
        self.exit = self.mesh.add_node(exit_host, anchor=True)
        self.exit.toml_lines.append("exit = true")
        self.peer = self.mesh.add_node(hosts["peer"])
        self.user = self.mesh.add_node(self.user_host, static_endpoint=False)
        self.user.toml_lines += user_lines
        self.before = routing(self.user_host)

    def start(self, *extra: str) -> None:
        self.mesh.write_mesh()
        for node in (self.exit, self.peer):
            if node.proc is None:
                self.mesh.start(node.name)
                self.mesh.wait_up(node.name)
        self.mesh.start("user", *extra)
        self.mesh.wait_up("user")
        assert self.user_host.ping(self.exit.tunnel_addr, count=5, timeout=2.0), \
            self.user.proc.log()

    def via_exit(self) -> bool:
        return ask(self.user_host, self.server.addr(), SERVICE_PORT) == self.exit.host.addr()


def test_traffic_leaves_by_the_exit_the_mesh_keeps_working_and_a_stop_restores_routes(lab):
    net = ExitLab(lab, [])
    assert ask(net.user_host, net.server.addr(), SERVICE_PORT) == net.gw_public  # direct
    assert ask(net.user_host, net.server.addr6(), SERVICE_PORT, 1.0) == "no answer"
    net.start("--exit-node", "exit")

    # the internet sees the exit, not the user's gateway; the mesh works meanwhile
    assert ask(net.user_host, net.server.addr(), SERVICE_PORT) == net.exit.host.addr()
    assert net.user_host.ping(net.peer.tunnel_addr, count=3, timeout=2.0)
    assert net.user_host.ping(net.server.addr(), count=2, timeout=2.0)
    assert ask(net.user_host, net.server.addr6(), SERVICE_PORT) == net.exit.host.addr6()
    # DNS: the resolver on the internet hears the exit; the one on the LAN hears nothing
    assert ask(net.user_host, net.server.addr(), DNS_PORT) == net.exit.host.addr()
    assert ask(net.user_host, net.lan_resolver, DNS_PORT, 1.0) == "no answer"
    # ... also a query pinned to the LAN interface, as systemd-resolved sends to the
    # servers DHCP gave that link (before, it left by the LAN: the exit's table routes
    # into the TUN, which an output interface fixed to the LAN never matches)
    assert ask(net.user_host, net.server.addr(), DNS_PORT,
               pinned_to=net.lan_interface) == net.exit.host.addr()
    assert ask(net.user_host, net.server.addr6(), DNS_PORT,
               pinned_to=net.lan_interface) == net.exit.host.addr6()
    assert ask(net.user_host, net.lan_resolver, DNS_PORT, 1.0,
               pinned_to=net.lan_interface) == "no answer"
    assert "query from" not in net.gw_resolver.log()
    assert "dev ws0" in net.user_host.run("ip", "route", "get", net.lan_resolver).stdout
    # ... while the rest of the LAN stays outside the tunnel
    assert net.user_host.ping(net.lan_host, count=1, timeout=2.0)

    status = net.mesh.status("user")["exit"]
    assert status == {"via": "exit", "kill_switch": False, "offer": False, "table": 30579,
                      "dns": [net.lan_resolver, net.server.addr(), net.server.addr6()]}
    assert net.mesh.status("exit")["exit"]["offer"] is True
    assert "using exit node exit" in net.user.proc.log()
    assert "whalescale-exit" in net.exit.host.run("nft", "list", "tables").stdout
    # not DNS, pinned: the application chose that interface, and gets it
    assert ask(net.user_host, net.server.addr(), SERVICE_PORT,
               pinned_to=net.lan_interface) == net.gw_public

    net.user.proc.stop()
    assert routing(net.user_host) == net.before
    assert ask(net.user_host, net.server.addr(), SERVICE_PORT) == net.gw_public
    net.exit.proc.stop()
    assert "whalescale" not in net.exit.host.run("nft", "list", "tables").stdout


@pytest.mark.parametrize("kill_switch", [False, True], ids=["fail-open", "kill-switch"])
def test_what_a_crash_leaves(lab, kill_switch: bool):
    net = ExitLab(lab, ['exit_node = "exit"',
                        f"kill_switch = {json.dumps(kill_switch)}"])
    net.start()
    assert net.via_exit()

    kill_9(net.user)
    # the rules stay (nothing could remove them), the tunnel's route went with the TUN
    assert "lookup 30579" in net.user_host.run("ip", "rule").stdout
    answer = ask(net.user_host, net.server.addr(), SERVICE_PORT)
    if kill_switch:
        assert answer == "unreachable (No route to host)"  # the kill switch's route
        assert not net.user_host.ping(net.server.addr(), count=1, timeout=1.0)
        assert net.user_host.ping(net.lan_host, count=1, timeout=2.0)  # the LAN stays
    else:
        assert answer == net.gw_public  # straight out, as if no exit were in use

    # the next start takes over what the crashed run left; a clean stop removes it all
    net.start()
    assert net.via_exit()
    net.user.proc.stop()
    assert routing(net.user_host) == net.before
    assert ask(net.user_host, net.server.addr(), SERVICE_PORT) == net.gw_public


def test_strict_reverse_path_filtering_needs_src_valid_mark_and_then_works(lab):
    net = ExitLab(lab, ['exit_node = "exit"'])
    interfaces = [line.split(": ")[1].split("@")[0]
                  for line in net.user_host.run("ip", "-o", "link").stdout.splitlines()]
    for name in ["all", "default", *interfaces]:
        net.user_host.sysctl(f"net.ipv4.conf.{name}.rp_filter", "1")
    net.mesh.write_mesh()
    for node in (net.exit, net.peer, net.user):
        net.mesh.start(node.name)
        net.mesh.wait_up(node.name)
    # the anchors' answers are checked against the exit's table, and dropped: said so
    assert not net.user_host.ping(net.exit.tunnel_addr, count=2, timeout=1.0)
    assert any("src_valid_mark = 1" in w for w in net.mesh.status("user")["warnings"])
    # what the host's policy must set: reverse path filtering then sees our marks
    net.user_host.sysctl("net.ipv4.conf.all.src_valid_mark", "1")
    assert net.user_host.ping(net.exit.tunnel_addr, count=10, timeout=2.0)
    assert net.via_exit()
    assert not any("src_valid_mark" in w for w in net.mesh.status("user")["warnings"])


def test_a_reload_starts_and_stops_using_an_exit_without_a_new_handshake(lab):
    net = ExitLab(lab, [])
    net.start()
    assert ask(net.user_host, net.server.addr(), SERVICE_PORT) == net.gw_public
    handshakes = len(net.user.handshakes())

    def reload() -> None:
        net.mesh.write_mesh()
        net.user_host.run(sys.executable, "-m", "whalescale", "reload", "--state-dir",
                          str(net.mesh.state_dir("user")))

    net.user.toml_lines.append('exit_node = "exit"')
    reload()
    assert net.via_exit()
    assert net.mesh.status("user")["exit"]["via"] == "exit"
    net.user.toml_lines.pop()
    reload()
    assert ask(net.user_host, net.server.addr(), SERVICE_PORT) == net.gw_public
    assert "no longer using exit node exit" in net.user.proc.log()
    assert len(net.user.handshakes()) == handshakes  # the sessions stayed as they were
    net.user.proc.stop()
    assert routing(net.user_host) == net.before
