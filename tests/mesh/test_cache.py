"""The LKG cache (design.txt §3.6, §3.8): round trips, ordering, seq rules, files, crashes.

Times are invented unix seconds; peers are 32-byte IDs made of one repeated byte.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.mesh import cache_writer
from whalescale.mesh import cache as cache_module
from whalescale.mesh.cache import (
    SCHEMA_VERSION,
    CachedEndpoint,
    CachedPeer,
    CacheError,
    LkgCache,
    PathType,
    Source,
)

ALICE = b"\xa1" * 32
BOB = b"\xb0" * 32
CAROL = b"\xc4" * 32
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "lkg.sqlite3"


@pytest.fixture
def cache(path: Path):
    with LkgCache.open(path) as opened:
        yield opened


def addresses(endpoints: list[CachedEndpoint]) -> list[tuple[str, int, PathType]]:
    return [(ep.host, ep.port, ep.path_type) for ep in endpoints]


# --- Round trips ----------------------------------------------------------------------
def test_contact_creates_peer_and_endpoint_and_survives_reopen(path: Path) -> None:
    with LkgCache.open(path) as cache:
        cache.record_contact(ALICE, "203.0.113.7", 51820, PathType.IPV4, now_unix=1000.0)
    with LkgCache.open(path) as cache:
        assert cache.peers() == [CachedPeer(ALICE, None, False, 1000.0)]
        assert cache.endpoints(ALICE) == [CachedEndpoint(
            "203.0.113.7", 51820, PathType.IPV4, frozenset({Source.AUTHENTICATED}),
            None, 1000.0)]


def test_set_peer_keeps_contact_and_updates_name_and_anchor(cache: LkgCache) -> None:
    cache.record_contact(ALICE, "203.0.113.7", 51820, "ipv4", now_unix=1000.0)
    cache.set_peer(ALICE, "alice", anchor=True)
    cache.set_peer(ALICE, "alice-vps", anchor=True)
    assert cache.peer(ALICE) == CachedPeer(ALICE, "alice-vps", True, 1000.0)
    assert cache.peer(BOB) is None


def test_one_address_from_several_sources_is_one_endpoint(cache: LkgCache) -> None:
    cache.set_static_endpoints(ALICE, [("Alice.Example.net", 51820, "ipv4")])
    cache.store_record(ALICE, [("2001:db8::1", 51820, "ipv6")], seq=3, self_attested=True)
    cache.store_record(ALICE, [("2001:db8:0::1", 51820, "ipv6")], seq=9, self_attested=False)
    cache.record_contact(ALICE, "2001:db8::1", 51820, "ipv6", now_unix=50.0)
    assert cache.endpoints(ALICE) == [
        CachedEndpoint("2001:db8::1", 51820, PathType.IPV6,
                       frozenset({Source.SELF_ATTESTED, Source.OBSERVED, Source.AUTHENTICATED}),
                       3, 50.0),
        CachedEndpoint("alice.example.net", 51820, PathType.IPV4,
                       frozenset({Source.STATIC}), None, None),
    ]
    assert cache.endpoints(ALICE)[0].source is Source.SELF_ATTESTED


def test_state_round_trip(path: Path) -> None:
    with LkgCache.open(path) as cache:
        cache.set_state("nat_type", "cone")
        cache.set_state("gone", "x")
        cache.set_state("gone", None)
    with LkgCache.open(path) as cache:
        assert cache.get_state("nat_type") == "cone"
        assert cache.get_state("gone") is None


def test_forget_peer_removes_everything_about_it(cache: LkgCache) -> None:
    cache.record_contact(ALICE, "203.0.113.7", 51820, "ipv4", now_unix=1.0)
    cache.store_record(ALICE, [("203.0.113.8", 1, "ipv4")], seq=5, self_attested=True)
    cache.record_contact(BOB, "203.0.113.9", 51820, "ipv4", now_unix=1.0)
    cache.forget_peer(ALICE)
    assert [p.peer_id for p in cache.peers()] == [BOB]
    assert cache.endpoints(ALICE) == []
    assert cache.record_seq(ALICE, self_attested=True) is None
    # Forgotten means forgotten: an old record is welcome again.
    assert cache.store_record(ALICE, [], seq=1, self_attested=True)


# --- Ordering -------------------------------------------------------------------------
def test_endpoints_best_first(cache: LkgCache) -> None:
    """Most recent success, then self-attested by newest seq, then static, then observed."""
    cache.store_record(ALICE, [("198.51.100.1", 1, "ipv4")], seq=7, self_attested=False)
    cache.set_static_endpoints(ALICE, [("alice.example.net", 2, "ipv4")])
    cache.store_record(ALICE, [("2001:db8::5", 3, "ipv6"), ("192.168.1.5", 4, "lan")],
                       seq=4, self_attested=True)
    cache.record_contact(ALICE, "203.0.113.1", 5, "ipv4", now_unix=100.0)
    cache.record_contact(ALICE, "203.0.113.2", 6, "ipv4", now_unix=200.0)
    assert addresses(cache.endpoints(ALICE)) == [
        ("203.0.113.2", 6, PathType.IPV4),  # succeeded last
        ("203.0.113.1", 5, PathType.IPV4),
        ("192.168.1.5", 4, PathType.LAN),  # self-attested, seq 4; LAN before IPv6
        ("2001:db8::5", 3, PathType.IPV6),
        ("alice.example.net", 2, PathType.IPV4),  # static
        ("198.51.100.1", 1, PathType.IPV4),  # observed: advisory only
    ]


def test_peers_anchors_first_then_most_recent_contact(cache: LkgCache) -> None:
    cache.record_contact(ALICE, "203.0.113.1", 1, "ipv4", now_unix=300.0)
    cache.record_contact(BOB, "203.0.113.2", 1, "ipv4", now_unix=100.0)
    cache.set_peer(BOB, "bob", anchor=True)
    cache.set_peer(CAROL, "carol", anchor=False)  # never reached: last
    cache.record_contact(b"\x01" * 32, "203.0.113.3", 1, "ipv4", now_unix=200.0)
    assert [p.peer_id for p in cache.peers()] == [BOB, ALICE, b"\x01" * 32, CAROL]


# --- Gossip seq rules -----------------------------------------------------------------
@pytest.mark.parametrize("self_attested", [True, False])
def test_older_or_equal_seq_never_replaces_newer(cache: LkgCache, self_attested: bool) -> None:
    assert cache.store_record(ALICE, [("203.0.113.10", 1, "ipv4")], 10, self_attested)
    assert not cache.store_record(ALICE, [("203.0.113.9", 1, "ipv4")], 9, self_attested)
    assert not cache.store_record(ALICE, [("203.0.113.99", 1, "ipv4")], 10, self_attested)
    assert addresses(cache.endpoints(ALICE)) == [("203.0.113.10", 1, PathType.IPV4)]
    assert cache.record_seq(ALICE, self_attested) == 10


def test_empty_newer_record_still_blocks_older_ones(cache: LkgCache) -> None:
    cache.store_record(ALICE, [("203.0.113.1", 1, "ipv4")], seq=1, self_attested=True)
    assert cache.store_record(ALICE, [], seq=2, self_attested=True)
    assert cache.endpoints(ALICE) == []
    assert not cache.store_record(ALICE, [("203.0.113.1", 1, "ipv4")], 1, self_attested=True)
    assert cache.endpoints(ALICE) == []


def test_self_and_observed_seqs_are_separate(cache: LkgCache) -> None:
    cache.store_record(ALICE, [("203.0.113.1", 1, "ipv4")], seq=50, self_attested=False)
    assert cache.store_record(ALICE, [("203.0.113.2", 1, "ipv4")], seq=3, self_attested=True)
    assert addresses(cache.endpoints(ALICE)) == [("203.0.113.2", 1, PathType.IPV4),
                                                 ("203.0.113.1", 1, PathType.IPV4)]


def test_address_that_worked_outlives_the_record_that_listed_it(cache: LkgCache) -> None:
    cache.store_record(ALICE, [("203.0.113.1", 1, "ipv4")], seq=1, self_attested=True)
    cache.record_contact(ALICE, "203.0.113.1", 1, "ipv4", now_unix=10.0)
    cache.store_record(ALICE, [("203.0.113.2", 1, "ipv4")], seq=2, self_attested=True)
    assert cache.endpoints(ALICE) == [
        CachedEndpoint("203.0.113.1", 1, PathType.IPV4, frozenset({Source.AUTHENTICATED}),
                       None, 10.0),
        CachedEndpoint("203.0.113.2", 1, PathType.IPV4, frozenset({Source.SELF_ATTESTED}),
                       2, None),
    ]


def test_next_self_seq_strictly_increases_across_reopen(path: Path) -> None:
    seen = []
    for _ in range(3):
        with LkgCache.open(path) as cache:
            seen += [cache.next_self_seq() for _ in range(4)]
    assert seen == list(range(1, 13))


def test_a_seq_the_mesh_held_for_us_is_never_handed_out_again(path: Path) -> None:
    with LkgCache.open(path) as cache:
        assert cache.reserve_self_seqs(10) == 1
        cache.raise_self_seq(2**40)  # above what we reserved: the floor moves up
        cache.raise_self_seq(5)  # below it: nothing changes
    with LkgCache.open(path) as cache:
        assert cache.next_self_seq() == 2**40 + 1


# --- Bad input ------------------------------------------------------------------------
BAD_CALLS = [
    ("short peer id", lambda c: c.record_contact(b"x" * 31, "10.0.0.1", 1, "ipv4", 1.0)),
    ("peer id as str", lambda c: c.set_peer("a" * 32, "a", False)),
    ("port 0", lambda c: c.record_contact(ALICE, "10.0.0.1", 0, "ipv4", 1.0)),
    ("port 65536", lambda c: c.record_contact(ALICE, "10.0.0.1", 65536, "ipv4", 1.0)),
    ("port as str", lambda c: c.record_contact(ALICE, "10.0.0.1", "1", "ipv4", 1.0)),
    ("port as bool", lambda c: c.record_contact(ALICE, "10.0.0.1", True, "ipv4", 1.0)),
    ("unknown path type", lambda c: c.record_contact(ALICE, "10.0.0.1", 1, "ipx", 1.0)),
    ("v6 host on ipv4", lambda c: c.record_contact(ALICE, "::1", 1, "ipv4", 1.0)),
    ("v4 host on ipv6", lambda c: c.record_contact(ALICE, "10.0.0.1", 1, "ipv6", 1.0)),
    ("hostname from a packet", lambda c: c.record_contact(ALICE, "a.example", 1, "ipv4", 1.0)),
    ("hostname in gossip", lambda c: c.store_record(ALICE, [("a.example", 1, "ipv4")], 1, True)),
    ("bad hostname", lambda c: c.set_static_endpoints(ALICE, [("a b", 1, "ipv4")])),
    ("empty host", lambda c: c.set_static_endpoints(ALICE, [("", 1, "ipv4")])),
    ("negative time", lambda c: c.record_contact(ALICE, "10.0.0.1", 1, "ipv4", -1.0)),
    ("nan time", lambda c: c.record_contact(ALICE, "10.0.0.1", 1, "ipv4", float("nan"))),
    ("negative seq", lambda c: c.store_record(ALICE, [], -1, True)),
    ("seq beyond 64 bits", lambda c: c.store_record(ALICE, [], 2**63, True)),
    ("self_attested not bool", lambda c: c.store_record(ALICE, [], 1, 1)),
    ("endpoint pair", lambda c: c.store_record(ALICE, [("10.0.0.1", 1)], 1, True)),
    # One bad endpoint spoils the whole record: nothing of it is stored.
    ("one bad of two", lambda c: c.store_record(
        ALICE, [("10.0.0.9", 1, "ipv4"), ("10.0.0.9", 0, "ipv4")], 9, True)),
    ("anchor not bool", lambda c: c.set_peer(ALICE, "a", "yes")),
    ("empty state key", lambda c: c.set_state("", "x")),
]


@pytest.mark.parametrize("call", [c for _, c in BAD_CALLS], ids=[n for n, _ in BAD_CALLS])
def test_bad_input_raises_value_error_and_changes_nothing(cache: LkgCache, call) -> None:
    cache.record_contact(ALICE, "10.0.0.1", 1, "ipv4", now_unix=5.0)
    cache.store_record(ALICE, [("10.0.0.2", 2, "ipv4")], seq=1, self_attested=True)
    before = (cache.peers(), cache.endpoints(ALICE), cache.record_seq(ALICE, True))
    with pytest.raises(ValueError):
        call(cache)
    assert (cache.peers(), cache.endpoints(ALICE), cache.record_seq(ALICE, True)) == before
    assert cache.integrity_check() == "ok"


# --- The file -------------------------------------------------------------------------
def test_files_are_private_even_with_a_permissive_umask(path: Path) -> None:
    old = os.umask(0o000)
    try:
        with LkgCache.open(path) as cache:
            cache.record_contact(ALICE, "10.0.0.1", 1, "ipv4", now_unix=1.0)
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
    finally:
        os.umask(old)
    assert modes == {"lkg.sqlite3": 0o600, "lkg.sqlite3-wal": 0o600, "lkg.sqlite3-shm": 0o600}


def test_existing_file_is_made_private(path: Path) -> None:
    LkgCache.open(path).close()
    path.chmod(0o644)
    LkgCache.open(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_wal_journal_and_schema_version(cache: LkgCache, path: Path) -> None:
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        db.close()


def test_migration_steps_run_in_order_and_keep_data(path: Path, monkeypatch) -> None:
    with LkgCache.open(path) as cache:
        cache.record_contact(ALICE, "10.0.0.1", 1, "ipv4", now_unix=1.0)
    step = ("CREATE TABLE added_later (x INTEGER)", "INSERT INTO added_later VALUES (42)")
    monkeypatch.setattr(cache_module, "MIGRATIONS", (*cache_module.MIGRATIONS, step))
    monkeypatch.setattr(cache_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with LkgCache.open(path) as cache:
        assert cache.peer(ALICE) is not None
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION + 1,)
        assert db.execute("SELECT x FROM added_later").fetchall() == [(42,)]
    finally:
        db.close()


def write_garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database" * 100)


def corrupt_a_page(path: Path) -> None:
    """A real cache with one of its b-tree pages overwritten."""
    with LkgCache.open(path) as cache:
        for i in range(200):
            cache.record_contact(bytes([i]) * 32, f"10.0.{i}.1", 1, "ipv4", now_unix=i)
    page_size = 4096
    assert path.stat().st_size > 4 * page_size
    with path.open("r+b") as f:
        f.seek(2 * page_size)
        f.write(b"\xff" * 64)
        f.seek(3 * page_size + 100)
        f.write(b"\x00\x13" * 500)


def newer_schema(path: Path) -> None:
    LkgCache.open(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 999")
    db.close()


def foreign_database(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE something_else (x)")
    db.commit()
    db.close()


BROKEN_FILES = [
    ("garbage", write_garbage, "file is not a database"),
    ("page overwritten", corrupt_a_page, ""),
    ("newer schema", newer_schema, "schema version 999 is newer"),
    ("foreign database", foreign_database, "not an LKG cache"),
]


@pytest.mark.parametrize(("breaker", "said"), [(b, s) for _, b, s in BROKEN_FILES],
                         ids=[n for n, _, _ in BROKEN_FILES])
def test_broken_file_is_reported_with_path_and_cause(path: Path, breaker, said: str) -> None:
    breaker(path)
    with pytest.raises(CacheError) as caught, LkgCache.open(path) as cache:
        cache.peers()  # a lazily noticed corruption would surface here
    assert caught.value.path == path
    assert str(caught.value).startswith(f"{path}: ")
    assert said in str(caught.value)


@pytest.mark.parametrize("breaker", [b for _, b, _ in BROKEN_FILES],
                         ids=[n for n, _, _ in BROKEN_FILES])
def test_recover_moves_broken_file_aside_and_starts_empty(path: Path, breaker, caplog) -> None:
    breaker(path)
    broken = path.read_bytes()
    with caplog.at_level(logging.WARNING), LkgCache.open(path, recover=True) as cache:
        assert cache.peers() == []
        assert cache.next_self_seq() == 1
        assert cache.integrity_check() == "ok"
    assert Path(f"{path}.corrupt-1").read_bytes() == broken
    assert f"moved it to {path}.corrupt-1" in caplog.text


def test_recover_numbers_each_broken_file_and_leaves_no_stale_wal(path: Path) -> None:
    write_garbage(path)
    LkgCache.open(path, recover=True).close()
    write_garbage(path)
    Path(f"{path}-wal").write_bytes(b"stale wal")
    with LkgCache.open(path, recover=True) as cache:
        assert cache.peers() == []
        assert b"stale wal" not in Path(f"{path}-wal").read_bytes()
    assert Path(f"{path}.corrupt-1").exists()
    assert Path(f"{path}.corrupt-2").exists()


def test_sqlite_failure_mid_write_is_a_cache_error_and_rolls_back(path: Path) -> None:
    with LkgCache.open(path) as cache:
        # Something SQLite refuses half-way through a record_contact: after the peer
        # row is written, before the address is.
        other = sqlite3.connect(path)
        other.execute("CREATE TRIGGER refuse BEFORE INSERT ON address"
                      " BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
        other.commit()
        with pytest.raises(CacheError, match="disk says no"):
            cache.record_contact(BOB, "10.0.0.2", 1, "ipv4", now_unix=2.0)
        assert cache.peers() == []  # the peer row went with the rest
        other.execute("DROP TRIGGER refuse")
        other.commit()
        other.close()
        cache.record_contact(BOB, "10.0.0.2", 1, "ipv4", now_unix=2.0)
        assert [p.peer_id for p in cache.peers()] == [BOB]


def test_recover_leaves_a_good_file_alone(path: Path) -> None:
    with LkgCache.open(path) as cache:
        cache.set_peer(ALICE, "alice", anchor=True)
    with LkgCache.open(path, recover=True) as cache:
        assert cache.peer(ALICE) == CachedPeer(ALICE, "alice", True, None)
    assert not list(path.parent.glob("*.corrupt-*"))


# --- Model-based: any sequence of operations, compared with plain dicts -----------------
POOL_PEERS = [ALICE, BOB, CAROL]
POOL_ENDPOINTS = [("10.0.0.1", 1, "ipv4"), ("10.0.0.1", 2, "ipv4"), ("10.0.0.1", 1, "lan"),
                  ("2001:db8::1", 1, "ipv6"), ("2001:db8:0:0::1", 1, "ipv6"),
                  ("fe80::1", 3, "lan")]
STATIC_ENDPOINTS = [*POOL_ENDPOINTS, ("anchor.example.net", 51820, "ipv4")]
RANK = {Source.SELF_ATTESTED: 0, Source.AUTHENTICATED: 1, Source.STATIC: 2, Source.OBSERVED: 3}
PATH_RANK = {PathType.LAN: 0, PathType.IPV6: 1, PathType.IPV4: 2}


def norm(ep: tuple[str, int, str]) -> tuple[str, int, PathType]:
    host, port, kind = ep
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        host = host.lower()
    return host, port, PathType(kind)


class CacheModel(RuleBasedStateMachine):
    """The cache against dicts: peer -> (name, anchor, last contact); address -> last
    success; address -> {source: seq}; (peer, self_attested) -> newest record seq."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="lkg-model-"))
        self.cache = LkgCache.open(self.dir / "lkg.sqlite3")
        self.peers: dict[bytes, tuple[str | None, bool, float | None]] = {}
        self.success: dict[tuple[bytes, str, int, PathType], float | None] = {}
        self.vouches: dict[tuple[bytes, str, int, PathType], dict[Source, int | None]] = {}
        self.records: dict[tuple[bytes, bool], int] = {}
        self.last_self_seq = 0

    def teardown(self) -> None:
        self.cache.close()
        shutil.rmtree(self.dir)

    def _touch(self, peer: bytes) -> None:
        self.peers.setdefault(peer, (None, False, None))

    def _replace(self, peer: bytes, source: Source, eps, seq: int | None) -> None:
        for key in list(self.vouches):
            if key[0] == peer:
                self.vouches[key].pop(source, None)
        for host, port, kind in {norm(ep) for ep in eps}:
            key = (peer, host, port, kind)
            self.success.setdefault(key, None)
            self.vouches.setdefault(key, {})[source] = seq
        for key in [k for k, v in self.vouches.items() if not v]:
            del self.vouches[key], self.success[key]

    @rule(peer=st.sampled_from(POOL_PEERS), ep=st.sampled_from(POOL_ENDPOINTS),
          now=st.integers(0, 20).map(float))
    def record_contact(self, peer, ep, now) -> None:
        self.cache.record_contact(peer, *ep, now_unix=now)
        self._touch(peer)
        name, anchor, _ = self.peers[peer]
        self.peers[peer] = (name, anchor, now)
        key = (peer, *norm(ep))
        self.success[key] = now
        self.vouches.setdefault(key, {}).setdefault(Source.AUTHENTICATED, None)

    @rule(peer=st.sampled_from(POOL_PEERS),
          eps=st.lists(st.sampled_from(POOL_ENDPOINTS), max_size=4),
          seq=st.integers(0, 8), self_attested=st.booleans())
    def store_record(self, peer, eps, seq, self_attested) -> None:
        newer = self.records.get((peer, self_attested), -1) < seq
        assert self.cache.store_record(peer, eps, seq, self_attested) == newer
        if newer:
            self._touch(peer)
            self.records[(peer, self_attested)] = seq
            source = Source.SELF_ATTESTED if self_attested else Source.OBSERVED
            self._replace(peer, source, eps, seq)

    @rule(peer=st.sampled_from(POOL_PEERS),
          eps=st.lists(st.sampled_from(STATIC_ENDPOINTS), max_size=3))
    def set_static(self, peer, eps) -> None:
        self.cache.set_static_endpoints(peer, eps)
        self._touch(peer)
        self._replace(peer, Source.STATIC, eps, None)

    @rule(peer=st.sampled_from(POOL_PEERS), name=st.none() | st.sampled_from(["a", "b"]),
          anchor=st.booleans())
    def set_peer(self, peer, name, anchor) -> None:
        self.cache.set_peer(peer, name, anchor)
        self.peers[peer] = (name, anchor, self.peers.get(peer, (None, False, None))[2])

    @rule(peer=st.sampled_from(POOL_PEERS))
    def forget_peer(self, peer) -> None:
        self.cache.forget_peer(peer)
        self.peers.pop(peer, None)
        for key in [k for k in self.vouches if k[0] == peer]:
            del self.vouches[key], self.success[key]
        for self_attested in (True, False):
            self.records.pop((peer, self_attested), None)

    @rule()
    def next_self_seq(self) -> None:
        self.last_self_seq += 1
        assert self.cache.next_self_seq() == self.last_self_seq

    @rule(port=st.integers(-5, 70000).filter(lambda p: not 1 <= p <= 65535),
          peer=st.binary(max_size=40).filter(lambda b: len(b) != 32))
    def bad_input(self, port, peer) -> None:
        with pytest.raises(ValueError):
            self.cache.record_contact(ALICE, "10.0.0.1", port, "ipv4", now_unix=1.0)
        with pytest.raises(ValueError):
            self.cache.store_record(peer, [], 100, self_attested=True)

    @rule()
    def reopen(self) -> None:
        self.cache.close()
        self.cache = LkgCache.open(self.dir / "lkg.sqlite3")

    @invariant()
    def same_as_model(self) -> None:
        expected_peers = sorted(
            (CachedPeer(p, name, anchor, last) for p, (name, anchor, last) in self.peers.items()),
            key=lambda p: (not p.anchor, p.last_contact_unix is None,
                           -(p.last_contact_unix or 0), p.peer_id))
        assert self.cache.peers() == expected_peers
        for peer in POOL_PEERS:
            assert self.cache.endpoints(peer) == self._expected_endpoints(peer)
            for self_attested in (True, False):
                assert self.cache.record_seq(peer, self_attested) == \
                    self.records.get((peer, self_attested))

    def _expected_endpoints(self, peer: bytes) -> list[CachedEndpoint]:
        found = []
        for key, vouch in self.vouches.items():
            if key[0] != peer:
                continue
            seq = vouch.get(Source.SELF_ATTESTED, vouch.get(Source.OBSERVED))
            found.append(CachedEndpoint(key[1], key[2], key[3], frozenset(vouch), seq,
                                        self.success[key]))

        def best_first(ep: CachedEndpoint):
            success = ep.last_success_unix
            self_seq = ep.seq if Source.SELF_ATTESTED in ep.sources else None
            return (success is None, -(success or 0), self_seq is None, -(self_seq or 0),
                    min(RANK[s] for s in ep.sources), PATH_RANK[ep.path_type], ep.host, ep.port)

        return sorted(found, key=best_first)


TestCacheModel = CacheModel.TestCase
TestCacheModel.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)


# --- Crash: kill -9 a writer at random moments ------------------------------------------
KILLS = 10


def test_kill_9_at_any_moment_loses_no_commit_and_corrupts_nothing(tmp_path: Path) -> None:
    """A child writes in a tight loop, printing each round after it committed; we
    SIGKILL it 50-500 ms after its first round, ten times on the same file, and after
    each kill check SQLite's integrity, that every printed round is there, and that
    the rows of each round agree with each other (see cache_writer)."""
    path = tmp_path / "lkg.sqlite3"
    rng = random.Random(0x1C6)
    reported: list[int] = []
    rounds_per_run = []
    for run in range(KILLS):
        out_path = tmp_path / f"out-{run}.txt"
        with out_path.open("wb") as out:
            child = subprocess.Popen([sys.executable, "-m", "tests.mesh.cache_writer", str(path)],
                                     cwd=REPO, stdout=out, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while out_path.stat().st_size == 0:
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "writer never committed a round"
            time.sleep(0.005)
        time.sleep(rng.uniform(0.05, 0.5))
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
        child.stderr.close()
        lines = out_path.read_bytes().split(b"\n")[:-1]  # a torn last line was not printed
        run_seqs = [int(line) for line in lines]
        rounds_per_run.append(len(run_seqs))
        reported += run_seqs
        check_after_kill(path, reported)
    assert reported == sorted(set(reported))
    assert min(rounds_per_run) > 0, rounds_per_run


def check_after_kill(path: Path, reported: list[int]) -> None:
    with LkgCache.open(path) as cache:
        assert cache.integrity_check() == "ok"
        last_issued = cache.next_self_seq() - 1
        assert last_issued >= max(reported)
        for k in range(cache_writer.PEERS):
            mine = [s for s in reported if s % cache_writer.PEERS == k]
            peer = cache_writer.peer_for(k)
            stored = cache.record_seq(peer, self_attested=True)
            if not mine and stored is None:
                continue
            # The newest record committed: at least the last printed, never unissued.
            assert max(mine, default=0) <= stored <= last_issued
            eps = cache.endpoints(peer)
            attested = {(ep.host, ep.port, ep.path_type) for ep in eps
                        if Source.SELF_ATTESTED in ep.sources}
            assert attested == set(cache_writer.endpoints_for(stored))
            assert all(ep.seq == stored for ep in eps if Source.SELF_ATTESTED in ep.sources)
            contacted = {(ep.host, ep.port, ep.path_type): ep.last_success_unix
                         for ep in eps if Source.AUTHENTICATED in ep.sources}
            for seq in mine:
                assert contacted[cache_writer.contact_for(seq)] == float(seq)
            # The latest contact is the round of the stored record or the one before it.
            last_contact = cache.peer(peer).last_contact_unix
            if last_contact is None:  # killed between its first record and contact
                assert not mine
                continue
            assert max(mine, default=0) <= last_contact <= stored
            assert contacted[cache_writer.contact_for(int(last_contact))] == last_contact
            assert eps[0].last_success_unix == last_contact
