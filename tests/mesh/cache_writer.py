"""Crash-test child: writes to an LKG cache in a tight loop until killed.

Usage: python -m tests.mesh.cache_writer CACHE_PATH

Each round takes seq = next_self_seq(), then for peer (seq % PEERS) stores a
self-attested record at that seq listing endpoints_for(seq), and records a contact
from contact_for(seq) at time seq. Only then it prints seq (flushed): every printed
seq is a round whose three transactions have all committed.
"""

from __future__ import annotations

import sys

from whalescale.mesh.cache import LkgCache, PathType

PEERS = 4


def peer_for(seq: int) -> bytes:
    return bytes([seq % PEERS + 1]) * 32


def endpoints_for(seq: int) -> list[tuple[str, int, PathType]]:
    return [(f"10.{seq >> 16 & 255}.{seq >> 8 & 255}.{seq & 255}", 1000 + seq % 50000,
             PathType.IPV4),
            (f"fd00::{seq:x}", 2000, PathType.IPV6)]


def contact_for(seq: int) -> tuple[str, int, PathType]:
    return f"192.168.{seq >> 8 & 255}.{seq & 255}", 51820, PathType.LAN


def main(path: str) -> None:
    with LkgCache.open(path) as cache:
        while True:
            seq = cache.next_self_seq()
            peer = peer_for(seq)
            cache.store_record(peer, endpoints_for(seq), seq, self_attested=True)
            cache.record_contact(peer, *contact_for(seq), now_unix=float(seq))
            sys.stdout.write(f"{seq}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
