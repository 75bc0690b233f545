"""The anchor relay between real agents: two peers behind symmetric NATs (scenarios/nat-relay.toml).

The anchor forwards the two peers' own session: the payload the test sends through the
tunnel reaches the other peer, and never appears in the relaying anchor's memory or log.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sys
import time

import pytest

from whalescale.lab import gaps
from whalescale.lab.scenario import SCENARIO_DIR, build, load, run_check, start_mesh

pytestmark = pytest.mark.lab

PORT = 9999
# Issue 13's targets: a warm pair answers within 0.5 s of the exec, relayed within 1 s;
# a loaded CI machine gets room (the figure is printed with `pytest -s`).
WARM_BOUND_S = 5.0


def process_memory_contains(pid: int, needle: bytes) -> bool:
    """Whether `needle` is anywhere in the readable, writable memory of `pid` (root)."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("rw"):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    return True
            except (OSError, ValueError, OverflowError):
                continue  # e.g. [vvar]: mapped but not readable this way
    return False


def test_symmetric_pair_is_relayed_and_the_anchor_cannot_read_it(lab):
    scenario = load(SCENARIO_DIR / "nat-relay.toml")
    mesh = start_mesh(lab, scenario, build(lab, scenario))
    for check in scenario.checks:
        assert run_check(mesh, check).passed, check.describe()

    a, b = mesh.nodes["peer-a"], mesh.nodes["peer-b"]
    ping = a.host.run(sys.executable, "-m", "whalescale", "ping", "peer-b", "-c", "1",
                      "--state-dir", str(mesh.state_dir("peer-a")))
    assert "(relayed)" in ping.stdout, ping.stdout
    relays = {name: mesh.status(name)["nat"]["relay_channels"]
              for name in ("anchor-1", "anchor-2")}
    (relay_name,) = [name for name, channels in relays.items() if channels == 1]
    # The relay needs no NAT type; the type may still wait for a re-probe (a probe sent
    # while the anchors were starting times out after 2 s).
    deadline = time.monotonic() + 10
    while mesh.status("peer-a")["nat"]["nat_type"] != "symmetric":
        assert time.monotonic() < deadline, mesh.status("peer-a")["nat"]
        time.sleep(0.5)
    for command, line in (("netcheck", "NAT type: symmetric (2 anchors answered)"),
                          ("status", "NAT: symmetric")):
        shown = a.host.run(sys.executable, "-m", "whalescale", command,
                           "--state-dir", str(mesh.state_dir("peer-a"))).stdout
        assert line in shown, shown
    shown = mesh.nodes[relay_name].host.run(
        sys.executable, "-m", "whalescale", "netcheck",
        "--state-dir", str(mesh.state_dir(relay_name))).stdout
    assert "relay channels open: 1" in shown, shown

    secret = b"whalescale-secret-" + os.urandom(12).hex().encode()
    receiver = b.host.spawn(
        sys.executable, "-c",
        "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        f"s.bind(('{b.tunnel_addr}', {PORT})); print('ready', flush=True); "
        "data, _ = s.recvfrom(2048); print('got', data.decode(), flush=True); "
        "import time; time.sleep(60)")
    assert receiver.wait_for_log("ready", 10)
    a.host.run(sys.executable, "-c",
               "import socket, time\n"
               "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
               "for _ in range(200):\n"
               f"    s.sendto({secret!r}, ('{b.tunnel_addr}', {PORT})); time.sleep(0.005)\n")
    assert receiver.wait_for_log(re.escape(f"got {secret.decode()}"), 10)

    anchor = mesh.nodes[relay_name]
    counters = mesh.status(relay_name)["nat"]["counters"]
    assert counters.get("relay_anchor_forwarded", 0) >= 200
    assert anchor.proc is not None
    assert not process_memory_contains(anchor.proc.pid, secret)
    assert secret.decode() not in anchor.proc.log()
    # The search itself works: the receiving process still holds the payload it got.
    assert process_memory_contains(receiver.pid, secret)

    # A warm restart: peer-a's agent goes and comes back; the relay is found again.
    warm = mesh.restart_and_time("peer-a", "peer-b")
    assert warm is not None and warm < WARM_BOUND_S, (warm, a.proc.log()[-3000:])
    print(f"\nrelayed pair: answered {warm:.2f} s after peer-a's agent was exec'd again")


def test_reloads_never_cut_a_relayed_session(lab):
    """Issue 12's reproduction between real agents: two symmetric NATs relayed by an anchor,
    a probe through the tunnel every 0.1 s, and one end's (unchanged) mesh file reloaded
    ten times at varied moments (SIGHUP and `whalescale reload`). The session stays on its
    relay: no gap in the answers beyond what the lab's own jitter makes."""
    scenario = load(SCENARIO_DIR / "nat-relay.toml")
    mesh = start_mesh(lab, scenario, build(lab, scenario))
    for check in scenario.checks:
        assert run_check(mesh, check).passed, check.describe()
    a, b = mesh.nodes["peer-a"], mesh.nodes["peer-b"]
    gaps.start_echo(b.host, b.tunnel_addr, PORT)
    probe = gaps.start_probe(a.host, b.tunnel_addr, PORT, 12)
    rng = random.Random(5)
    time.sleep(1.0)
    for i in range(10):
        time.sleep(rng.uniform(0.1, 0.9))
        if i % 2:
            assert a.proc is not None
            os.kill(a.proc.pid, signal.SIGHUP)
        else:
            reload = a.host.run(sys.executable, "-m", "whalescale", "reload",
                                "--state-dir", str(mesh.state_dir("peer-a")))
            assert "reload applied" in reload.stdout, reload.stdout + reload.stderr
    result = gaps.result(probe)
    assert result["answered"] >= result["sent"] - 3, result
    assert result["longest_gap_s"] < 1.0, result
    peers = {p["name"]: p for p in mesh.status("peer-a")["peers"]}
    assert peers["peer-b"]["path"] == "relayed", peers["peer-b"]
    assert a.proc is not None and a.proc.log().count("reload applied") == 10
