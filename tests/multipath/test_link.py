"""Two MultipathLinks back to back: discovery, data over both paths, back in order."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whalescale.multipath.link import (
    MIN_PATH_MTU,
    REPROBE_EVERY_S,
    TRAILER_SIZE,
    MalformedPathMessage,
    MultipathLink,
    Outgoing,
    decode_announce,
    encode_announce,
    unwrap32,
)
from whalescale.multipath.paths import PathState
from whalescale.multipath.reorder import ReorderBuffer
from whalescale.multipath.sender import PathStateChanged
from whalescale.wire import control

A = [("10.0.0.1", 51820), ("10.0.1.1", 51820)]
B = [("10.0.0.2", 51820), ("10.0.1.2", 51820)]
MESH_MTU = 1420


def links(a_addrs=A, b_addrs=B) -> tuple[MultipathLink, MultipathLink]:
    rng = random.Random(3)
    return tuple(MultipathLink(addrs, scheduler="wrr", now=0.0, random_bytes=rng.randbytes,
                               base_mtu=lambda: MESH_MTU) for addrs in (a_addrs, b_addrs))


def same_subnet(local, remote) -> bool:
    return local is None or local[0][:7] == remote[0][:7]


def deliver(outgoing: list[Outgoing], to: MultipathLink, now: float,
            reachable=same_subnet, max_plaintext: int = 1440) -> list[Outgoing]:
    """Hand each control message to the other link, as the engine would; replies back.
    Plaintexts above `max_plaintext` are lost, as on a path with a smaller MTU."""
    replies = []
    for out in outgoing:
        if not reachable(out.local, out.remote):
            continue  # a path socket cannot reach the other link's subnet
        for plain in out.plaintexts:
            if len(plain) > max_plaintext:
                continue
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


def discover(a: MultipathLink, b: MultipathLink, max_plaintext: int = 1440) -> None:
    for sender, receiver in ((a, b), (b, a)):
        endpoint = receiver.local_addrs[0]
        probes = deliver(sender.announce(endpoint, 0.0), receiver, 0.0)
        deliver(deliver(probes, sender, 0.001, max_plaintext=max_plaintext),
                receiver, 0.002)


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


def test_a_padded_probe_raises_the_path_mtu_to_what_ipv4_allows():
    a, b = links()
    discover(a, b)
    # 1500 - IPv4 20 - UDP 8 - WireGuard 32 = 1440 bytes of plaintext, less the trailer
    assert a.mtu == b.mtu == 1440 - TRAILER_SIZE
    assert {p["mtu"] for p in a.status("wrr")["paths"]} == {1440}


def test_a_path_that_carries_the_mesh_mtu_but_no_more_gets_the_mesh_mtu():
    a, b = links()
    discover(a, b, max_plaintext=MESH_MTU)  # the largest probes are lost on the way
    assert a.mtu == MESH_MTU - TRAILER_SIZE


def test_a_narrow_path_gets_what_ipv6_needs_not_the_mesh_mtu():
    a, b = links()
    discover(a, b, max_plaintext=1340)  # e.g. a 1400-byte link: the two larger probes lost
    assert a.mtu == MIN_PATH_MTU - TRAILER_SIZE == 1280
    assert a.active  # the smallest probe still validated both paths


def test_a_path_narrower_than_ipv6_needs_is_not_used():
    a, b = links()
    discover(a, b, max_plaintext=MIN_PATH_MTU - 1)
    assert not a.routing and a.mtu is None


def test_ipv6_paths_are_not_probed_above_the_mesh_mtu():
    a, b = links([("fd00:1::1", 51820)], [("fd00:1::2", 51820)])
    probes = a.on_announce(encode_announce(b.local_addrs), 0.0)
    assert [len(p) for out in probes for p in out.plaintexts] == [MIN_PATH_MTU, MESH_MTU]
    discover(a, b)
    assert a.mtu == MESH_MTU - TRAILER_SIZE  # 1500 - 40 - 8 - 32 = the mesh's 1420


def test_ipv6_pairs_are_probed_first():
    a, _ = links([("10.0.0.1", 51820), ("fd00:1::1", 51820)], B)
    announced = [("10.0.0.2", 51820), ("fd00:1::2", 51820), ("10.0.1.2", 51820)]
    probes = a.on_announce(encode_announce(announced), 0.0)
    remotes = list(dict.fromkeys(out.remote for out in probes))
    assert remotes == [("fd00:1::2", 51820), ("10.0.0.2", 51820), ("10.0.1.2", 51820)]


def probe_round(a: MultipathLink, b: MultipathLink, now: float, max_plaintext: int
                ) -> list[Outgoing]:
    """a's timer at `now`: the probes it sends cross to b (those that fit), the replies
    come back; then a's timer once the round is over. (Feedback is not modelled here, so
    health fails the paths meanwhile: the tests read each path's own MTU.)"""
    outgoing, _ = a.on_timer(now, B[0])
    probes = [out for out in outgoing
              if control.decode(out.plaintexts[0])[0] is control.Kind.PATH_PROBE]
    deliver(deliver(probes, b, now, max_plaintext=max_plaintext), a, now + 0.01)
    a.on_timer(now + 2.5, B[0])
    return probes


def path_mtus(link: MultipathLink) -> list[int]:
    return sorted(p["mtu"] for p in link.status("wrr")["paths"])


def test_a_path_that_narrows_later_is_found_at_the_next_round():
    a, b = links()
    discover(a, b)
    assert a.mtu == 1428
    probes = probe_round(a, b, REPROBE_EVERY_S + 0.1, max_plaintext=1340)
    assert len(probes) == 6  # three sizes on each of the two paths
    assert path_mtus(a) == [MIN_PATH_MTU, MIN_PATH_MTU]
    assert a.counters["path_mtu_lowered"] == 2


def test_a_path_that_widens_later_is_raised_at_the_next_round():
    a, b = links()
    discover(a, b, max_plaintext=MESH_MTU)
    assert path_mtus(a) == [MESH_MTU, MESH_MTU]
    probe_round(a, b, REPROBE_EVERY_S + 0.1, max_plaintext=1440)
    assert path_mtus(a) == [1440, 1440]


def test_a_round_nobody_answers_leaves_the_mtu_alone():
    a, b = links()
    discover(a, b)
    probe_round(a, b, REPROBE_EVERY_S + 0.1, max_plaintext=0)  # the paths are down
    assert path_mtus(a) == [1440, 1440]


def test_a_path_back_from_failure_is_probed_again_at_once():
    a, b = links()
    discover(a, b)
    a.sender.events.append(PathStateChanged(1, PathState.FAILED, 5.0))
    a.on_timer(5.0, B[0])
    a.sender.events.append(PathStateChanged(1, PathState.DEGRADED, 9.0))
    probes = probe_round(a, b, 9.0, max_plaintext=1340)
    assert {out.local for out in probes} == {A[1]}  # only the path that came back
    assert path_mtus(a) == [MIN_PATH_MTU, 1440]


def test_no_mtu_before_a_path_is_validated():
    a, _ = links()
    assert a.mtu is None


@given(st.integers(0, 2**64), st.integers(-(2**31) + 1, 2**31 - 1))
def test_unwrap32_recovers_values_within_half_the_space(near, offset):
    value = max(0, near + offset)
    assert unwrap32(value % 2**32, near) == value


def test_data_keeps_its_order_across_the_32_bit_wrap_of_mp_seq():
    a, b = links()
    discover(a, b)
    start = 2**32 - 20
    a.sender.next_counter = start
    b.reorder = ReorderBuffer(b.reorder.params, first_counter=start)
    packets = [bytes([i]) * 60 for i in range(40)]
    released = []
    for out in reversed(a.route(packets, 0.01)):  # one path's packets all arrive first
        for plain in out.plaintexts:
            released += b.on_data(plain[:-TRAILER_SIZE], plain[-TRAILER_SIZE:], 0.02)
    assert released == packets
    assert b.reorder.next_counter == start + 40


@given(st.binary(max_size=200))
def test_announce_decoder_raises_only_malformed(data):
    with contextlib.suppress(MalformedPathMessage):
        decode_announce(data)


def test_announce_round_trip():
    addrs = [("10.0.0.1", 51820), ("fd00::1", 1)]
    assert decode_announce(encode_announce(addrs)) == addrs
    with pytest.raises(MalformedPathMessage):
        decode_announce(encode_announce(addrs) + b"x")


def ipv4(proto: int, payload: bytes) -> bytes:
    total = 20 + len(payload)
    return (bytes([0x45, 0]) + total.to_bytes(2, "big") + bytes(5) + bytes([proto])
            + bytes(2) + bytes([10, 9, 0, 1, 10, 9, 0, 2]) + payload)


def tcp(flags: int, data: bytes = b"") -> bytes:
    return ipv4(6, bytes(12) + bytes([5 << 4, flags]) + bytes(6) + data)


def test_pings_and_pure_acks_skip_the_hold_and_the_buffer_data_waits_for_the_slow_path():
    a, b = links()
    discover(a, b)
    for pid, rtt in ((0, 0.010), (1, 0.040)):  # Wi-Fi and cellular
        path = a.sender.paths[pid]
        path.srtt = path.min_rtt = rtt
        path.on_heard(1.0)
    ping, ack = ipv4(1, b"\x08\x00" + bytes(30)), tcp(0x10)
    data = [tcp(0x18, bytes([i]) * 500) for i in range(6)]
    out = a.route([ping, data[0], ack, *data[1:]], 1.0)
    prompt = [o for o in out if ping in o.plaintexts]
    assert prompt == [Outgoing((ping, ack), A[0], B[0])]  # the fast path, as they are
    now_on = [o for o in out if o not in prompt]
    assert {o.local for o in now_on} == {A[1]}  # the slow path's share leaves at once
    # The fast path's share waits 15 ms, then leaves with its trailers.
    assert a.sender.delay_line.next_deadline() == pytest.approx(1.015)
    assert a.next_deadline() <= 1.015
    later, _ = a.on_timer(1.015, B[0])
    held = [o for o in later if o.local == A[0] and o.plaintexts[0][0] == 0x45]
    assert len(held) == 1 and all(p[-TRAILER_SIZE] == 0xA5 for p in held[0].plaintexts)
    # Released in the order they came, whichever path came first.
    released = []
    for o in [*held, *now_on]:
        for plain in o.plaintexts:
            released += b.on_data(plain[:-TRAILER_SIZE], plain[-TRAILER_SIZE:], 1.03)
    assert released == data


def test_a_backup_address_is_announced_apart_and_its_paths_carry_data_only_when_needed():
    rng = random.Random(5)
    a = MultipathLink(A, scheduler="wrr", now=0.0, random_bytes=rng.randbytes,
                      base_mtu=lambda: MESH_MTU)
    b = MultipathLink(B, scheduler="wrr", now=0.0, random_bytes=rng.randbytes,
                      base_mtu=lambda: MESH_MTU, backup_addrs=frozenset({B[1]}))
    kinds = [control.decode(o.plaintexts[0])[0] for o in b.announce(A[0], 0.0)]
    assert kinds == [control.Kind.PATH_ANNOUNCE, control.Kind.PATH_ANNOUNCE_BACKUP]
    # The peer (a) learns B[1] is a backup; b knows its own.
    for sender, receiver in ((a, b), (b, a)):
        probes = []
        for out in sender.announce(receiver.local_addrs[0], 0.0):
            kind, body = control.decode(out.plaintexts[0])
            probes += receiver.on_announce(body, 0.0,
                                           backup=kind is control.Kind.PATH_ANNOUNCE_BACKUP)
        deliver(deliver(probes, sender, 0.001), receiver, 0.002)
    for link, backup_remote in ((a, B[1]), (b, None)):
        flags = {(p["local"], p["remote"]): p["backup"] for p in link.status("wrr")["paths"]}
        assert flags, "paths were found"
        for (local, remote), backup in flags.items():
            expected = remote == f"{backup_remote[0]}:{backup_remote[1]}" if backup_remote \
                else local == f"{B[1][0]}:{B[1][1]}"
            assert backup is expected
    packets = [bytes([0x60 + i % 16]) * 100 for i in range(20)]
    assert {o.remote for o in a.route(packets, 0.01)} == {B[0]}  # the backup stays idle
    primary = next(p for p in a.sender.paths.values() if not p.backup)
    primary.last_heard = -5.0  # silent: fails at the next look
    backup = next(p for p in a.sender.paths.values() if p.backup)
    backup.on_heard(0.02)
    a.on_timer(0.02, B[0])
    assert primary.state is PathState.FAILED and not backup.standby
    assert {o.remote for o in a.route(packets, 0.03)} == {B[1]}


def states(link: MultipathLink) -> dict[str, str]:
    return {p["local"]: p["state"] for p in link.status("wrr")["paths"]}


def test_an_interface_gone_fails_its_paths_at_both_ends_at_once_and_back_they_are_tried():
    a, b = links()
    discover(a, b)
    # a's second interface goes down: its path fails at a's next timer, which is now
    told = a.set_gone_locals(frozenset({A[1]}), B[0], 0.05)
    assert a.next_deadline() <= 0.05
    a.on_timer(0.05, B[0])
    assert states(a) == {"10.0.0.1:51820": "healthy", "10.0.1.1:51820": "failed"}
    assert {out.local for out in a.route([b"x" * 100] * 20, 0.05)} == {A[0]}
    # b is told by an announcement that leaves the address out, not by a timeout
    assert [decode_announce(control.decode(p)[1]) for out in told for p in out.plaintexts] \
        == [[A[0]]]
    deliver(told, b, 0.06)
    assert b.next_deadline() <= 0.06
    b.on_timer(0.06, A[0])
    assert states(b) == {"10.0.0.2:51820": "healthy", "10.0.1.2:51820": "failed"}
    # nothing changed: nothing to tell
    assert a.set_gone_locals(frozenset({A[1]}), B[0], 0.07) == []
    # back: announced again, and neither end holds the paths down any more
    deliver(a.set_gone_locals(frozenset(), B[0], 0.08), b, 0.09)
    assert not any(p.gone for link in (a, b) for p in link.sender.paths.values())


def test_an_empty_announcement_decodes_to_no_addresses():
    # every address of a kind gone: a previous release reads this as nothing new
    assert decode_announce(encode_announce([])) == []
