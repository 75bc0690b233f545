"""Sessions between two NATed peers come back by themselves when a NAT forgets its
mappings (`conntrack -F` in the gateway) or the gateway's public address changes.

Topology: scenarios/nat-anchor.toml (one anchor, two port-restricted cone NATs). The
peers' session is hole-punched; after each disturbance the test pings until the session
answers again and reports how long that took (`pytest -s` prints it).
"""

from __future__ import annotations

import re
import time

import pytest

from tests.multipath.test_release_compat import previous_release
from whalescale.lab import roam
from whalescale.lab.mesh import LabMesh
from whalescale.lab.scenario import SCENARIO_DIR, build, load, mesh_of, start_mesh

pytestmark = pytest.mark.lab

RECOVERY_TIMEOUT_S = 90.0
# Issue 13's target is 2 s (silence for 1.5 s, then a punch or the relay); a loaded CI
# machine gets room. The figure is printed (`pytest -s`) and recorded in DESIGN.md.
ROAM_BOUND_S = 10.0
# The last commit before anchors sent SEEN_AT (punch message type 4).
BEFORE_SEEN_AT = "c09d26656253366455a0c84e65b6abe05b958c4e"


def time_to_answer(mesh: LabMesh, source: str, to: str, timeout: float) -> float | None:
    """Seconds until `to` answers a ping from `source` (None: not within `timeout`)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if mesh.nodes[source].host.ping(mesh.nodes[to].tunnel_addr, count=1, timeout=0.5):
            return time.monotonic() - started
    return None


def test_punched_session_survives_conntrack_flush_and_a_new_public_address(lab):
    scenario = load(SCENARIO_DIR / "nat-anchor.toml")
    hosts = build(lab, scenario)
    mesh = start_mesh(lab, scenario, hosts)
    first = time_to_answer(mesh, "peer-a", "peer-b", 30)
    assert first is not None, mesh.nodes["peer-a"].proc.log()
    # a warm restart of one end (the other and the anchor run on)
    warm = mesh.restart_and_time("peer-a", "peer-b")
    assert warm is not None and warm < ROAM_BOUND_S, mesh.nodes["peer-a"].proc.log()

    for gateway in ("gateway-a", "gateway-b"):
        hosts[gateway].run("conntrack", "-F")
    flushed = time_to_answer(mesh, "peer-a", "peer-b", RECOVERY_TIMEOUT_S)
    assert flushed is not None, "no session after conntrack -F in both gateways"

    # The node behind the gateway whose public address changes keeps sending (issue 13's
    # case): its data meets silence, and it finds a new path. (When only the other end
    # sends: the next test.)
    new_public = roam.rebind(hosts["gateway-a"])
    moved = time_to_answer(mesh, "peer-a", "peer-b", RECOVERY_TIMEOUT_S)
    assert moved is not None, mesh.nodes["peer-a"].proc.log()
    # not the liveness window (75 s at the default keepalive): the silence is noticed
    assert moved < ROAM_BOUND_S, (moved, mesh.nodes["peer-a"].proc.log()[-3000:])
    # peer-b now talks to peer-a at the gateway's new public address (no relay in between)
    # (the answer may come through the relay first: a punch that may fail opens it at once,
    # and the session moves to the direct path when the punch gets through)
    assert time_to_answer(mesh, "peer-b", "peer-a", 10) is not None
    proc_b = mesh.nodes["peer-b"].proc
    assert proc_b.wait_for_log(f"(session with peer-a established via|peer peer-a now at) "
                               f"{re.escape(new_public)}:", 10), proc_b.log()[-3000:]
    print(f"\nfirst ping answered {first:.1f} s after up; a restarted agent {warm:.2f} s "
          f"after its exec; after conntrack -F {flushed:.1f} s; "
          f"after the gateway's new public address {moved:.1f} s")


def test_a_node_that_moves_is_back_within_seconds_whichever_end_sends(lab):
    """Issue 13: peer-a changes networks (a new address behind its NAT, so a new public
    mapping too) while a probe crosses the tunnel every 0.1 s: first sent by the mover,
    then by the other end alone. The mover's netlink event starts the recovery (probe
    the anchors, publish, punch), so the silent end's case needs no keepalive either.
    Then peer-a's gateway gets a new public address under a one-way stream from peer-b:
    invisible to peer-a, which receives nothing and has nothing to answer; it notices
    the steady stream stop (a PING unanswered too) rather than wait for a keepalive."""
    scenario = load(SCENARIO_DIR / "nat-anchor.toml")
    hosts = build(lab, scenario)
    mesh = start_mesh(lab, scenario, hosts)
    assert time_to_answer(mesh, "peer-a", "peer-b", 30) is not None
    tunnel = {name: node.tunnel_addr for name, node in mesh.nodes.items()}
    cases = tuple(e for e in roam.EVENTS if e.name in ("moves", "moves-silent",
                                                       "rebinding-one-way"))
    longest = roam.longest_gaps(hosts, tunnel, cases)
    print("\nlongest gap: " + "; ".join(f"{case} {gap:.2f} s" for case, gap in longest.items()))
    # The target is 2 s; a loaded machine gets room (the figure is in DESIGN.md).
    log_a = mesh.nodes["peer-a"].proc.log()
    assert max(longest.values()) < ROAM_BOUND_S, (longest, log_a[-3000:])
    # the rebinding was found by the stream that stopped (or the anchor that saw peer-a's
    # new source first), not by peer-a's keepalive 5 s apart
    assert re.search(r"peer-b: (its data stopped, nothing heard for [\d.]+ s|anchor sees us "
                     r"at [\d.:]+ now), looking for a new path", log_a), log_a[-3000:]


def test_a_previous_release_behind_a_rebinding_nat_drops_seen_at_and_recovers(lab, tmp_path):
    """SEEN_AT is new in this release: the anchor tells peer-a, of the previous release,
    where it sees it now; peer-a counts the message malformed, runs on, and comes back by
    its own silence detection as before."""
    old_tree = previous_release(tmp_path, BEFORE_SEEN_AT)
    scenario = load(SCENARIO_DIR / "nat-anchor.toml")
    hosts = build(lab, scenario)
    mesh = mesh_of(lab, scenario, hosts)
    mesh.nodes["peer-a"].python_path = str(old_tree)
    mesh.start_all()
    assert "one_way" not in (old_tree / "whalescale" / "lab" / "roam.py").read_text()
    assert time_to_answer(mesh, "peer-a", "peer-b", 30) is not None
    new_public = roam.rebind(hosts["gateway-a"])
    moved = time_to_answer(mesh, "peer-a", "peer-b", RECOVERY_TIMEOUT_S)
    assert moved is not None and moved < ROAM_BOUND_S, mesh.nodes["peer-a"].proc.log()[-3000:]
    anchor = mesh.nodes["anchor"].proc
    assert anchor.wait_for_log(rf"peer-a: its traffic comes from {re.escape(new_public)}:\d+ "
                               r"now, telling it", 10), anchor.log()[-3000:]
    assert mesh.nodes["peer-a"].proc.alive()
    assert time_to_answer(mesh, "peer-b", "peer-a", 10) is not None
