"""Two whalescale agents in two namespaces: ping and iperf3 through ws0."""

from __future__ import annotations

import sys

import pytest

from whalescale.lab.iperf import iperf_tcp
from whalescale.lab.mesh import LabMesh, MeshNode

pytestmark = pytest.mark.lab


def test_ping_and_iperf_through_the_tunnel(lab):
    hosts = lab.star(["alice", "bob"])
    mesh = LabMesh(lab)
    alice, bob = mesh.add_node(hosts["alice"], anchor=True), mesh.add_node(hosts["bob"])
    mesh.start_all()

    assert alice.host.ping(bob.tunnel_addr, count=3, timeout=2.0)
    assert bob.host.ping(alice.tunnel_addr, count=3, timeout=2.0)
    result = iperf_tcp(alice.host, bob.host, bob.tunnel_addr, 3)
    # the figure itself is for the benchmark; here it must simply flow
    assert result.gbit_s > 0.01
    assert min(result.intervals_gbit_s) > 0
    assert any(peer == "bob" for peer, _, _ in alice.handshakes())


def alice_and_bob(lab) -> tuple[LabMesh, MeshNode]:
    hosts = lab.star(["alice", "bob"])
    mesh = LabMesh(lab)
    alice = mesh.add_node(hosts["alice"])
    mesh.add_node(hosts["bob"])
    mesh.write_mesh()
    return mesh, alice


def test_stopped_agent_removes_its_interface(lab):
    mesh, alice = alice_and_bob(lab)
    mesh.start_all()
    assert "ws0" in alice.host.run("ip", "-brief", "link").stdout
    assert alice.proc.stop() == 0
    assert "ws0" not in alice.host.run("ip", "-brief", "link").stdout
    assert "down" in alice.proc.log()


def test_busy_port_is_a_clear_error_and_leaves_nothing(lab):
    mesh, alice = alice_and_bob(lab)
    holder = alice.host.spawn(
        sys.executable, "-c",
        "import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        "s.bind(('0.0.0.0', 51820)); print('bound', flush=True); time.sleep(60)")
    assert holder.wait_for_log("bound", 10)
    result = alice.host.run(sys.executable, "-m", "whalescale", "up", str(mesh.mesh_path),
                            "--key", str(alice.key_path), "--state-dir",
                            str(lab.tempdir / "state"), check=False)
    assert result.returncode == 1
    assert "cannot start" in result.stderr and "in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert "ws0" not in alice.host.run("ip", "-brief", "link").stdout


def test_ipv6_underlay_and_ipv6_inside_the_tunnel(lab):
    hosts = lab.star(["alice", "bob"], v6=True)
    mesh = LabMesh(lab, ipv6_endpoints=True)
    alice, bob = mesh.add_node(hosts["alice"]), mesh.add_node(hosts["bob"])
    mesh.start_all()
    assert alice.host.ping(bob.tunnel_addr6, count=3, timeout=2.0)
    assert bob.host.ping(alice.tunnel_addr, count=3, timeout=2.0)
    # the session runs over the IPv6 underlay
    assert f"via [{bob.host.addr6()}]:51820" in alice.proc.log() or \
        f"via [{alice.host.addr6()}]:51820" in bob.proc.log()
