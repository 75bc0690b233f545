"""An anchor listed by DNS name between real agents, as a home anchor on a dynamic address
is: behind its router's port forward, the router's public address named in DNS. Each
namespace has its own /etc/hosts (`Host.set_hosts`; no query leaves the lab). The name
resolves at start; when the provider renumbers the router and DNS follows, the peer
follows the name without a restart."""

from __future__ import annotations

import shutil
import time

import pytest

from whalescale.lab.mesh import LabMesh
from whalescale.lab.natlab import VPN_PORT, Nat, nat_ruleset

pytestmark = pytest.mark.lab

NAME = "home-anchor.mesh.test"


def test_an_anchor_listed_by_name_is_reached_and_followed_when_the_name_moves(lab):
    hosts = lab.star(["router", "peer"])
    router, peer_host = hosts["router"], hosts["peer"]
    anchor_host = lab.host("anchor")
    lan = lab.link(router, anchor_host)
    anchor_host.route_via(lan)
    router.set_forwarding(True)
    wan = router.links[0]
    router.nft(nat_ruleset(Nat.FULLCONE, wan=wan.a_ifname if wan.a is router else wan.b_ifname,
                           lan_subnet=f"{lan.addr_of(router)}/{lan.prefixlen}",
                           dnat_to=lan.addr_of(anchor_host)))
    public = router.addr()
    for host in (peer_host, anchor_host):
        host.set_hosts({NAME: public})
    mesh = LabMesh(lab, port=VPN_PORT, keepalive_s=0)
    anchor = mesh.add_node(anchor_host, anchor=True, endpoint=f"{NAME}:{VPN_PORT}")
    peer = mesh.add_node(peer_host, static_endpoint=False)
    mesh.start_all()
    assert peer_host.ping(anchor.tunnel_addr, count=3), peer.proc.log()[-3000:]
    assert f"dns: {NAME} is {public}" in peer.proc.log()

    # The home anchor restarts with a wiped state dir while the provider renumbers its
    # router: it cannot see the change and knows nothing of the peer (the mesh file gives
    # no endpoint for it), so only the name can bring the two together again.
    assert anchor.proc is not None
    anchor.proc.stop()
    shutil.rmtree(mesh.state_dir("anchor"))
    new_public = router.readdress()
    router.run("conntrack", "-F")
    # nobody answers for the old address any more (the internet's ARP entry would still
    # hand its packets to the router, whose port forward takes any destination)
    lab.internet().run("ip", "neigh", "flush", "all")
    for host in (peer_host, anchor_host):
        host.set_hosts({NAME: new_public})  # and dynamic DNS follows
    mesh.start("anchor")
    started = time.monotonic()
    while not peer_host.ping(anchor.tunnel_addr, count=1, timeout=0.5):
        assert time.monotonic() - started < 30, peer.proc.log()[-3000:]
    followed = time.monotonic() - started
    log = peer.proc.log()
    assert f"dns: {NAME} is {new_public} (was {public})" in log, log[-3000:]
    assert f"session with anchor established via {new_public}:{VPN_PORT}" in log, log[-3000:]
    print(f"\nthe peer followed the anchor's name to its new address in {followed:.1f} s")
