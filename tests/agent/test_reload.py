"""Reloading a running agent: by command and by SIGHUP; a bad file changes nothing."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from whalescale.identity import Identity
from whalescale.lab.mesh import LabMesh

pytestmark = pytest.mark.lab


def reload(node, lab) -> tuple[int, str, str]:
    result = node.host.run(sys.executable, "-m", "whalescale", "reload", "--state-dir",
                           str(lab.tempdir / f"state-{node.name}"), check=False)
    return result.returncode, result.stdout, result.stderr


def sessions_with(node, peer: str) -> int:
    return sum(1 for name, _, _ in node.handshakes() if name == peer)


@pytest.fixture
def pair(lab):
    hosts = lab.star(["alice", "bob"])
    mesh = LabMesh(lab)
    alice, bob = mesh.add_node(hosts["alice"]), mesh.add_node(hosts["bob"])
    mesh.start_all()
    assert alice.host.ping(bob.tunnel_addr, count=3, timeout=2.0)
    return mesh, alice, bob


def test_valid_reload_adds_a_peer_and_keeps_the_session(lab, pair):
    mesh, alice, bob = pair
    before = sessions_with(alice, "bob")
    carol_line = (f'\n[[node]]\nname = "carol"\npublic_key = "{Identity.generate().public_b64}"\n'
                  'address = "100.96.0.77"\n')
    mesh.mesh_path.write_text(mesh.mesh_toml() + carol_line)
    code, out, err = reload(alice, lab)
    assert code == 0, err
    assert "1 added ['carol']" in out and "1 unchanged" in out
    assert "100.96.0.77" in alice.host.run("ip", "route", "show", "dev", "ws0").stdout
    assert alice.host.ping(bob.tunnel_addr, count=2, timeout=2.0)
    assert sessions_with(alice, "bob") == before  # no new handshake: the session stayed
    assert "reload applied" in alice.proc.log()


def test_bad_mesh_is_refused_and_the_tunnel_keeps_working(lab, pair):
    mesh, alice, bob = pair
    mesh.mesh_path.write_text(mesh.mesh_toml().replace("keepalive_s = 25", "keepalive_s = -1"))
    code, _, err = reload(alice, lab)
    assert code == 1
    assert f"{mesh.mesh_path}:4:15: mesh.keepalive_s" in err, err
    assert "the running mesh stays" in err
    assert alice.host.ping(bob.tunnel_addr, count=2, timeout=2.0)
    assert "reload refused" in alice.proc.log()


def test_sighup_reloads_and_a_removed_peer_is_cut_off(lab, pair):
    mesh, alice, bob = pair
    without_bob = mesh.mesh_toml().split("[[node]]")
    mesh.mesh_path.write_text("[[node]]".join(without_bob[:2]))  # mesh + alice only
    os.kill(alice.proc.pid, signal.SIGHUP)
    assert alice.proc.wait_for_log(r"reload applied: .*1 removed \['bob'\]", 10), alice.proc.log()
    assert bob.tunnel_addr not in alice.host.run("ip", "route", "show", "dev", "ws0").stdout
    assert not bob.host.ping(alice.tunnel_addr, count=2, timeout=1.0)


def test_reload_without_an_agent_says_so(lab):
    host = lab.host("lonely")
    result = host.run(sys.executable, "-m", "whalescale", "reload", "--state-dir",
                      str(lab.tempdir / "nothing"), check=False)
    assert result.returncode == 2
    assert "no agent is running" in result.stderr


def test_hostile_files_on_sighup_are_refused_and_the_tunnel_keeps_answering(lab, pair):
    """Issue 15's probe: a file nested 600 deep (RecursionError in the parser), one of 10 MB,
    binary garbage. Each SIGHUP is refused with a one-line reason in the log; the agent
    and its session stay."""
    mesh, alice, bob = pair
    valid = mesh.mesh_toml()
    hostile = {
        "nested too deeply": f"{valid}deep = {'[' * 600}{']' * 600}\n".encode(),
        "larger than 1048576 bytes": f"{valid}# {'x' * (10 * 1024 * 1024)}\n".encode(),
        "not UTF-8 text": valid.encode() + b"\n\xff\xfe garbage",
    }
    assert alice.proc is not None
    for i, (reason, data) in enumerate(hostile.items(), start=1):
        mesh.mesh_path.write_bytes(data)
        os.kill(alice.proc.pid, signal.SIGHUP)
        assert alice.proc.wait_for_log(f"(?s)(reload refused.*?){{{i}}}", 20), \
            alice.proc.log()[-2000:]
        assert reason in alice.proc.log(), alice.proc.log()[-2000:]
        assert alice.host.ping(bob.tunnel_addr, count=2, timeout=2.0)
    assert "Traceback" not in alice.proc.log()
    mesh.mesh_path.write_text(valid)
    code, out, _ = reload(alice, lab)
    assert code == 0 and "reload applied" in out
