"""The LKG cache (mesh/cache.py) as the agent uses it: read once at start, then written
from a worker thread so that sqlite's commits never stall the tunnel.

Writes queue in order and go in batches, one thread at a time; `close` writes what
is still queued. A failed write is logged and dropped: the cache speeds recovery
up, and losing a write must not stop the VPN.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import trio

from ..config import Mesh, Node
from ..mesh.cache import FILE_NAME, CacheError, LkgCache
from ..node.effects import Contact, StoredRecord

log = logging.getLogger("whalescale.agent")

Addr = tuple[str, int]
Write = Callable[[LkgCache], None]
# Seqs for our own gossip records, reserved at each start (never handed out again): far
# more than a run publishes, and 2**31 starts fit the record's 63-bit seq.
SELF_SEQS_PER_START = 2**32


class CacheWriter:
    def __init__(self, cache: LkgCache, endpoints: dict[bytes, list[Addr]],
                 next_self_seq: int) -> None:
        self._cache = cache
        self.endpoints = endpoints  # by node ID, as read at start
        self.next_self_seq = next_self_seq
        self._reserved_end = next_self_seq + SELF_SEQS_PER_START  # the first seq not ours
        self._queue: list[Write] = []
        self._wake = trio.Event()

    @classmethod
    def open(cls, state_dir: Path, mesh: Mesh, me: Node) -> CacheWriter:
        """Open (a broken cache is moved aside, never fatal) and read what start-up needs."""
        cache = LkgCache.open(state_dir / FILE_NAME, recover=True)
        try:
            _follow_mesh(cache, mesh, me)
            endpoints = {n.public_key: [(e.host, e.port) for e in cache.endpoints(n.public_key)]
                         for n in mesh.nodes if n is not me}
            first_seq = cache.reserve_self_seqs(SELF_SEQS_PER_START)
        except BaseException:
            cache.close()
            raise
        known = sum(1 for found in endpoints.values() if found)
        log.info("last-known-good cache: endpoints for %d of %d peers", known, len(endpoints))
        return cls(cache, endpoints, first_seq)

    # ----- queued writes ------------------------------------------------------------------

    def record_contact(self, contact: Contact, at: float) -> None:
        self._enqueue(lambda c: c.record_contact(contact.peer_id, contact.host, contact.port,
                                                 contact.path_type, at))

    def store_record(self, record: StoredRecord) -> None:
        self._enqueue(lambda c: c.store_record(record.peer_id, list(record.endpoints),
                                               record.seq, record.self_attested))

    def keep_self_seq(self, seq: int) -> None:
        """We published our record at `seq`: beyond the seqs reserved at start (the mesh sent
        back a higher one of ours, mesh/gossip.py), reserve a block from it, so that the
        next start signs above it without asking the mesh again."""
        if seq < self._reserved_end:
            return
        self._reserved_end = seq + SELF_SEQS_PER_START
        last = self._reserved_end - 1
        self._enqueue(lambda c: c.raise_self_seq(last))

    def follow_mesh(self, mesh: Mesh, me: Node) -> None:
        """A reloaded mesh: its peers' names and roles; peers out of it are forgotten."""
        self._enqueue(lambda c: _follow_mesh(c, mesh, me))

    def _enqueue(self, write: Write) -> None:
        self._queue.append(write)
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            batch, self._queue = self._queue, []
            await trio.to_thread.run_sync(self._write, batch)

    def _write(self, batch: list[Write]) -> None:
        for write in batch:
            try:
                write(self._cache)
            except CacheError as exc:
                log.error("last-known-good cache: %s", exc)

    def close(self) -> None:
        batch, self._queue = self._queue, []
        self._write(batch)
        self._cache.close()


def _follow_mesh(cache: LkgCache, mesh: Mesh, me: Node) -> None:
    for node in mesh.nodes:
        if node is not me:
            cache.set_peer(node.public_key, node.name, node.anchor)
    kept = {n.public_key for n in mesh.nodes}
    for cached in cache.peers():
        if cached.peer_id not in kept:  # out of the mesh: forget where it was
            cache.forget_peer(cached.peer_id)
