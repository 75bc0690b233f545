"""Multipath between two real agents over two emulated links: both links carry one TCP
flow, and the flow survives when a link dies."""

from __future__ import annotations

import statistics
import sys
import threading
import time

import pytest

from whalescale.bench.links import EmulatedLinks, LinkSpec, ping_rtts_ms
from whalescale.lab import gaps
from whalescale.lab.iperf import IperfResult, iperf_tcp
from whalescale.lab.mesh import LabMesh

pytestmark = pytest.mark.lab


def two_path_mesh(lab, rates: list[float], mtus: tuple[int, ...] = (1500, 1500),
                  delays_ms: tuple[float, ...] = (0.0, 0.0), backup: tuple[str, ...] = (),
                  metrics: str | None = None) -> tuple[EmulatedLinks, LabMesh]:
    """left and right over one emulated link per rate; `backup` names the interfaces
    right uses only as backups; left serves Prometheus metrics at `metrics`, if given."""
    specs = [LinkSpec(rate_mbit=r, mtu=m, delay_ms=d)
             for r, m, d in zip(rates, mtus, delays_ms, strict=True)]
    bench = EmulatedLinks(lab, specs)
    mesh = LabMesh(lab, keepalive_s=5)
    interfaces = [f"path{k}" for k in range(len(rates))]
    mesh.add_node(bench.left, interfaces=interfaces, metrics=metrics)
    right = mesh.add_node(bench.right, interfaces=[i for i in interfaces if i not in backup],
                          endpoint=f"{bench.links[0].right_addr}:51820")
    right.backup_interfaces = backup
    mesh.start_all()
    assert mesh.nodes["left"].host.ping(mesh.nodes["right"].tunnel_addr, count=3)
    deadline = time.monotonic() + 10  # paths are announced, probed, then heard from
    while not all(multipath_status(mesh, n)["active"] for n in ("left", "right")):
        assert time.monotonic() < deadline, multipath_status(mesh, "left")
        time.sleep(0.2)
    return bench, mesh


def route_mtu(mesh: LabMesh, name: str, to: str) -> int:
    """The MTU the kernel uses toward `to` through the tunnel (what TCP takes its MSS from)."""
    out = mesh.nodes[name].host.run("ip", "-o", "route", "get", mesh.nodes[to].tunnel_addr).stdout
    words = out.split()
    return int(words[words.index("mtu") + 1])


def wait_for_route_mtu(mesh: LabMesh, expected: int) -> None:
    """The agents put a session's MTU on the peer's route within their 1 s housekeeping."""
    deadline = time.monotonic() + 10
    while (mtus := [route_mtu(mesh, a, b) for a, b in (("left", "right"), ("right", "left"))]
           ) != [expected] * 2:
        assert time.monotonic() < deadline, mtus
        time.sleep(0.2)


def wait_for_path_mtus(mesh: LabMesh, expected: list[int]) -> dict:
    """Left's multipath status once its paths' MTUs are `expected` (sorted): a path is up
    with its first probe answered, the larger ones follow within milliseconds."""
    deadline = time.monotonic() + 10
    while True:
        status = multipath_status(mesh, "left")
        if sorted(p["mtu"] for p in status["paths"]) == expected:
            return status
        assert time.monotonic() < deadline, status["paths"]
        time.sleep(0.2)


def flow_while_a_link_dies(bench: EmulatedLinks, mesh: LabMesh, link: int, after_s: float,
                           seconds: float) -> IperfResult:
    """One TCP flow left -> right in 0.5 s intervals; `link` dies `after_s` into it."""
    left, right = mesh.nodes["left"], mesh.nodes["right"]
    timer = threading.Timer(after_s, bench.set_down, args=(link,))
    timer.start()
    try:
        return iperf_tcp(left.host, right.host, right.tunnel_addr, seconds, "-i", "0.5")
    finally:
        timer.cancel()


def multipath_status(mesh: LabMesh, name: str) -> dict:
    return mesh.status(name)["peers"][0]["multipath"]


def test_one_tcp_flow_uses_both_paths(lab):
    _, mesh = two_path_mesh(lab, [20, 20])
    left, right = mesh.nodes["left"], mesh.nodes["right"]
    # 1500-byte IPv4 links: 1440 bytes of plaintext a path, less the 12-byte trailer
    status = wait_for_path_mtus(mesh, [1440, 1440])
    assert status["active"] and [p["state"] for p in status["paths"]] == ["healthy"] * 2
    assert status["mtu"] == 1428
    wait_for_route_mtu(mesh, 1428)
    result = iperf_tcp(left.host, right.host, right.tunnel_addr, 5)
    sent = [p["tx_packets"] for p in multipath_status(mesh, "left")["paths"]]
    # more than one link's worth (19 Mbit/s of TCP on one 20 Mbit link), both links busy
    assert result.gbit_s * 1000 > 28, result
    assert min(sent) > 0.3 * sum(sent), sent
    reorder = multipath_status(mesh, "right")["reorder"]
    assert reorder["released"] > 1000 and reorder["max_depth"] <= 128


def test_metrics_show_each_paths_rtt_loss_and_mtu_and_the_reorder_buffer(lab):
    # netem delays each link one way (5 and 20 ms): a path's round trip is at least that
    _, mesh = two_path_mesh(lab, [20, 20], delays_ms=(5.0, 20.0), metrics="127.0.0.1:9586")
    left, right = mesh.nodes["left"], mesh.nodes["right"]
    wait_for_path_mtus(mesh, [1440, 1440])
    assert left.host.ping(right.tunnel_addr, count=5)
    _, metrics = left.scrape()
    paths = sorted(series.removeprefix("whalescale_path_up") for series in metrics
                   if series.startswith("whalescale_path_up{"))
    assert paths == ['{path="0",peer="right"}', '{path="1",peer="right"}']
    for labels in paths:
        assert metrics[f"whalescale_path_up{labels}"] == 1
        assert metrics[f"whalescale_path_mtu_bytes{labels}"] == 1440
        assert 0 <= metrics[f"whalescale_path_loss_ratio{labels}"] <= 1
        assert metrics[f"whalescale_path_rtt_seconds{labels}"] >= 0.005
        assert metrics[f"whalescale_path_tx_packets_total{labels}"] > 0
    assert max(metrics[f"whalescale_path_min_rtt_seconds{labels}"] for labels in paths) >= 0.02
    assert metrics['whalescale_reorder_held{peer="right"}'] >= 0
    assert 'whalescale_reorder_late_drops_total{peer="right"}' in metrics
    assert metrics['whalescale_peer_up{peer="right"}'] == 1


def test_one_flow_over_wifi_and_lte_delays_gets_clearly_more_than_the_fast_link_alone(lab):
    # Wi-Fi 10 ms and cellular 40 ms RTT, 20 Mbit/s each. Before the steady delay the
    # tunnel used the fast link alone here (0.94x of it).
    bench, mesh = two_path_mesh(lab, [20, 20], delays_ms=(5.0, 20.0))
    left, right = mesh.nodes["left"], mesh.nodes["right"]
    fast_alone = iperf_tcp(bench.left, bench.right, bench.links[0].right_addr, 5)
    tunnel = iperf_tcp(left.host, right.host, right.tunnel_addr, 5)
    # The same run, the same links: a generous floor (the bench measures ~1.8x).
    assert tunnel.gbit_s > 1.3 * fast_alone.gbit_s, (tunnel, fast_alone)
    sent = [p["tx_packets"] for p in multipath_status(mesh, "left")["paths"]]
    assert min(sent) > 0.3 * sum(sent), sent
    # A ping takes the fast link at once, not the slow link's delay: its median is
    # below the midpoint of the two links' RTTs, measured now on the links themselves.
    fast = statistics.median(r for r in ping_rtts_ms(bench.left, bench.links[0].right_addr)
                             if r is not None)
    slow = statistics.median(r for r in ping_rtts_ms(bench.left, bench.links[1].right_addr)
                             if r is not None)
    tunnel_ping = statistics.median(r for r in ping_rtts_ms(left.host, right.tunnel_addr)
                                    if r is not None)
    assert tunnel_ping < (fast + slow) / 2, (tunnel_ping, fast, slow)


def test_a_backup_link_carries_nothing_until_the_primary_dies(lab):
    bench, mesh = two_path_mesh(lab, [20, 20], backup=("path1",))
    left, right = mesh.nodes["left"], mesh.nodes["right"]
    paths = multipath_status(mesh, "left")["paths"]
    # path ids follow which path was validated first: tell them apart by the flag
    assert sorted(p["backup"] for p in paths) == [False, True], paths
    before = {p["backup"]: p["tx_packets"] for p in paths}
    iperf_tcp(left.host, right.host, right.tunnel_addr, 2)
    quiet = {p["backup"]: p["tx_packets"] - before[p["backup"]]
             for p in multipath_status(mesh, "left")["paths"]}
    assert quiet[False] > 1000 and quiet[True] < 10, quiet  # the backup: a heartbeat per 2 s
    result = flow_while_a_link_dies(bench, mesh, link=0, after_s=1.0, seconds=5)
    assert result.intervals_gbit_s[-1] * 1000 > 10, result.intervals_gbit_s
    states = {p["backup"]: p["state"] for p in multipath_status(mesh, "left")["paths"]}
    assert states == {False: "failed", True: "healthy"}, states


def test_the_flow_survives_a_dying_path(lab):
    bench, mesh = two_path_mesh(lab, [20, 20])
    result = flow_while_a_link_dies(bench, mesh, link=1, after_s=2.0, seconds=6)
    # The flow survives: the surviving link carries it at the end. The stall (lost
    # in-flight packets, then TCP's retransmission timeout) is bounded; the bench
    # times it against the 1 s target (DESIGN.md, "Multipath"), this only
    # catches a flow that hangs, with room for a loaded machine.
    intervals = result.intervals_gbit_s
    stalled = longest = 0
    for rate in intervals:
        stalled = stalled + 1 if rate * 1000 < 1 else 0
        longest = max(longest, stalled)
    assert longest * 0.5 <= 1.5, intervals
    assert intervals[-1] * 1000 > 10, intervals
    states = {p["id"]: p["state"] for p in multipath_status(mesh, "left")["paths"]}
    assert "failed" in states.values(), states


def test_a_narrow_link_lowers_the_tunnel_mtu_and_nothing_is_black_holed(lab):
    # path1's link carries 1400-byte frames: the mesh's 1420 bytes of plaintext do not fit
    bench, mesh = two_path_mesh(lab, [20, 20], mtus=(1500, 1400))
    left, right = mesh.nodes["left"], mesh.nodes["right"]
    # 1400 - 20 - 8 - 32 = 1340 bytes of plaintext: the 1292-byte probe came back
    wait_for_path_mtus(mesh, [1292, 1440])
    wait_for_route_mtu(mesh, 1280)
    result = iperf_tcp(left.host, right.host, right.tunnel_addr, 4)
    sent = [p["tx_bytes"] for p in multipath_status(mesh, "left")["paths"]]
    assert result.gbit_s * 1000 > 25, result  # both links carry full-size segments
    assert min(sent) > 0.3 * sum(sent), sent
    human = left.host.run(sys.executable, "-m", "whalescale", "status", "--state-dir",
                          str(mesh.state_dir("left"))).stdout
    assert "tunnel MTU 1280" in human and "healthy" in human, human

    # the MTU is the minimum over *usable* paths: it follows the narrow path out and back
    bench.set_down(1)
    wait_for_route_mtu(mesh, 1428)
    bench.set_up(1)
    wait_for_route_mtu(mesh, 1280)


@pytest.mark.parametrize("how", ["link", "address"])
def test_an_interface_going_away_costs_only_its_packets_in_flight(lab, how):
    """Issue 13: one of left's two interfaces goes away (its link down, or its address
    removed) while a probe crosses the tunnel every 0.1 s; the other path carries on at
    once, and when the interface comes back its path is used again."""
    bench, mesh = two_path_mesh(lab, [20, 20])
    left, right = mesh.nodes["left"], mesh.nodes["right"]
    address = f"{bench.links[1].left_addr}/{bench.links[1].link.prefixlen}"
    gone, back = {
        "link": (("ip", "link", "set", "path1", "down"), ("ip", "link", "set", "path1", "up")),
        "address": (("ip", "addr", "del", address, "dev", "path1"),
                    ("ip", "addr", "add", address, "dev", "path1")),
    }[how]
    gaps.start_echo(right.host, right.tunnel_addr, 7001)
    probe = gaps.start_probe(left.host, right.tunnel_addr, 7001, 7)
    local = f"{bench.links[1].left_addr}:51820"

    def seconds_until(state: str, since: float) -> float | None:
        while time.monotonic() - since < 10:
            paths = {p["local"]: p for p in multipath_status(mesh, "left")["paths"]}
            if local in paths and paths[local]["state"] == state:
                return time.monotonic() - since
            time.sleep(0.1)
        return None

    time.sleep(1.5)
    left.host.run(*gone)
    assert seconds_until("failed", time.monotonic()) is not None, multipath_status(mesh, "left")
    time.sleep(1.0)
    left.host.run(*back)
    used_again = seconds_until("healthy", time.monotonic())
    result = gaps.result(probe)
    print(f"\ninterface {how} gone: longest gap {result['longest_gap_s']:.2f} s; "
          f"path used again {used_again} s after it came back")
    # Issue 13's targets are a gap of 0.3 s and 2 s to come back; a loaded machine gets room.
    assert result["longest_gap_s"] < 1.0, result
    assert used_again is not None and used_again < 5.0, multipath_status(mesh, "left")
