"""A mesh member forges gossip about another peer: no endpoint moves, each forgery counted."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from whalescale.lab.mesh import LabMesh

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]


def test_forged_records_move_no_endpoint(lab):
    hosts = lab.star(["anchor", "target", "rogue"])
    mesh = LabMesh(lab, keepalive_s=2)
    anchor = mesh.add_node(hosts["anchor"], anchor=True)
    target = mesh.add_node(hosts["target"], static_endpoint=False)
    rogue = mesh.add_node(hosts["rogue"], static_endpoint=False)
    mesh.write_mesh()
    for name in ("anchor", "target"):
        mesh.start(name)
        mesh.wait_up(name)
    assert target.host.ping(anchor.tunnel_addr, count=3)

    def target_seen_by_anchor() -> dict:
        status = mesh.status("anchor")
        return status, next(p for p in status["peers"] if p["name"] == "target")

    deadline = time.monotonic() + 20
    while (target_before := target_seen_by_anchor()[1])["record_seq"] is None:
        assert time.monotonic() < deadline, "the anchor never got the target's own record"
        time.sleep(0.2)
    before, target_before = target_seen_by_anchor()
    result = rogue.host.run(
        sys.executable, "-m", "tests.agent.rogue", str(rogue.key_path),
        anchor.identity.public_b64, anchor.host.addr(), "51820", str(target.key_path),
        "192.0.2.66", timeout=60)
    assert int(result.stdout) >= 5  # handshake + four forgeries reached the anchor

    after, target_after = target_seen_by_anchor()
    assert target_after["endpoint"] == target_before["endpoint"] == f"{target.host.addr()}:51820"
    assert target_after["record_seq"] == target_before["record_seq"]  # no forged record won
    assert anchor.host.ping(target.tunnel_addr, count=2)
    counted = {k: after["gossip"].get(k, 0) - before["gossip"].get(k, 0)
               for k in ("bad_signature", "replayed_or_older", "forged_self_attestation")}
    assert counted["bad_signature"] == 2, after["gossip"]  # unsigned and wrongly signed
    assert counted["replayed_or_older"] == 1, after["gossip"]
    assert counted["forged_self_attestation"] == 1, after["gossip"]
    assert after["gossip"].get("accepted", 0) == before["gossip"].get("accepted", 0)
