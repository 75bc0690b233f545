"""A LAN host behind a real miniupnpd router maps a UDP port by PCP, NAT-PMP and UPnP.

Roles: `client` (LAN, runs the mapper), `gw` (miniupnpd, masquerading NAT), `peer` (a host
on the internet side), and the internet namespace, which also runs the STUN responder.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

from whalescale.lab.mesh import LabMesh
from whalescale.lab.router import miniupnpd_router

pytestmark = pytest.mark.lab

CLIENT_SCRIPT = Path(__file__).with_name("mapping_client.py")
PORT = 40000
MAPPED = re.compile(r"mapped (\S+) (\S+) (\d+) ([\d.]+)")
SEND_ONE = (
    "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "s.sendto(b'hello-through-the-nat', (sys.argv[1], int(sys.argv[2])))"
)


@pytest.mark.parametrize("protocol", ["pcp", "nat-pmp", "upnp"])
def test_client_behind_miniupnpd_is_reachable_through_its_mapping(lab, protocol):
    client = lab.host("client")
    peer = lab.star(["peer"])["peer"]
    with miniupnpd_router(lab, [client]) as router:
        # The client asks its gateway for a mapping of UDP 40000, by `protocol` only.
        mapper = client.spawn(
            sys.executable, str(CLIENT_SCRIPT), router.lan_addr(client), str(PORT), protocol
        )
        assert mapper.wait_for_log(r"mapped ", 15), mapper.log()
        match = MAPPED.search(mapper.log())
        assert match is not None
        got_protocol, external_address, external_port, seconds = match.groups()
        print(f"{protocol}: mapping in {float(seconds) * 1000:.0f} ms")
        assert got_protocol == protocol
        assert (external_address, int(external_port)) == (router.wan_addr, PORT)

        # The router's miniupnpd chains now DNAT the external port to the client.
        rules = router.miniupnpd_rules()
        assert f"dnat ip to {client.addr()}:{PORT}" in rules, rules

        # A datagram from the internet to the external endpoint reaches the client.
        peer.run(sys.executable, "-c", SEND_ONE, external_address, external_port)
        assert mapper.wait_for_log(r"received hello-through-the-nat", 5), mapper.log()

        # A clean shutdown removes the mapping from the router.
        mapper.stop()
        assert "unmapped" in mapper.log(), mapper.log()
        assert "dnat" not in router.miniupnpd_rules()
        assert "removed" in router.miniupnpd.log() or "removing" in router.miniupnpd.log()


def test_the_mapper_prefers_pcp_when_the_router_speaks_everything(lab):
    client = lab.host("client")
    with miniupnpd_router(lab, [client]) as router:
        mapper = client.spawn(
            sys.executable, str(CLIENT_SCRIPT), router.lan_addr(client), str(PORT),
            "pcp,nat-pmp,upnp",
        )  # fmt: skip
        assert mapper.wait_for_log(r"mapped ", 15), mapper.log()
        assert MAPPED.search(mapper.log()).group(1) == "pcp"
        mapper.stop()
        assert "dnat" not in router.miniupnpd_rules()


def test_agent_maps_its_port_in_the_background_and_removes_the_mapping_on_stop(lab):
    """The agent behind a miniupnpd router: its netcheck shows the mapping, it publishes
    the mapped endpoint, and a clean stop leaves no rule on the router."""
    node = lab.host("node")
    anchor = lab.star(["anchor"])["anchor"]
    # a public-looking WAN: the agent's mapper refuses private external addresses
    with miniupnpd_router(lab, [node], wan_subnet="198.18.200.0/24") as router:
        mesh = LabMesh(lab)
        mesh.add_node(anchor, anchor=True)
        mesh.add_node(node, static_endpoint=False)
        mesh.start_all()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            check = json.loads(node.run(
                sys.executable, "-m", "whalescale", "netcheck", "--json",
                "--state-dir", str(mesh.state_dir("node"))).stdout)
            if check["nat"]["port_mapping"]:
                break
            time.sleep(0.5)
        assert check["nat"]["port_mapping"] == f"{router.wan_addr}:51820", check
        assert check["nat"]["port_mapping_protocol"] == "pcp"
        assert f"{router.wan_addr}:51820" in check["published"]
        assert f"dnat ip to {node.addr()}:51820" in router.miniupnpd_rules()
        assert anchor.ping(mesh.nodes["node"].tunnel_addr, count=3)

        assert mesh.nodes["node"].proc.stop() == 0
        assert "dnat" not in router.miniupnpd_rules()
