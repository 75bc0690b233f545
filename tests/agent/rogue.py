"""A rogue mesh member, run inside its lab namespace: `python -m tests.agent.rogue ...`.

It holds a real session with the victim (it is in the mesh file) and sends it
forged gossip about another peer, then prints how many datagrams it sent.
Usage: rogue ROGUE_KEYFILE VICTIM_PUBKEY VICTIM_HOST PORT TARGET_KEYFILE BLACKHOLE_HOST
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import time

import attrs

from whalescale.identity import Identity, decode_key, read_key_file, x25519_public_from_ed25519
from whalescale.mesh import records
from whalescale.mesh.gossip_messages import MessageType
from whalescale.mesh.records import GossipEndpoint, PathType
from whalescale.session.engine import Engine, PeerSpec
from whalescale.wire import control


def update(*recs: records.EndpointRecord) -> bytes:
    return bytes((MessageType.UPDATE, len(recs))) + b"".join(map(records.encode_record, recs))


def forgeries(rogue: Identity, target: Identity, blackhole: str) -> dict[str, bytes]:
    there = (GossipEndpoint(blackhole, 6666, PathType.IPV4),)
    genuine_new = records.sign_self(target, there, seq=2**40)
    return {
        # no valid signature at all
        "unsigned": update(attrs.evolve(genuine_new, signature=bytes(64))),
        # a real signature, over other content
        "wrongly_signed": update(attrs.evolve(
            genuine_new, endpoints=(GossipEndpoint(blackhole, 7777, PathType.IPV4),))),
        # the target's own key, but a sequence number older than its current one
        "old_sequence": update(records.sign_self(target, there, seq=0)),
        # "self-attested" for the target, signed with the rogue's own key
        "other_key": update(attrs.evolve(
            records.sign_observation(rogue, target.public, there, seq=2**40),
            self_attested=True)),
    }


def main() -> None:
    rogue_key, victim_pub, victim_host, port, target_key, blackhole = sys.argv[1:7]
    rogue = read_key_file(rogue_key)
    victim_static = x25519_public_from_ed25519(decode_key(victim_pub))
    victim = PeerSpec("victim", victim_static, (ipaddress.ip_network("100.96.0.0/16"),),
                      ((victim_host, int(port)),), node_id=decode_key(victim_pub))
    engine = Engine(rogue.x25519_private, rogue.x25519_public, [victim],
                    random_bytes=os.urandom, wall_offset=time.time())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", int(port)))
    sock.settimeout(0.2)
    peer = engine.peers[victim_static]
    start = time.monotonic()
    sent = 0

    def pump() -> None:
        nonlocal sent
        for datagram, addr, _ in engine.outbox:
            sock.sendto(datagram, addr)
            sent += 1
        engine.outbox.clear()
        try:
            data, addr = sock.recvfrom(65536)
            engine.receive_datagram(data, addr, time.monotonic() - start)
        except TimeoutError:
            pass

    peer.initiate(0.0, retry=False, reason="rogue")
    while peer.current is None and time.monotonic() - start < 10:
        pump()
    if peer.current is None:
        sys.exit("rogue: no session with the victim")
    for payload in forgeries(rogue, read_key_file(target_key), blackhole).values():
        engine.send_control(peer, control.Kind.GOSSIP, payload, time.monotonic() - start)
        pump()
    for _ in range(5):
        pump()
    print(sent)


if __name__ == "__main__":
    main()
