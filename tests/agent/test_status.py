"""`whalescale status` and `whalescale ping` against running agents; the one-anchor warning."""

from __future__ import annotations

import json
import sys

import pytest

from whalescale.lab.mesh import LabMesh

pytestmark = pytest.mark.lab


def ws(node, lab, *args: str):
    return node.host.run(sys.executable, "-m", "whalescale", *args, "--state-dir",
                         str(lab.tempdir / f"state-{node.name}"), check=False, timeout=60)


def test_status_ping_and_the_only_one_anchor_warning(lab):
    hosts = lab.star(["anchor1", "anchor2", "laptop"])
    mesh = LabMesh(lab, keepalive_s=2)
    a1 = mesh.add_node(hosts["anchor1"], anchor=True)
    a2 = mesh.add_node(hosts["anchor2"], anchor=True)
    laptop = mesh.add_node(hosts["laptop"])
    mesh.start_all()
    assert laptop.host.ping(a1.tunnel_addr, count=3) and laptop.host.ping(a2.tunnel_addr, count=3)

    status = json.loads(ws(laptop, lab, "status", "--json").stdout)
    assert status["node"] == "laptop" and not status["anchor"]
    assert sorted(status["anchors"]["reachable"]) == ["anchor1", "anchor2"]
    assert status["anchors"]["health"] == "ok" and status["warnings"] == []
    peers = {p["name"]: p for p in status["peers"]}
    assert peers["anchor1"]["endpoint"] == f"{a1.host.addr()}:51820"
    assert peers["anchor1"]["session"] and peers["anchor1"]["rx_bytes"] > 0

    pinged = ws(laptop, lab, "ping", "anchor1", "--count", "2")
    assert pinged.returncode == 0, pinged.stderr
    assert f"anchor1: answered via {a1.host.addr()}:51820 (direct) in" in pinged.stdout
    assert ws(laptop, lab, "ping", "nobody", "--count", "1").returncode == 1

    # by tunnel address, as a script would: the agent says which peer that is
    by_address = json.loads(ws(laptop, lab, "ping", a2.tunnel_addr, "--count", "1",
                               "--json").stdout)
    assert by_address["peer"] == "anchor2" and by_address["answered"] == 1
    assert by_address["replies"][0]["endpoint"] == f"{a2.host.addr()}:51820"

    # stdout is a pipe here: plain lines, one whole line per peer, no table borders
    piped = ws(laptop, lab, "status").stdout
    assert "anchors: 2 of 2 reachable" in piped and "─" not in piped
    (row,) = [line for line in piped.splitlines() if line.startswith("anchor2 ")]
    assert f"{a2.host.addr()}:51820" in row.split() and "direct" in row.split()

    # an anchor counts the other anchors, not itself
    assert "other anchors: 1 of 1 reachable" in ws(a1, lab, "status").stdout
    anchors = json.loads(ws(a1, lab, "status", "--json").stdout)["anchors"]
    assert anchors["reachable"] == ["anchor2"] and anchors["total"] == 1

    a2.proc.stop()
    assert laptop.proc.wait_for_log(r"anchors: only one anchor reachable", 20), laptop.proc.log()
    status = json.loads(ws(laptop, lab, "status", "--json").stdout)
    assert status["anchors"]["reachable"] == ["anchor1"]
    assert status["warnings"] and "only one anchor reachable" in status["warnings"][0]


def test_ping_says_lan_for_a_peer_on_a_shared_link(lab):
    left, right = lab.host("left"), lab.host("right")
    lab.link(left, right)
    mesh = LabMesh(lab)
    mesh.add_node(left)
    mesh.add_node(right)
    mesh.start_all()
    out = ws(mesh.nodes["left"], lab, "ping", "right", "--count", "1").stdout
    assert f"answered via {right.addr()}:51820 (lan)" in out


def test_prometheus_metrics_on_the_address_the_mesh_file_names(lab):
    hosts = lab.star(["anchor", "laptop"])
    mesh = LabMesh(lab, keepalive_s=2)
    anchor = mesh.add_node(hosts["anchor"], anchor=True, metrics=f"{hosts['anchor'].addr()}:9586")
    laptop = mesh.add_node(hosts["laptop"])
    mesh.write_mesh()
    mesh.start("anchor")
    mesh.start("laptop", "--log-format", "json")  # for a log shipper, beside the metrics
    mesh.wait_up("anchor")
    mesh.wait_up("laptop")
    assert laptop.host.ping(anchor.tunnel_addr, count=3)

    families, metrics = anchor.scrape()
    assert metrics["whalescale_sessions"] == 1
    assert metrics['whalescale_handshakes_total{outcome="completed"}'] >= 1
    assert metrics['whalescale_peer_rx_packets_total{peer="laptop"}'] > 0
    assert {"whalescale_gossip_records_total", "whalescale_drops_total",
            "whalescale_path_rtt_seconds",
            "whalescale_reorder_held"} <= families  # no multipath peer: no path samples
    # the laptop answered the pings across the routed star: up, reached directly
    assert metrics['whalescale_peer_up{peer="laptop"}'] == 1
    assert metrics['whalescale_peer_path{kind="direct",peer="laptop"}'] == 1
    assert 0 <= metrics['whalescale_peer_last_handshake_age_seconds{peer="laptop"}'] < 60
    assert metrics["whalescale_anchors"] == 0  # no other anchor: an anchor skips itself
    assert metrics["whalescale_relay_channels"] == 0  # an anchor, relaying nobody
    # an anchor does not probe its own NAT: the type stays unknown
    assert metrics['whalescale_nat_type{type="unknown"}'] == 1
    assert metrics['whalescale_cookie_replies_total{direction="sent"}'] == 0
    (build,) = [s for s in metrics if s.startswith("whalescale_build_info{version=")]
    assert metrics[build] == 1
    # off by default: the laptop serves nothing, and logs one JSON object a line
    entries = [json.loads(line) for line in laptop.proc.log().splitlines() if line.strip()]
    assert any("up on ws0" in e["message"] for e in entries)
    assert not any("metrics" in e["message"].lower() for e in entries)
