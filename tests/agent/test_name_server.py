"""The name server: its sockets and the registration with systemd-resolved (a stand-in
resolvectl records what it is asked), then real agents, where a host's own resolver
(glibc, through resolv.conf) asks an agent on its tunnel address and gets the mesh's
names; what is not the mesh's fails; a reload adds a name; a stranger gets nothing."""

from __future__ import annotations

import ipaddress
import logging
import shutil
import socket
import stat
import struct
import sys
from pathlib import Path

import pytest
import trio

from tests.node.dns_queries import MESH, parsed, query
from whalescale.agent.name_server import NameServer
from whalescale.config import parse_mesh
from whalescale.identity import Identity
from whalescale.lab.mesh import LabMesh
from whalescale.lab.netns import Host
from whalescale.node import dns_message as dns
from whalescale.node.dns_answer import DnsResponder

LOOPBACK = ipaddress.ip_address("127.0.0.1")


@pytest.fixture
def resolvectl(tmp_path, monkeypatch) -> Path:
    """A resolvectl on PATH that appends its arguments to `calls` and fails, as the real
    one does without the daemon, when the file `broken` exists: empty, every command;
    else the one it names."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "resolvectl"
    script.write_text(f"""#!/bin/sh
echo "$*" >> {tmp_path}/calls
if [ -e {tmp_path}/broken ] && {{ [ ! -s {tmp_path}/broken ] || \
                                [ "$1" = "$(cat {tmp_path}/broken)" ]; }}; then
    echo "Failed to set DNS configuration: Unit dbus-org.freedesktop.resolve1.service \
not found." >&2
    exit 1
fi
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return tmp_path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def ask_udp(port: int, data: bytes) -> bytes:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.sendto(data, ("127.0.0.1", port))
        with trio.fail_after(2):
            return await sock.recv(4096)


async def ask_tcp(port: int, data: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(len(data).to_bytes(2) + data)
        reply = b""
        with trio.fail_after(2):
            while len(reply) < 2 or len(reply) < 2 + int.from_bytes(reply[:2]):
                reply += await stream.receive_some()
        return reply[2:]


def serve(port: int, test) -> None:
    """Run a NameServer for MESH on 127.0.0.1:`port` around `test(server)`, then stop it."""
    async def main() -> None:
        server = NameServer(DnsResponder(parse_mesh(MESH, "mesh.toml")), "ws0", port)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            server.follow((LOOPBACK,), "home.arpa")
            with trio.fail_after(10):  # it binds and registers in its own task
                await server.settled()
            await test(server)
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_serves_udp_and_tcp_and_registers_with_resolved_until_stopped(resolvectl, caplog):
    port = free_port()

    async def test(server: NameServer) -> None:
        assert parsed(await ask_udp(port, query("nas.home.arpa")))[2] == \
            [(dns.TYPE_A, "100.96.0.1")]
        assert parsed(await ask_tcp(port, query("nas.home.arpa", dns.TYPE_AAAA)))[2] == \
            [(dns.TYPE_AAAA, "fd7a::1")]
        assert parsed(await ask_udp(port, query("example.org")))[1] == dns.RCODE_REFUSED

    with caplog.at_level(logging.INFO, "whalescale.agent.names"):
        serve(port, test)
    assert (resolvectl / "calls").read_text().splitlines() == [
        "dns ws0 127.0.0.1", "domain ws0 ~home.arpa", "default-route ws0 false", "revert ws0"]
    assert f"systemd-resolved asks 127.0.0.1:{port} for *.home.arpa on ws0" in caplog.text


def test_without_resolved_it_says_where_names_are_served(resolvectl, caplog):
    (resolvectl / "broken").touch()
    port = free_port()

    async def test(server: NameServer) -> None:
        assert parsed(await ask_udp(port, query("laptop.home.arpa")))[2] == \
            [(dns.TYPE_A, "100.96.0.2")]

    with caplog.at_level(logging.INFO, "whalescale.agent.names"):
        serve(port, test)
    assert (resolvectl / "calls").read_text() == "dns ws0 127.0.0.1\n"  # no revert either
    assert (f"*.home.arpa served at 127.0.0.1:{port}; systemd-resolved did not take them "
            "(resolvectl dns ws0 127.0.0.1: Failed to set DNS configuration") in caplog.text
    assert "dnsmasq 'server=/home.arpa/127.0.0.1'" in caplog.text


def test_a_half_done_registration_is_taken_back_at_once(resolvectl, caplog):
    (resolvectl / "broken").write_text("domain")
    with caplog.at_level(logging.INFO, "whalescale.agent.names"):
        serve(free_port(), lambda server: trio.sleep(0))
    assert (resolvectl / "calls").read_text().splitlines() == [
        "dns ws0 127.0.0.1", "domain ws0 ~home.arpa", "revert ws0"]
    assert "systemd-resolved did not take them (resolvectl domain ws0 ~home.arpa" in caplog.text


def test_a_taken_port_is_logged_with_what_to_do_and_nothing_registered(resolvectl, caplog):
    port = free_port()
    holders = [socket.socket(socket.AF_INET, kind)
               for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)]
    for holder in holders:
        holder.bind(("0.0.0.0", port))

    try:
        with caplog.at_level(logging.INFO, "whalescale.agent.names"):
            serve(port, lambda server: trio.sleep(0))
    finally:
        for holder in holders:
            holder.close()
    assert caplog.text.count("the port is taken") == 2  # UDP and TCP
    assert not (resolvectl / "calls").exists()


def test_a_tcp_connection_that_sends_garbage_is_closed(resolvectl):
    port = free_port()

    async def test(server: NameServer) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(struct.pack("!H", 3) + b"abc")
            with trio.fail_after(2):
                assert await stream.receive_some() == b""  # closed, no answer
        assert parsed(await ask_tcp(port, query("nas.home.arpa")))[1] == dns.RCODE_NOERROR

    serve(port, test)


def resolve(host: Host, nameserver: str, name: str, database: str = "ahosts", *,
            tcp: bool = False) -> tuple[int, list[str]]:
    """`getent DATABASE NAME` in `host` with `nameserver` as its only DNS server: (exit
    status, the addresses found). `ip netns exec` binds /etc/netns/NS/resolv.conf over
    /etc/resolv.conf for the command, so this is the path every program takes."""
    options = "options timeout:1 attempts:1" + (" use-vc" if tcp else "")
    (host.etc_dir() / "resolv.conf").write_text(f"nameserver {nameserver}\n{options}\n")
    result = host.run("getent", database, name, check=False)
    return result.returncode, sorted({line.split()[0] for line in result.stdout.splitlines()})


@pytest.mark.lab
def test_names_resolve_through_the_agents_and_follow_a_reload(lab):
    hosts = lab.star(["alice", "bob", "eve"])
    mesh = LabMesh(lab)
    alice, bob = mesh.add_node(hosts["alice"]), mesh.add_node(hosts["bob"])
    try:
        mesh.start_all()
        for node in (alice, bob):  # the sockets are bound just after "up"
            assert node.proc.wait_for_log(r"names: \*\.lab served at 100\.96", 10), \
                node.proc.log()
        assert alice.host.ping(bob.tunnel_addr, count=3, timeout=2.0)

        # alice's resolver asks alice's agent, on her own tunnel address
        assert resolve(alice.host, alice.tunnel_addr, "bob.lab", "hosts") \
            in [(0, [bob.tunnel_addr]), (0, [bob.tunnel_addr6])]
        assert resolve(alice.host, alice.tunnel_addr, "bob.lab", "ahostsv4") \
            == (0, [bob.tunnel_addr])
        assert resolve(alice.host, alice.tunnel_addr, "bob.lab", "ahostsv6") \
            == (0, [bob.tunnel_addr6])
        # ... and bob's agent, through the tunnel, over IPv6 and over TCP
        assert resolve(alice.host, bob.tunnel_addr6, "alice.lab", "ahostsv6") \
            == (0, [alice.tunnel_addr6])
        assert resolve(alice.host, bob.tunnel_addr, "alice.lab", "ahostsv4", tcp=True) \
            == (0, [alice.tunnel_addr])
        # an unknown name under the suffix, and a name that is not the mesh's, fail
        assert resolve(alice.host, alice.tunnel_addr, "nobody.lab")[0] == 2
        assert resolve(alice.host, alice.tunnel_addr, "example.com")[0] == 2

        # a node added by a reload resolves at once
        carol = Identity.generate().public_b64
        mesh.mesh_path.write_text(mesh.mesh_toml() + f'\n[[node]]\nname = "carol"\n'
                                  f'public_key = "{carol}"\naddress = "100.96.0.77"\n')
        result = alice.host.run(sys.executable, "-m", "whalescale", "reload", "--state-dir",
                                str(mesh.state_dir("alice")))
        assert "1 added ['carol']" in result.stdout
        assert resolve(alice.host, alice.tunnel_addr, "carol.lab", "ahostsv4") \
            == (0, ["100.96.0.77"])

        # eve is on the lab's internet, not in the mesh: routed to bob's tunnel address,
        # she reaches it (the weak host model) but gets no answer from bob's agent
        eve, internet = hosts["eve"], lab.internet()
        internet.run("ip", "route", "add", f"{bob.tunnel_addr}/32", "via",
                     bob.host.links[0].addr_of(bob.host))
        assert eve.ping(bob.tunnel_addr, count=2, timeout=2.0)
        assert resolve(eve, bob.tunnel_addr, "alice.lab")[0] == 2
        assert mesh.status("bob")["dns"]["dropped_not_from_mesh"] >= 1
        assert "Traceback" not in alice.proc.log() + bob.proc.log()
    finally:
        for host in hosts.values():  # the lab's teardown does it too; be sure
            shutil.rmtree(Path("/etc/netns") / host.netns, ignore_errors=True)


@pytest.mark.lab
def test_without_port_53_the_tunnel_works_and_the_log_says_what_to_do(lab):
    """bob's port 53 is taken by another server on every address; alice runs without
    CAP_NET_BIND_SERVICE, as a unit that did not grant it would."""
    hosts = lab.star(["alice", "bob"])
    mesh = LabMesh(lab)
    alice, bob = mesh.add_node(hosts["alice"]), mesh.add_node(hosts["bob"])
    mesh.write_mesh()
    holder = bob.host.spawn(
        sys.executable, "-c",
        "import socket, time; u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        "t = socket.socket(); [s.bind(('0.0.0.0', 53)) for s in (u, t)]; t.listen(); "
        "print('bound', flush=True); time.sleep(60)")
    assert holder.wait_for_log("bound", 10)
    mesh.start("alice", wrapper=("setpriv", "--inh-caps=-net_bind_service",
                                 "--bounding-set=-net_bind_service"))
    mesh.start("bob")
    for name in ("alice", "bob"):
        mesh.wait_up(name)
    assert alice.host.ping(bob.tunnel_addr, count=3, timeout=2.0)
    assert bob.host.ping(alice.tunnel_addr6, count=2, timeout=2.0)
    assert alice.proc.wait_for_log(r"cannot serve DNS on \[fd77:7773::1\]:53 tcp: a port "
                                   "below 1024 needs CAP_NET_BIND_SERVICE", 10), alice.proc.log()
    assert bob.proc.wait_for_log(r"cannot serve DNS on 100\.96\.0\.2:53 udp: the port is "
                                 "taken", 10), bob.proc.log()
    assert "Traceback" not in alice.proc.log() + bob.proc.log()
