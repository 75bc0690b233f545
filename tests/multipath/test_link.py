"""Two MultipathLinks back to back: discovery, data over both paths, back in order."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whalescale.multipath.link import (
    TRAILER_SIZE,
    MalformedPathMessage,
    MultipathLink,
    Outgoing,
    decode_announce,
    encode_announce,
)
from whalescale.wire import control

A = [("10.0.0.1", 51820), ("10.0.1.1", 51820)]
B = [("10.0.0.2", 51820), ("10.0.1.2", 51820)]


def links() -> tuple[MultipathLink, MultipathLink]:
    rng = random.Random(3)
    return (MultipathLink(A, scheduler="wrr", now=0.0, random_bytes=rng.randbytes),
            MultipathLink(B, scheduler="wrr", now=0.0, random_bytes=rng.randbytes))


def deliver(outgoing: list[Outgoing], to: MultipathLink, now: float,
            reachable=lambda local, remote: local is None or local[0][:7] == remote[0][:7]
            ) -> list[Outgoing]:
    """Hand each control message to the other link, as the engine would; replies back."""
    replies = []
    for out in outgoing:
        if not reachable(out.local, out.remote):
            continue  # a path socket cannot reach the other link's subnet
        for plain in out.plaintexts:
            kind, body = control.decode(plain)
            their_local, their_remote = out.remote, out.local or ("10.0.0.1", 51820)
            match kind:
                case control.Kind.PATH_ANNOUNCE:
                    replies += to.on_announce(body, now)
                case control.Kind.PATH_PROBE:
                    replies += to.on_probe(body, their_local, their_remote)
                case control.Kind.PATH_PROBE_REPLY:
                    to.on_probe_reply(body, their_local, their_remote, now)
    return replies


def discover(a: MultipathLink, b: MultipathLink) -> None:
    for sender, receiver, endpoint in ((a, b, B[0]), (b, a, A[0])):
        probes = deliver(sender.announce(endpoint, 0.0), receiver, 0.0)
        deliver(deliver(probes, sender, 0.001), receiver, 0.002)


def test_announce_probe_reply_gives_one_path_per_link_only():
    a, b = links()
    discover(a, b)
    pairs = {(p["local"], p["remote"]) for p in a.status("wrr")["paths"]}
    assert pairs == {("10.0.0.1:51820", "10.0.0.2:51820"), ("10.0.1.1:51820", "10.0.1.2:51820")}
    assert a.active and b.active
    assert a.knows_remote(B[1]) and not a.knows_remote(("10.9.9.9", 1))


def test_data_goes_over_both_paths_and_comes_out_in_order():
    a, b = links()
    discover(a, b)
    packets = [bytes([i]) * 100 for i in range(40)]
    outgoing = a.route(packets, 0.01)
    assert {out.local for out in outgoing} == set(A)  # both paths carry some
    # the slower path's packets arrive last: the receiver still releases them in order
    arrivals = sorted(outgoing, key=lambda out: out.local == A[0])
    released = []
    for out in arrivals:
        for plain in out.plaintexts:
            packet, trailer = plain[:-TRAILER_SIZE], plain[-TRAILER_SIZE:]
            released += b.on_data(packet, trailer, 0.02)
    assert released == packets
    assert b.reorder.stats.released == 40 and b.reorder.stats.late_drops == 0


@given(st.binary(max_size=200))
def test_announce_decoder_raises_only_malformed(data):
    with contextlib.suppress(MalformedPathMessage):
        decode_announce(data)


def test_announce_round_trip():
    addrs = [("10.0.0.1", 51820), ("fd00::1", 1)]
    assert decode_announce(encode_announce(addrs)) == addrs
    with pytest.raises(MalformedPathMessage):
        decode_announce(encode_announce(addrs) + b"x")
