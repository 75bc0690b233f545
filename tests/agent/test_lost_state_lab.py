"""A node that loses its state dir (a wiped cache, a DynamicUser reset) and moves, on the lab.

Narrated steps: (1) four nodes, peers know only the anchors; p1 restarts once, so the
mesh holds its record at a seq from its second reserved block (above 2**32); (2) p1
stops, its state dir is wiped, its host moves to a new address and p1 starts again
with its seq counter back at 1; (3) p1 learns the seq the mesh holds for it and
publishes above it: every other node holds p1's new record and reaches it at its new
address, instead of ignoring its records as `replayed_or_older`; (4) p1 restarts
with the cache it has now: its first record is above that, without the mesh's help.
"""

from __future__ import annotations

import re
import shutil
import time

import pytest

from whalescale.lab.mesh import LabMesh

from .test_self_healing import start_star, wait_all_pairs

pytestmark = pytest.mark.lab

ANCHORS = ["anchor1", "anchor2"]
PEERS = ["p1", "p2"]


def p1_as_seen(mesh: LabMesh, by: str) -> dict:
    return next(p for p in mesh.status(by)["peers"] if p["name"] == "p1")


def test_a_node_with_a_wiped_state_dir_publishes_above_its_old_seq_and_peers_follow(lab):
    hosts, mesh = start_star(lab, ANCHORS, PEERS)
    everyone = ANCHORS + PEERS
    others = [n for n in everyone if n != "p1"]
    wait_all_pairs(mesh, everyone, timeout=60)

    # (1) a warm restart: p1's next record comes from a second block of seqs
    mesh.nodes["p1"].proc.stop()
    mesh.start("p1")
    mesh.wait_up("p1")
    deadline = time.monotonic() + 30
    while any((p1_as_seen(mesh, n)["record_seq"] or 0) <= 2**32 for n in others):
        assert time.monotonic() < deadline, [p1_as_seen(mesh, n) for n in others]
        time.sleep(0.5)
    old_seq = max(p1_as_seen(mesh, n)["record_seq"] for n in others)

    # (2) p1 loses its state dir and moves
    mesh.nodes["p1"].proc.stop()
    shutil.rmtree(mesh.state_dir("p1"))
    new_address = hosts["p1"].readdress()
    started = time.monotonic()
    mesh.start("p1")
    mesh.wait_up("p1")

    # (3) everyone holds a record of p1 above the old seq, and reaches p1 where it is now
    pending = set(others)
    while pending:
        pending = {n for n in pending if (p1_as_seen(mesh, n)["record_seq"] or 0) <= old_seq}
        if pending:
            assert time.monotonic() - started < 30, \
                (pending, mesh.nodes["p1"].proc.log()[-3000:])
            time.sleep(0.5)
    followed_s = time.monotonic() - started
    log = mesh.nodes["p1"].proc.log()
    assert f"the mesh holds our record at seq {old_seq}" in log, log[-3000:]
    wait_all_pairs(mesh, everyone, timeout=30)
    for name in others:
        assert p1_as_seen(mesh, name)["endpoint"] == f"{new_address}:51820"

    # (4) a warm restart: the seq p1 learned was kept in its new cache
    new_seq = p1_as_seen(mesh, "p2")["record_seq"]
    mesh.nodes["p1"].proc.stop()
    mesh.start("p1")
    mesh.wait_up("p1")
    proc = mesh.nodes["p1"].proc
    assert proc.wait_for_log(r"publishing our endpoints .* \(record seq \d+\)", 10)
    first = int(re.search(r"publishing our endpoints .* \(record seq (\d+)\)", proc.log())[1])
    assert first > new_seq, proc.log()[-3000:]
    assert "the mesh holds our record" not in proc.log()
    print(f"\nlost state: peers hold p1's record above seq {old_seq} {followed_s:.1f} s "
          "after its restart")
