"""The last-known-good (LKG) cache: what this node knows of its peers, kept on disk.

design.txt §3.6 "LKG Cache": every peer we have reached, with all its known
endpoints per path type and their sequence numbers, the last successful contact
and whether it is an anchor. Recovery (§3.8) walks this cache anchors first; a
packet that authenticates from a new endpoint updates it ("passive acceptance").

Theory of operation
-------------------
One SQLite file (`STATE_DIR/lkg.sqlite3`, mode 0600), WAL journal, every write one
transaction. An endpoint is an *address* `(host, port, path_type)` of a peer; it
is kept while at least one *source* vouches for it:

- SELF_ATTESTED: the peer's own signed gossip record (authoritative, §3.6);
- OBSERVED: a third party's gossip record about the peer (advisory);
- STATIC: the mesh file;
- AUTHENTICATED: an authenticated packet arrived from it (`record_contact`).

Gossip records replace the whole endpoint set of their source kind, and only when
their seq is newer than the newest seen for (peer, kind); the newest seq is kept
even when a record lists no endpoints, so an older record can never come back.
Last success belongs to the address, not the source: an address that worked is
kept (as AUTHENTICATED) when a later record drops it.

Wall-clock time is fine here: it orders endpoints for probing, never gossip.
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import attrs

from .records import PathType

log = logging.getLogger(__name__)

FILE_NAME = "lkg.sqlite3"
PEER_ID_BYTES = 32
_MAX_SEQ = 2**63 - 1  # SQLite INTEGER is signed 64-bit
_MAX_HOST_CHARS = 253  # a DNS name; any IP literal is shorter
_BUSY_TIMEOUT_S = 5.0


class CacheError(Exception):
    """The cache file cannot be used: corrupt, unreadable, or from a newer version."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class Source(enum.Enum):
    """Who vouches for an endpoint, most authoritative first (design.txt §3.6)."""

    SELF_ATTESTED = "self"
    AUTHENTICATED = "authenticated"
    STATIC = "static"
    OBSERVED = "observed"


# Among endpoints never reached, the order to try them in: self-attested wins (§3.6).
_SOURCE_RANK = {source: rank for rank, source in enumerate(Source)}
# Ties among equals: LAN first (no NAT, no hairpin), then IPv6 (preferred, §2, §3.7).
_PATH_RANK = {PathType.LAN: 0, PathType.IPV6: 1, PathType.IPV4: 2}
# Gossip record kinds whose newest seq is kept per peer.
_RECORD_SOURCES = (Source.SELF_ATTESTED, Source.OBSERVED)


@attrs.frozen(slots=True)
class CachedEndpoint:
    host: str
    port: int
    path_type: PathType
    sources: frozenset[Source]
    # seq of the gossip record that listed it: the self-attested one if any, else observed.
    seq: int | None
    last_success_unix: float | None

    @property
    def source(self) -> Source:
        """The most authoritative source vouching for this endpoint."""
        return min(self.sources, key=_SOURCE_RANK.__getitem__)


@attrs.frozen(slots=True)
class CachedPeer:
    peer_id: bytes
    name: str | None
    anchor: bool
    last_contact_unix: float | None


def endpoint_order_key(ep: CachedEndpoint) -> tuple[object, ...]:
    """Best first: most recent success, then self-attested by newest seq, then by source,
    then by path type."""
    never = ep.last_success_unix is None
    self_seq = ep.seq if Source.SELF_ATTESTED in ep.sources else None
    return (
        never,
        -(ep.last_success_unix or 0.0),
        self_seq is None,
        -(self_seq or 0),
        _SOURCE_RANK[ep.source],
        _PATH_RANK[ep.path_type],
        ep.host,
        ep.port,
    )


def peer_order_key(peer: CachedPeer) -> tuple[object, ...]:
    """Anchors first (§3.8 recovery starts with anchors), then most recent contact."""
    return (not peer.anchor, peer.last_contact_unix is None,
            -(peer.last_contact_unix or 0.0), peer.peer_id)


# --- Schema -------------------------------------------------------------------------
# MIGRATIONS[i] takes a database at user_version i to i + 1, inside one transaction
# (SQLite DDL and user_version are transactional). Append; never edit a shipped step.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE peer (
            peer_id BLOB PRIMARY KEY CHECK (length(peer_id) = 32),
            name TEXT,
            anchor INTEGER NOT NULL DEFAULT 0 CHECK (anchor IN (0, 1)),
            last_contact_unix REAL
        ) WITHOUT ROWID""",
        """CREATE TABLE address (
            peer_id BLOB NOT NULL REFERENCES peer (peer_id) ON DELETE CASCADE,
            host TEXT NOT NULL,
            port INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
            path_type TEXT NOT NULL CHECK (path_type IN ('ipv4', 'ipv6', 'lan')),
            last_success_unix REAL,
            PRIMARY KEY (peer_id, host, port, path_type)
        ) WITHOUT ROWID""",
        """CREATE TABLE vouch (
            peer_id BLOB NOT NULL,
            host TEXT NOT NULL,
            port INTEGER NOT NULL,
            path_type TEXT NOT NULL,
            source TEXT NOT NULL
                CHECK (source IN ('self', 'authenticated', 'static', 'observed')),
            seq INTEGER,
            PRIMARY KEY (peer_id, host, port, path_type, source),
            FOREIGN KEY (peer_id, host, port, path_type)
                REFERENCES address (peer_id, host, port, path_type) ON DELETE CASCADE
        ) WITHOUT ROWID""",
        """CREATE TABLE record (
            peer_id BLOB NOT NULL REFERENCES peer (peer_id) ON DELETE CASCADE,
            source TEXT NOT NULL CHECK (source IN ('self', 'observed')),
            seq INTEGER NOT NULL CHECK (seq >= 0),
            PRIMARY KEY (peer_id, source)
        ) WITHOUT ROWID""",
        """CREATE TABLE self_state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            last_self_seq INTEGER NOT NULL CHECK (last_self_seq >= 0)
        )""",
        "INSERT INTO self_state (id, last_self_seq) VALUES (1, 0)",
        "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


# --- Input checks: everything is checked before a transaction starts -----------------
def _check_peer_id(peer_id: object) -> bytes:
    if not isinstance(peer_id, bytes | bytearray) or len(peer_id) != PEER_ID_BYTES:
        raise ValueError(f"peer_id must be {PEER_ID_BYTES} bytes, got {peer_id!r:.80}")
    return bytes(peer_id)


def _check_path_type(path_type: object) -> PathType:
    try:
        return PathType(path_type)
    except ValueError:
        raise ValueError(f"path_type must be one of {[p.value for p in PathType]}, "
                         f"got {path_type!r:.40}") from None


def _check_port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer 1..65535, got {port!r:.40}")
    return port


def _check_seq(seq: object) -> int:
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= _MAX_SEQ:
        raise ValueError(f"seq must be an integer 0..2^63-1, got {seq!r:.40}")
    return seq


def _check_time(now_unix: object) -> float:
    if isinstance(now_unix, bool) or not isinstance(now_unix, int | float) \
            or not 0 <= now_unix < 2**53:
        raise ValueError(f"time must be a finite unix time >= 0, got {now_unix!r:.40}")
    return float(now_unix)


def _check_endpoint(host: object, port: object, path_type: object, *,
                    allow_hostname: bool) -> tuple[str, int, PathType]:
    """An IP literal (normalised, so one address has one spelling) of the right family.

    A LAN endpoint may be either family; hostnames only come from the mesh file.
    """
    kind = _check_path_type(path_type)
    port = _check_port(port)
    if not isinstance(host, str) or not host or len(host) > _MAX_HOST_CHARS:
        raise ValueError(f"host must be a non-empty string, got {host!r:.80}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is None:
        if not allow_hostname:
            raise ValueError(f"host must be an IP address, got {host!r:.80}")
        if not host.isascii() or not all(c.isalnum() or c in "-." for c in host):
            raise ValueError(f"host is neither an IP address nor a DNS name: {host!r:.80}")
        return host.lower(), port, kind
    if (kind is PathType.IPV4 and ip.version != 4) or (kind is PathType.IPV6 and ip.version != 6):
        raise ValueError(f"host {host} is not an {kind.value} address")
    return str(ip), port, kind


def _check_endpoints(endpoints: Iterable[tuple[str, int, PathType | str]], *,
                     allow_hostname: bool) -> set[tuple[str, int, PathType]]:
    checked = set()
    for entry in endpoints:
        if not isinstance(entry, tuple | list) or len(entry) != 3:
            raise ValueError(f"endpoint must be (host, port, path_type), got {entry!r:.80}")
        checked.add(_check_endpoint(*entry, allow_hostname=allow_hostname))
    return checked


class LkgCache:
    """The open cache. Use `LkgCache.open(path)` as a context manager.

    Not thread-safe; the agent owns one instance, used by one thread at a time.
    Callers should rate-limit `record_contact` (e.g. on a new endpoint, or once a
    minute per endpoint): each call is a committed transaction.
    """

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self._db = db

    # --- Opening ------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path | str, *, recover: bool = False) -> LkgCache:
        """Open or create the cache at `path` (a file, e.g. STATE_DIR/lkg.sqlite3).

        A corrupt, unreadable or too-new file raises CacheError; with recover=True it
        is moved aside to `<path>.corrupt-<n>` (with its -wal/-shm) and an empty cache
        is started instead, so a broken cache never stops the VPN.
        """
        path = Path(path)
        try:
            return cls(path, _connect(path))
        except CacheError as exc:
            if not recover:
                raise
            aside = _move_aside(path)
            log.warning("LKG cache %s is unusable (%s); moved it to %s and starting empty",
                        path, exc.reason, aside)
            return cls(path, _connect(path))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> LkgCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back whole if anything inside raises."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise CacheError(self.path, f"cannot start a transaction: {exc}") from exc
        try:
            yield self._db
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise CacheError(self.path, f"write failed: {exc}") from exc
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise CacheError(self.path, f"commit failed: {exc}") from exc

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise CacheError(self.path, f"read failed: {exc}") from exc

    # --- Writes -------------------------------------------------------------------
    def set_peer(self, peer_id: bytes, name: str | None, anchor: bool) -> None:
        """Name and anchor flag from the mesh file (informational; creates the peer)."""
        peer_id = _check_peer_id(peer_id)
        if name is not None and not isinstance(name, str):
            raise ValueError(f"name must be a string or None, got {name!r:.40}")
        if not isinstance(anchor, bool):
            raise ValueError(f"anchor must be a bool, got {anchor!r:.40}")
        with self._write() as db:
            db.execute(
                "INSERT INTO peer (peer_id, name, anchor) VALUES (?, ?, ?)"
                " ON CONFLICT (peer_id) DO UPDATE SET name = excluded.name,"
                " anchor = excluded.anchor",
                (peer_id, name, int(anchor)))

    def set_static_endpoints(self, peer_id: bytes,
                             endpoints: Sequence[tuple[str, int, PathType | str]]) -> None:
        """Replace the peer's endpoints from the mesh file (hostnames allowed)."""
        peer_id = _check_peer_id(peer_id)
        checked = _check_endpoints(endpoints, allow_hostname=True)
        with self._write() as db:
            _ensure_peer(db, peer_id)
            _replace_vouches(db, peer_id, Source.STATIC, checked, None)

    def record_contact(self, peer_id: bytes, host: str, port: int,
                       path_type: PathType | str, now_unix: float) -> None:
        """An authenticated packet arrived from host:port (§3.8 passive acceptance)."""
        peer_id = _check_peer_id(peer_id)
        host, port, kind = _check_endpoint(host, port, path_type, allow_hostname=False)
        now_unix = _check_time(now_unix)
        key = (peer_id, host, port, kind.value)
        with self._write() as db:
            _ensure_peer(db, peer_id)
            db.execute("UPDATE peer SET last_contact_unix = ? WHERE peer_id = ?",
                       (now_unix, peer_id))
            db.execute(
                "INSERT INTO address (peer_id, host, port, path_type, last_success_unix)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE"
                " SET last_success_unix = excluded.last_success_unix",
                (*key, now_unix))
            db.execute(
                "INSERT OR IGNORE INTO vouch (peer_id, host, port, path_type, source, seq)"
                " VALUES (?, ?, ?, ?, ?, NULL)", (*key, Source.AUTHENTICATED.value))

    def store_record(self, peer_id: bytes,
                     endpoints: Sequence[tuple[str, int, PathType | str]],
                     seq: int, self_attested: bool) -> bool:
        """Store a gossip record if its seq is newer than any of its kind for the peer.

        Returns False (and changes nothing) for a record no newer than the stored
        one: an older seq never replaces a newer one. Signatures are checked by the
        caller before this.
        """
        peer_id = _check_peer_id(peer_id)
        seq = _check_seq(seq)
        if not isinstance(self_attested, bool):
            raise ValueError(f"self_attested must be a bool, got {self_attested!r:.40}")
        checked = _check_endpoints(endpoints, allow_hostname=False)
        source = Source.SELF_ATTESTED if self_attested else Source.OBSERVED
        with self._write() as db:
            row = db.execute("SELECT seq FROM record WHERE peer_id = ? AND source = ?",
                             (peer_id, source.value)).fetchone()
            if row is not None and row[0] >= seq:
                return False
            _ensure_peer(db, peer_id)
            db.execute(
                "INSERT INTO record (peer_id, source, seq) VALUES (?, ?, ?)"
                " ON CONFLICT DO UPDATE SET seq = excluded.seq",
                (peer_id, source.value, seq))
            _replace_vouches(db, peer_id, source, checked, seq)
        return True

    def forget_peer(self, peer_id: bytes) -> None:
        peer_id = _check_peer_id(peer_id)
        with self._write() as db:
            db.execute("DELETE FROM peer WHERE peer_id = ?", (peer_id,))

    def next_self_seq(self) -> int:
        """The next seq for our own self-attested record: strictly increasing for the
        life of this file, across restarts and crashes."""
        return self.reserve_self_seqs(1)

    def reserve_self_seqs(self, count: int) -> int:
        """The first of `count` seqs for our own records, none ever handed out again.
        Committed before returning, with a full sync (see _connect)."""
        last = self._update_self_seq("last_self_seq + ?", count)
        return last - count + 1

    def raise_self_seq(self, at_least: int) -> None:
        """Hand out no seq up to `at_least` any more (one the mesh held for us, and those
        reserved above it; past 2^63-1, up to that); a lower value changes nothing. Fully
        synced like reserving."""
        self._update_self_seq("max(last_self_seq, ?)", _check_seq(min(at_least, _MAX_SEQ)))

    def _update_self_seq(self, expression: str, value: int) -> int:
        try:
            try:
                self._db.execute("PRAGMA synchronous = FULL")
            except sqlite3.Error as exc:
                raise CacheError(self.path, f"cannot set synchronous: {exc}") from exc
            with self._write() as db:
                (last,) = db.execute(
                    f"UPDATE self_state SET last_self_seq = {expression}"
                    " WHERE id = 1 RETURNING last_self_seq", (value,)).fetchone()
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA synchronous = NORMAL")
        return last

    def set_state(self, key: str, value: str | None) -> None:
        """Small key/value state for the agent; None deletes the key."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty string, got {key!r:.40}")
        if value is not None and not isinstance(value, str):
            raise ValueError(f"value must be a string or None, got {value!r:.40}")
        with self._write() as db:
            if value is None:
                db.execute("DELETE FROM kv WHERE key = ?", (key,))
            else:
                db.execute("INSERT INTO kv (key, value) VALUES (?, ?)"
                           " ON CONFLICT DO UPDATE SET value = excluded.value", (key, value))

    # --- Reads --------------------------------------------------------------------
    def get_state(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM kv WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def record_seq(self, peer_id: bytes, self_attested: bool) -> int | None:
        """The newest gossip seq stored for the peer of that kind, or None."""
        peer_id = _check_peer_id(peer_id)
        source = Source.SELF_ATTESTED if self_attested else Source.OBSERVED
        rows = self._read("SELECT seq FROM record WHERE peer_id = ? AND source = ?",
                          (peer_id, source.value))
        return rows[0][0] if rows else None

    def peer(self, peer_id: bytes) -> CachedPeer | None:
        peer_id = _check_peer_id(peer_id)
        rows = self._read("SELECT peer_id, name, anchor, last_contact_unix FROM peer"
                          " WHERE peer_id = ?", (peer_id,))
        return _peer_from_row(rows[0]) if rows else None

    def peers(self) -> list[CachedPeer]:
        """Every cached peer: anchors first, then by last contact, most recent first."""
        rows = self._read("SELECT peer_id, name, anchor, last_contact_unix FROM peer")
        return sorted(map(_peer_from_row, rows), key=peer_order_key)

    def endpoints(self, peer_id: bytes) -> list[CachedEndpoint]:
        """The peer's known endpoints, best first (see endpoint_order_key)."""
        peer_id = _check_peer_id(peer_id)
        rows = self._read(
            "SELECT a.host, a.port, a.path_type, a.last_success_unix, v.source, v.seq"
            " FROM address a JOIN vouch v USING (peer_id, host, port, path_type)"
            " WHERE a.peer_id = ?", (peer_id,))
        merged: dict[tuple[str, int, str], tuple[float | None, dict[Source, int | None]]] = {}
        for host, port, path_type, last_success, source, seq in rows:
            merged.setdefault((host, port, path_type), (last_success, {}))[1][
                Source(source)] = seq
        found = []
        for (host, port, path_type), (last_success, vouches) in merged.items():
            seq = vouches.get(Source.SELF_ATTESTED, vouches.get(Source.OBSERVED))
            found.append(CachedEndpoint(host, port, PathType(path_type),
                                        frozenset(vouches), seq, last_success))
        return sorted(found, key=endpoint_order_key)

    def integrity_check(self) -> str:
        """SQLite's own verdict on the file: "ok" or the problems it found."""
        return "\n".join(row[0] for row in self._read("PRAGMA integrity_check"))



def _peer_from_row(row: tuple) -> CachedPeer:
    peer_id, name, anchor, last_contact = row
    return CachedPeer(bytes(peer_id), name, bool(anchor), last_contact)


def _ensure_peer(db: sqlite3.Connection, peer_id: bytes) -> None:
    db.execute("INSERT OR IGNORE INTO peer (peer_id) VALUES (?)", (peer_id,))


def _replace_vouches(db: sqlite3.Connection, peer_id: bytes, source: Source,
                     endpoints: set[tuple[str, int, PathType]], seq: int | None) -> None:
    """Make `source` vouch for exactly `endpoints`; drop addresses nobody vouches for."""
    db.execute("DELETE FROM vouch WHERE peer_id = ? AND source = ?", (peer_id, source.value))
    for host, port, kind in endpoints:
        key = (peer_id, host, port, kind.value)
        db.execute("INSERT OR IGNORE INTO address (peer_id, host, port, path_type)"
                   " VALUES (?, ?, ?, ?)", key)
        db.execute("INSERT INTO vouch (peer_id, host, port, path_type, source, seq)"
                   " VALUES (?, ?, ?, ?, ?, ?)", (*key, source.value, seq))
    db.execute("DELETE FROM address WHERE peer_id = ? AND NOT EXISTS (SELECT 1 FROM vouch v"
               " WHERE v.peer_id = address.peer_id AND v.host = address.host"
               " AND v.port = address.port AND v.path_type = address.path_type)", (peer_id,))


# --- Files --------------------------------------------------------------------------
def _connect(path: Path) -> sqlite3.Connection:
    """Open, check and migrate the database; CacheError if it cannot be used."""
    _create_private(path)
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=_BUSY_TIMEOUT_S,
                             check_same_thread=False)
    except sqlite3.Error as exc:
        raise CacheError(path, f"cannot open: {exc}") from exc
    try:
        # Read-only checks first: a file we refuse must be left as we found it.
        verdict = [row[0] for row in db.execute("PRAGMA quick_check")]
        if verdict != ["ok"]:
            raise CacheError(path, "corrupt: " + "; ".join(verdict[:5]))
        _check_version(path, db)
        # Durability (kill -9 at any moment must neither corrupt nor lose a commit):
        # WAL appends each commit to lkg.sqlite3-wal with write(2) before COMMIT
        # returns; once write(2) returns the data is in the kernel's page cache and
        # survives the death of this process, so synchronous=NORMAL is enough
        # against process crashes. NORMAL only skips the fsync at each commit (WAL
        # is synced at checkpoints): on power loss or a kernel crash the commits
        # since the last checkpoint may be rolled back, but the file stays
        # consistent (WAL frames are checksummed; a torn tail is ignored). Losing a
        # few endpoint updates is harmless for a cache, re-learned at the next
        # contact. Losing a handed-out self seq is not (peers would ignore our
        # records until the seq passes the lost one), so next_self_seq commits with
        # synchronous=FULL. FULL everywhere would cost an fsync per contact.
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise CacheError(path, f"cannot use WAL journal mode (got {mode!r})")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        _migrate(path, db)
    except sqlite3.Error as exc:
        db.close()
        raise CacheError(path, f"unusable database: {exc}") from exc
    except CacheError:
        db.close()
        raise
    return db


def _check_version(path: Path, db: sqlite3.Connection) -> None:
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise CacheError(path, f"schema version {version} is newer than this program's "
                               f"{SCHEMA_VERSION}")
    if version == 0 and db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
        raise CacheError(path, "has tables but no schema version: not an LKG cache")


def _migrate(path: Path, db: sqlite3.Connection) -> None:
    (version,) = db.execute("PRAGMA user_version").fetchone()
    for step in range(version, SCHEMA_VERSION):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[step]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {step + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if step:
            log.info("LKG cache %s migrated to schema version %d", path, step + 1)


def _create_private(path: Path) -> None:
    """Create the file 0600 before SQLite does (its -wal/-shm copy the file's mode).

    An existing file (and its -wal/-shm) is made 0600 too: it holds where peers are.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.chmod(f"{path}{suffix}", 0o600)
        return
    except OSError as exc:
        raise CacheError(path, f"cannot create: {exc.strerror}") from exc
    os.close(fd)
    # Make the new name itself durable, so a power loss cannot drop the whole file.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _move_aside(path: Path) -> Path:
    """Rename path (and its -wal, -shm) to the first free `<path>.corrupt-<n>`.

    A -wal must not stay behind to be replayed into the new file. (SQLite usually
    removes it already when the failed connection closes.)
    """
    n = 1
    while Path(f"{path}.corrupt-{n}").exists():
        n += 1
    aside = Path(f"{path}.corrupt-{n}")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    return aside
