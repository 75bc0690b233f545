"""The mesh controller on a real session engine and gossip node (mesh/controller.py):
candidate endpoints from gossip, the LKG cache and the mesh file, and what it persists."""

from __future__ import annotations

import ipaddress
import itertools
import random

from whalescale.identity import Identity
from whalescale.mesh import records
from whalescale.mesh.controller import Contact, MeshController, StoredRecord
from whalescale.mesh.gossip import GossipNode
from whalescale.mesh.gossip_messages import MessageType
from whalescale.mesh.records import GossipEndpoint, PathType
from whalescale.session import events
from whalescale.session.engine import Engine, PeerSpec
from whalescale.wire import messages as wire
from whalescale.wire.port import relay_alias

ME, HUB, FAR = (Identity.from_seed(bytes([n]) * 32) for n in (1, 2, 3))
HUB_AT = ("198.51.100.1", 51820)
FAR_CACHED = ("192.0.2.50", 51820)


def controller() -> MeshController:
    rng = random.Random(4)
    specs = [PeerSpec(name=name, static_public=ident.x25519_public,
                      allowed_ips=(ipaddress.ip_network(f"100.96.0.{n}/32"),),
                      endpoints=endpoints, keepalive_s=5.0, node_id=ident.public)
             for n, (name, ident, endpoints) in enumerate(
                 (("hub", HUB, (HUB_AT,)), ("far", FAR, ())), start=2)]
    engine = Engine(ME.x25519_private, ME.x25519_public, specs, random_bytes=rng.randbytes,
                    wall_offset=1.8e9)
    gossip = GossipNode(ME, [ME.public, HUB.public, FAR.public], random_bytes=rng.randbytes,
                        next_seq=itertools.count(1).__next__)
    return MeshController(engine, gossip, {FAR.public: [FAR_CACHED]})


def update(*recs: records.EndpointRecord) -> bytes:
    return bytes((MessageType.UPDATE, len(recs))) + b"".join(map(records.encode_record, recs))


def initiations_to(c: MeshController) -> list[tuple[str, int]]:
    return [addr for data, addr, _ in c.engine.outbox
            if data[0] == wire.MessageType.INITIATION]


def test_candidates_are_the_record_then_static_then_cache_and_a_new_record_is_tried_at_once():
    c = controller()
    far = c.engine.peer_by_id(FAR.public)
    assert far is not None and far.endpoints == [FAR_CACHED]  # only the cache knows it yet
    lan, v4 = GossipEndpoint("10.1.1.7", 51820, PathType.LAN), \
        GossipEndpoint("203.0.113.7", 51820, PathType.IPV4)
    record = records.sign_self(FAR, (v4, lan), seq=3)
    hub = c.engine.peer_by_id(HUB.public)
    c.gossip_message(hub, update(record), now=1.0)
    c.after_batch(now=1.0)
    assert far.endpoints == [("10.1.1.7", 51820), ("203.0.113.7", 51820), FAR_CACHED]
    assert far.endpoint == ("10.1.1.7", 51820)
    assert initiations_to(c) == [("10.1.1.7", 51820)]  # no session: tried now, not later
    assert StoredRecord(FAR.public, (("203.0.113.7", 51820, PathType.IPV4),
                                     ("10.1.1.7", 51820, PathType.LAN)), 3, True) in c.cache_ops


def test_a_peer_heard_from_stays_where_it_is_when_its_record_changes():
    c = controller()
    far = c.engine.peer_by_id(FAR.public)
    far.endpoint, far.last_received_at = ("203.0.113.99", 40000), 0.5  # a symmetric NAT's port
    record = records.sign_self(FAR, (GossipEndpoint("203.0.113.7", 51820, PathType.IPV4),),
                               seq=1)
    c.gossip_message(c.engine.peer_by_id(HUB.public), update(record), now=1.0)
    c.after_batch(now=1.0)
    assert far.endpoints[0] == ("203.0.113.7", 51820)
    assert far.endpoint == ("203.0.113.99", 40000) and initiations_to(c) == []


def test_contacts_are_remembered_but_never_a_relay_alias():
    c = controller()
    c.engine_events([events.HandshakeCompleted("far", True, relay_alias(5), 0.01),
                     events.EndpointChanged("far", None, relay_alias(5))], now=1.0)
    assert not [op for op in c.cache_ops if isinstance(op, Contact)]
    c.engine_events([events.EndpointChanged("far", relay_alias(5), ("203.0.113.7", 51820))],
                    now=2.0)
    assert Contact(FAR.public, "203.0.113.7", 51820, PathType.IPV4) in c.cache_ops
    assert c.candidates(FAR.public)[:2] == [("203.0.113.7", 51820), FAR_CACHED]
