"""Every message a node's shared port takes before a session exists, from a stranger.

One table for the core test (tests/node/test_amplification.py) and the lab test
(tests/agent/test_amplification.py, whose stranger runs tests/agent/amplify.py): each
entry is what is sent, and how many bytes the node answers with (0: no answer). No
answer may outweigh its request (issue 15: no reflection amplification).
"""

from __future__ import annotations

import ipaddress
import random

from whalescale.identity import Identity
from whalescale.nat import bootstrap
from whalescale.nat.bootstrap import PathProbe, PathProbeReply
from whalescale.session.engine import Engine, PeerSpec
from whalescale.wire import messages as wire
from whalescale.wire.port import tag

Addr = tuple[str, int]
OUTSIDER_SEED = b"\x42" * 32  # a key no test mesh holds


def initiation(me: Identity, target_static: bytes, target: Addr, wall_s: float) -> bytes:
    """A genuine initiation from `me` (mac1 valid: the target's public key is known);
    `wall_s`: its TAI64N timestamp, later than `me`'s own node sent for it not to be a
    replay."""
    spec = PeerSpec("target", target_static, (ipaddress.ip_network("0.0.0.0/32"),), (target,))
    engine = Engine(me.x25519_private, me.x25519_public, [spec],
                    random_bytes=random.Random(me.public).randbytes, wall_offset=wall_s)
    engine.peers[target_static].initiate(0.0, retry=False, reason="stranger")
    return engine.outbox[0][0]


def messages(target_static: bytes, target: Addr, stranger: Addr, member: Identity,
             others: tuple[bytes, bytes], wall_s: float) -> list[tuple[str, bytes, int]]:
    """(what, datagram, bytes of the answer) for each pre-handshake message to `target`
    from `stranger`, which holds `member`'s key (one copied off a member) and knows two
    other members' node IDs, `others` (none with a session at `stranger`: a hello
    from where a live session is gets no answer; two, as a member's hello is answered
    once in 5 s). The LAN hellos come last: each makes the target punch, and its
    retransmits would be counted against a later row."""
    nonce = bytes(range(bootstrap.NONCE_BYTES))
    member_initiation = initiation(member, target_static, target, wall_s)
    observed_bytes = 26 if ":" not in stranger[0] else 38
    return [
        ("PATH_PROBE", bootstrap.encode_probe(PathProbe(nonce)), observed_bytes),
        ("unsolicited PATH_PROBE_REPLY",
         bootstrap.encode_reply(PathProbeReply(nonce, stranger)), 0),
        ("initiation, key outside the mesh",
         initiation(Identity.from_seed(OUTSIDER_SEED), target_static, target, wall_s), 0),
        ("initiation, a member's key", member_initiation, wire.RESPONSE_SIZE),
        ("response to nothing", bytes([2, 0, 0, 0]) + bytes(wire.RESPONSE_SIZE - 4), 0),
        ("cookie reply to nothing", bytes([3, 0, 0, 0]) + bytes(wire.COOKIE_REPLY_SIZE - 4), 0),
        ("transport, unknown index", bytes([4, 0, 0, 0]) + bytes(60), 0),
        ("relay-tagged, no such channel", tag(member_initiation, 5), 0),
        ("LAN_HELLO naming a member", bootstrap.encode_lan_hello(others[0], nonce),
         wire.INITIATION_SIZE),
        ("legacy LAN_HELLO naming another member",
         bootstrap.encode_lan_hello(others[1], nonce, padded=False),
         bootstrap.LEGACY_LAN_HELLO_BYTES),
    ]
