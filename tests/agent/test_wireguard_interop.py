"""Whalescale against Debian's wireguard-go, both ways, and past a rekey."""

from __future__ import annotations

import shutil

import pytest

from whalescale.lab.iperf import iperf_tcp
from whalescale.lab.mesh import LabMesh

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(shutil.which("wireguard-go") is None, reason="wireguard-go not installed"),
]


def interop(lab, keepalive_s: int = 0) -> tuple[LabMesh, object, object]:
    hosts = lab.star(["ws", "wg"])
    mesh = LabMesh(lab, keepalive_s=keepalive_s)
    ws = mesh.add_node(hosts["ws"])
    wg = mesh.add_wireguard_go(hosts["wg"])
    mesh.start_all()
    mesh.start_wireguard_go("wg")
    return mesh, ws, wg


def test_vanilla_peer_initiates(lab):
    _, ws, wg = interop(lab)
    assert wg.host.ping(ws.tunnel_addr, count=3, timeout=2.0)
    assert ("wg", "as responder", None) in ws.handshakes()
    result = iperf_tcp(wg.host, ws.host, ws.tunnel_addr, 3)
    assert result.gbit_s > 0.01


def test_whalescale_initiates(lab):
    mesh, ws, wg = interop(lab)
    assert ws.host.ping(wg.tunnel_addr, count=3, timeout=2.0)
    assert [role for peer, role, _ in ws.handshakes() if peer == "wg"] == ["as initiator"]
    result = iperf_tcp(ws.host, wg.host, wg.tunnel_addr, 3)
    assert result.gbit_s > 0.01
    # the vanilla side agrees: a recent handshake with ws, at ws's address
    (peer_line,) = mesh.wg_show("wg").splitlines()[1:]
    fields = peer_line.split("\t")
    assert fields[2] == f"{ws.host.addr()}:51820"
    assert int(fields[4]) > 0


@pytest.mark.slow
def test_rekey_with_traffic_flowing_has_no_stall(lab):
    _, ws, wg = interop(lab)
    assert ws.host.ping(wg.tunnel_addr, count=1, timeout=2.0)
    # 135 s of TCP at a modest rate across the 120 s rekey; 1 s intervals
    result = iperf_tcp(ws.host, wg.host, wg.tunnel_addr, 135, "-b", "20M")
    sessions = [h for h in ws.handshakes() if h[0] == "wg"]
    assert len(sessions) >= 2, ws.proc.log()
    assert min(result.intervals_gbit_s) > 0.005  # every second carried data
