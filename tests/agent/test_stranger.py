"""A host outside the mesh that sends valid-looking initiations gets nothing back."""

from __future__ import annotations

import sys

import pytest

from whalescale.identity import Identity
from whalescale.lab.mesh import LabMesh

pytestmark = pytest.mark.lab

# Run inside the stranger's namespace: build real initiations to bob with the
# given key (mac1 valid: bob's public key is known) and count any reply.
PROBE = """
import ipaddress, os, socket, sys, time
from whalescale.identity import Identity, decode_key
from whalescale.session.engine import Engine, PeerSpec
from whalescale.identity import x25519_public_from_ed25519
seed, bob_key, bob_ip, port, tunnel = sys.argv[1:6]
me = Identity.from_seed(bytes.fromhex(seed))
bob = PeerSpec("bob", x25519_public_from_ed25519(decode_key(bob_key)),
               (ipaddress.ip_network(tunnel + "/32"),), ((bob_ip, int(port)),))
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(0.3)
replies = 0
for i in range(5):
    engine = Engine(me.x25519_private, me.x25519_public, [bob], random_bytes=os.urandom,
                    wall_offset=time.time())
    engine.peers[bob.static_public].initiate(float(i), retry=False, reason="probe")
    for datagram, addr, _ in engine.outbox:
        sock.sendto(datagram, addr)
    try:
        while True:
            sock.recvfrom(2048)
            replies += 1
    except socket.timeout:
        pass
print(replies)
"""


def probe(host, seed: bytes, bob) -> int:
    out = host.run(sys.executable, "-c", PROBE, seed.hex(), bob.identity.public_b64,
                   bob.host.addr(), "51820", bob.tunnel_addr, timeout=30).stdout
    return int(out.strip())


def test_initiations_from_outside_the_mesh_get_no_answer(lab):
    hosts = lab.star(["bob", "carol", "stranger"])
    mesh = LabMesh(lab, keepalive_s=0)
    bob = mesh.add_node(hosts["bob"])
    carol = mesh.add_node(hosts["carol"])  # in the mesh, agent not running
    mesh.write_mesh()
    mesh.start("bob")
    mesh.wait_up("bob")

    stranger_seed = b"\x42" * 32
    assert Identity.from_seed(stranger_seed).public not in {bob.identity.public,
                                                            carol.identity.public}
    assert probe(hosts["stranger"], stranger_seed, bob) == 0
    # control: the same probe with a key the mesh knows is answered
    carol_seed = bytes(carol.identity.signing_key)
    assert probe(hosts["carol"], carol_seed, bob) >= 1
