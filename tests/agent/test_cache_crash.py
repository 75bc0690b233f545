"""kill -9 a real agent while it writes its LKG cache, again and again; it restarts with
the cache whole and reaches its peer from the cache alone.

The agent writes most at start (every node of the mesh, the static endpoints, the
contacts of the first handshakes, gossip records): each round kills it at a random
moment of its first second. tests/mesh/test_cache.py does the same to a writer that
never stops writing, with every committed transaction checked.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.agent.test_self_healing import wait_all_pairs
from whalescale.lab.mesh import LabMesh
from whalescale.mesh.cache import FILE_NAME, LkgCache

pytestmark = pytest.mark.lab

ROUNDS = 8


def cached_endpoints(mesh: LabMesh, name: str, of: str) -> set[tuple[str, int]]:
    with LkgCache.open(mesh.state_dir(name) / FILE_NAME) as cache:
        assert cache.integrity_check() == "ok"
        return {(e.host, e.port) for e in cache.endpoints(mesh.nodes[of].identity.public)}


def test_agent_killed_mid_write_restarts_with_its_cache(lab):
    hosts = lab.star(["anchor", "p1", "p2"])
    mesh = LabMesh(lab, keepalive_s=2)
    mesh.add_node(hosts["anchor"], anchor=True)
    for name in ("p1", "p2"):
        mesh.add_node(hosts[name], static_endpoint=False)
    mesh.start_all()
    wait_all_pairs(mesh, ["anchor", "p1", "p2"], timeout=60)  # p1 learns p2 by gossip
    p2_endpoint = (hosts["p2"].addr(), 51820)
    mesh.nodes["p1"].proc.stop()
    assert p2_endpoint in cached_endpoints(mesh, "p1", "p2")

    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    delays = []
    for _ in range(ROUNDS):
        proc = mesh.start("p1")
        delays.append(rng.uniform(0.05, 1.0))
        time.sleep(delays[-1])
        os.kill(proc.pid, signal.SIGKILL)
        proc.stop()
        # whole, and nothing committed before is lost
        assert p2_endpoint in cached_endpoints(mesh, "p1", "p2"), delays

    # no anchor any more: p1 reaches p2 from its cache alone
    mesh.nodes["anchor"].proc.stop()
    mesh.start("p1")
    mesh.wait_up("p1")
    wait_all_pairs(mesh, ["p1", "p2"], timeout=30)
    log = mesh.nodes["p1"].proc.log()
    assert "last-known-good cache: endpoints for 2 of 2 peers" in log, log
    assert "corrupt" not in log, log
    print(f"\nagent killed {ROUNDS} times at {', '.join(f'{d:.2f}' for d in delays)} s "
          "after start; cache whole each time")
