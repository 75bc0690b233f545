"""The self-healing mesh on the lab: six nodes, peers know only the anchors.

Narrated steps: (1) every pair reaches every other, peers finding each other by
gossip; (2) a peer is re-addressed and everyone reaches it again; (3) both
anchors restart and find the peers from their LKG caches (the mesh file gives
them no endpoint for any peer); (4) with the anchors down, peers restarted from
their caches reach each other; (5) one anchor alone: the warning.
"""

from __future__ import annotations

import itertools
import os
import signal
import time

import pytest

from whalescale.lab.mesh import LabMesh

pytestmark = pytest.mark.lab

PEERS = ["p1", "p2", "p3", "p4"]
ANCHORS = ["anchor1", "anchor2"]


def wait_all_pairs(mesh: LabMesh, names: list[str], timeout: float) -> float:
    """Seconds until every ordered pair of `names` pings through the tunnel."""
    started = time.monotonic()
    pending = set(itertools.permutations(names, 2))
    while pending:
        for src, dst in sorted(pending):
            if mesh.nodes[src].host.ping(mesh.nodes[dst].tunnel_addr, count=1, timeout=0.5):
                pending.discard((src, dst))
        if pending and time.monotonic() - started > timeout:
            logs = "\n".join(f"--- {n}\n{mesh.nodes[n].proc.log()[-3000:]}" for n in names)
            raise AssertionError(f"unreached after {timeout} s: {sorted(pending)}\n{logs}")
    return time.monotonic() - started


def start_star(lab, anchors: list[str], peers: list[str]) -> tuple[dict, LabMesh]:
    """One host per node on a star; the anchors' endpoints alone are in the mesh file."""
    hosts = lab.star(anchors + peers)
    mesh = LabMesh(lab, keepalive_s=2)
    for name in anchors:
        mesh.add_node(hosts[name], anchor=True)
    for name in peers:
        mesh.add_node(hosts[name], static_endpoint=False)
    mesh.start_all()
    return hosts, mesh


def test_six_node_mesh_heals_itself(lab):
    hosts, mesh = start_star(lab, ANCHORS, PEERS)
    everyone = ANCHORS + PEERS

    # (1) peers know only the anchors; gossip tells them about each other
    full_mesh_s = wait_all_pairs(mesh, everyone, timeout=60)
    p2 = mesh.status("p2")
    assert {p["name"] for p in p2["peers"] if p["session"]} == set(everyone) - {"p2"}
    # and gossip converges: p2 holds every other node's own signed record
    deadline = time.monotonic() + 20
    while any(p["record_seq"] is None for p in mesh.status("p2")["peers"]):
        assert time.monotonic() < deadline, mesh.status("p2")
        time.sleep(0.5)

    # (2) p1 moves to a new address: everyone reaches it again
    new_address = hosts["p1"].readdress()
    started = time.monotonic()
    pending = {n for n in everyone if n != "p1"}
    while pending and time.monotonic() - started < 60:
        pending = {n for n in pending
                   if not mesh.nodes[n].host.ping(mesh.nodes["p1"].tunnel_addr, count=1,
                                                  timeout=0.5)}
    assert not pending, f"still cannot reach p1 from {pending}"
    readdress_s = time.monotonic() - started
    assert any(p["endpoint"] == f"{new_address}:51820"
               for p in mesh.status("p3")["peers"] if p["name"] == "p1")

    # (3) both anchors restart, one of them killed outright (kill -9: no clean shutdown,
    # whatever it was writing to its cache); the mesh file gives them no peer endpoints
    killed = mesh.nodes["anchor1"].proc
    os.kill(killed.pid, signal.SIGKILL)
    killed.stop()
    mesh.nodes["anchor2"].proc.stop()
    for name in ANCHORS:
        mesh.start(name)
        mesh.wait_up(name)
    anchors_back_s = wait_all_pairs(mesh, everyone, timeout=60)
    for name in ANCHORS:
        log = mesh.nodes[name].proc.log()
        assert "last-known-good cache: endpoints for 5 of 5 peers" in log, log
        assert "corrupt" not in log

    # (4) everything stops; peers come back without any anchor, from their caches
    for name in everyone:
        mesh.nodes[name].proc.stop()
    for name in PEERS:
        mesh.start(name)
        mesh.wait_up(name)
    cache_only_s = wait_all_pairs(mesh, PEERS, timeout=60)

    # (5) one anchor alone: every peer warns
    mesh.start("anchor1")
    mesh.wait_up("anchor1")
    assert mesh.nodes["p4"].proc.wait_for_log(r"anchors: only one anchor reachable", 30)
    assert "only one anchor reachable" in mesh.status("p4")["warnings"][0]

    print(f"\nself-healing figures: full mesh {full_mesh_s:.1f} s, re-addressed peer reached "
          f"again by all in {readdress_s:.1f} s, anchors restarted and all pairs back in "
          f"{anchors_back_s:.1f} s, peers from caches alone in {cache_only_s:.1f} s")
