"""The NAT lab's topology, checked with plain UDP before any VPN runs on it.

Roles: two anchors on the internet running a UDP echo that answers with the source it saw;
one node per NAT situation behind its gateway (natlab.py). Each test narrates its steps.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest

from whalescale.lab import Lab, lab_available
from whalescale.lab.natlab import VPN_PORT, NatLab, Path, classify
from whalescale.lab.netns import Host

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(lab_available() is not None, reason=str(lab_available())),
]

ECHO_PORT = 3479
# Answers each datagram with "ip:port" of its source, as a STUN server would.
ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("listening", flush=True)
while True:
    data, (ip, port) = s.recvfrom(2048)
    s.sendto(f"{ip}:{port}".encode(), (ip, port))
"""
# Sends COUNT datagrams from SRC_PORT to each target "ip:port", one at a time, and prints
# {target: [answers]} as JSON.
EXCHANGE = """
import json, socket, sys
src_port, count, targets = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", src_port))
s.settimeout(0.5)
seen = {}
for target in targets:
    ip, port = target.rsplit(":", 1)
    seen[target] = []
    for i in range(count):
        s.sendto(b"probe", (ip, int(port)))
        try:
            seen[target].append(s.recvfrom(2048)[0].decode())
        except TimeoutError:
            pass
print(json.dumps(seen))
"""


@pytest.fixture
def natlab() -> Iterator[NatLab]:
    with Lab() as lab, NatLab(lab) as topology:
        yield topology


def echo(host: Host, port: int) -> None:
    proc = host.spawn(sys.executable, "-c", ECHO, str(port))
    assert proc.wait_for_log("listening", 5), proc.log()


def exchange(host: Host, targets: list[str], *, count: int = 1,
             src_port: int = VPN_PORT) -> dict[str, list[str]]:
    out = host.run(sys.executable, "-c", EXCHANGE, str(src_port), str(count), *targets)
    return json.loads(out.stdout)


def test_each_nat_maps_as_its_situation_says(natlab: NatLab) -> None:
    anchors = [f"{addr}:{ECHO_PORT}" for addr in natlab.anchor_addrs()]
    for anchor in natlab.anchors.values():
        echo(anchor, ECHO_PORT)

    # Every node sends from the VPN port to both anchors; each anchor answers with the
    # source it saw.
    seen = {}
    for situation in ("public", "fullcone", "restricted", "symmetric", "cgnat", "upnp"):
        answers = exchange(natlab.node(situation), anchors)
        assert all(len(a) == 1 for a in answers.values()), (situation, answers)
        seen[situation] = [a[0] for a in answers.values()]
        print(situation, seen[situation])

    # Cones (and the public node) keep the port, so both anchors see one endpoint.
    for situation in ("public", "fullcone", "restricted", "cgnat", "upnp"):
        public = natlab.sites[situation].public_addr
        assert seen[situation] == [f"{public}:{VPN_PORT}"] * 2, situation
    # The symmetric NAT gives each destination its own port.
    first, second = seen["symmetric"]
    assert first.split(":")[0] == second.split(":")[0] == natlab.sites["symmetric"].public_addr
    assert first != second


def test_full_cone_accepts_the_unsolicited_and_restricted_drops_it(natlab: NatLab) -> None:
    fullcone, restricted = natlab.sites["fullcone"], natlab.sites["restricted"]
    echo(natlab.node("fullcone"), VPN_PORT)
    echo(natlab.node("restricted"), VPN_PORT)
    anchor = natlab.anchors["anchor-1"]

    # The anchor writes first, to each gateway's VPN port: only the DNAT lets it through.
    answers = exchange(anchor, [f"{fullcone.public_addr}:{VPN_PORT}",
                                f"{restricted.public_addr}:{VPN_PORT}"], src_port=0)
    # The full-cone node saw the anchor itself (DNAT rewrites only the destination).
    [seen] = answers[f"{fullcone.public_addr}:{VPN_PORT}"]
    assert seen.split(":")[0] == anchor.addr()
    assert answers[f"{restricted.public_addr}:{VPN_PORT}"] == []


def test_the_classifier_reads_plain_udp_exchanges(natlab: NatLab) -> None:
    count = 10
    fullcone_ep = f"{natlab.sites['fullcone'].public_addr}:{VPN_PORT}"
    echo(natlab.node("fullcone"), VPN_PORT)
    echo(natlab.node("lan-b"), VPN_PORT)
    echo(natlab.anchors["anchor-1"], ECHO_PORT)

    def answered(host: Host, target: str, n: int = count) -> tuple[int, int]:
        return n, len(exchange(host, [target], count=n, src_port=0)[target])

    # public -> fullcone's DNAT port: straight between the two public addresses.
    public = natlab.node("public")
    assert classify(natlab, "public", "fullcone",
                    lambda: answered(public, fullcone_ep)) is Path.DIRECT

    # restricted and symmetric each talk to an anchor only: what a relay looks like.
    anchor_ep = f"{natlab.anchor_addrs()[0]}:{ECHO_PORT}"

    def via_anchor() -> tuple[int, int]:
        legs = [answered(natlab.node(n), anchor_ep) for n in ("restricted", "symmetric")]
        return count, min(got for _, got in legs)

    assert classify(natlab, "restricted", "symmetric", via_anchor) is Path.RELAYED

    # lan-a -> lan-b on their shared bridge.
    lan_b = f"{natlab.sites['lan'].addr['lan-b']}:{VPN_PORT}"
    assert classify(natlab, "lan-a", "lan-b",
                    lambda: answered(natlab.node("lan-a"), lan_b)) is Path.LAN

    # public -> restricted's gateway: dropped there, nothing answered.
    restricted_ep = f"{natlab.sites['restricted'].public_addr}:{VPN_PORT}"
    assert classify(natlab, "public", "restricted",
                    lambda: answered(public, restricted_ep, 2)) is Path.NONE


def test_a_gateway_forgets_its_mappings_and_changes_its_address(natlab: NatLab) -> None:
    site = natlab.sites["restricted"]
    anchor = natlab.anchors["anchor-1"]
    echo(anchor, ECHO_PORT)
    target = f"{anchor.addr()}:{ECHO_PORT}"
    assert exchange(natlab.node("restricted"), [target])[target] == [
        f"{site.public_addr}:{VPN_PORT}"]

    # The NAT forgets: its conntrack table is empty afterwards.
    gateway = site.gateways[-1]
    site.flush_conntrack()
    assert "udp" not in gateway.run("conntrack", "-L", check=False).stdout

    # The ISP renumbers the gateway: the anchor now sees the node at the new address.
    new_ip = site.public_addr.rsplit(".", 1)[0] + ".77"
    site.readdress_wan(new_ip)
    assert site.public_addr == new_ip
    assert exchange(natlab.node("restricted"), [target])[target] == [f"{new_ip}:{VPN_PORT}"]
