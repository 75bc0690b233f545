"""Gossip of endpoint records over the mesh, sans-I/O (design.txt §3.6, §3.8).

Theory of operation (aioquic's shape, like session/engine.py):
- The agent feeds `receive(from_id, payload, now)` with the gossip payloads its
  neighbours (peers with an active session) sent, and tells the node who they
  are with `set_neighbours(ids, now)`. It drains `outbox` ((to_id, payload)
  pairs) and calls `handle_timer(now)` at `next_deadline()`.
- Its own endpoints go out with `publish_self(endpoints, now)`; the seq comes
  from the injected `next_seq()` (the LKG cache persists it). Nothing here
  reads a clock: `now` orders timers only, never records (anti-patterns 2.3).
- `current(peer)` is the peer's authoritative self-attested record; `hints(peer)`
  the advisory observations third parties signed (anti-patterns 3.3).
- Every record or payload not taken is counted in `counters` under a reason;
  nothing from the network raises out of `receive`.

Rules for records (§3.6 "Conflict Resolution"):
- only records about members, signed by members, are considered;
- a self-attested record must be signed by its peer, and orders by seq only;
- an observation is stored apart, newest seq per (signer, peer): it never
  replaces or moves a self-attested endpoint;
- a record about ourselves from anyone else is ignored; one we signed, with a seq
  at or above ours, says we lost our state (below, "Our own seq");
- an equal seq with different content keeps the first (the signer equivocated).

Propagation (anti-patterns 2.4): a newly accepted record is pushed to `fanout`
random neighbours not known to hold it (rumour push); pushes are coalesced in
UPDATE messages and paced per neighbour by a token bucket. Anti-entropy repairs
what the push missed and joins split segments (anti-patterns 3.2): a DIGEST of
16 bucket hashes over the sorted (peer_id, seq) of self-attested records goes
out once per interval (first the root alone, 13 bytes; the buckets only when
the roots differ); the interval is Trickle-like (RFC 6206):
`anti_entropy_min_s` after a change, doubling to the seeds' 300 s while nothing
changes. After a change the DIGEST goes to every neighbour not known to hold
what changed (so a hub's leaves, which the bounded push skipped, catch up in
one interval); otherwise to one random neighbour. A differing DIGEST is
answered by the bucket hashes, differing buckets by a SUMMARY of them; whoever
receives the SUMMARY pushes what the other lacks and REQUESTs what it lacks.

Our own seq: the shell's counter restarts low when the LKG cache is lost (a
wiped state dir), while the mesh still holds our record at a higher seq and
would ignore every new one as `replayed_or_older`. So each neighbour, when it
first connects in a run, gets a REQUEST for our own record (any release answers
it); a SUMMARY showing a higher seq for us is answered by the same REQUEST. A
record of ours at or above our seq comes back signed by us: we take its seq as
our floor and republish our endpoints above it at once (at most once per
`own_republish_spacing_s`, so two nodes run with one key cannot outbid each
other at gossip speed).

The wire format of the payloads is in gossip_messages.py.
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from collections.abc import Callable, Iterable

import attrs

from ..identity import Identity
from ..session.ratelimit import TokenBuckets
from . import records
from .gossip_messages import (
    BUCKET_HASH_BYTES,
    BUCKETS,
    DIGEST_PERSON,
    ENTRY,
    MAX_PAYLOAD_BYTES,
    MAX_REQUEST_IDS,
    MAX_SUMMARY_ENTRIES,
    Digest,
    MalformedMessage,
    MessageType,
    Request,
    Summary,
    Update,
    bucket_of,
    decode_message,
    encode_digest,
    encode_request,
    encode_summary,
)
from .records import EndpointRecord, GossipEndpoint

# ----- implementation --------------------------------------------------------
_MAX_QUEUED_CONTROL = 64  # per neighbour; beyond it the oldest control message goes


@attrs.frozen(slots=True)
class GossipParams:
    fanout: int = 3
    # Accepted from each neighbour; a neighbour's own pacing stays well inside it.
    receive_rate_per_s: float = 10.0
    receive_burst: float = 20.0
    send_rate_per_s: float = 5.0
    send_burst: float = 10.0
    # New records accepted from one signer (its own or its observations): bounds
    # what a member flooding records can make the whole mesh forward.
    signer_rate_per_s: float = 1.0
    signer_burst: float = 10.0
    anti_entropy_interval_s: float = 300.0  # seeds §3.6: "every 5 minutes"
    anti_entropy_min_s: float = 2.0  # after a change; lets the push wave pass first
    jitter: float = 0.25  # timers wait interval * (1 + jitter * U[0, 1))
    first_exchange_s: float = 1.0  # DIGEST to a newly connected neighbour
    own_republish_spacing_s: float = 30.0  # between republishes above a returned record


@attrs.define
class _Outgoing:
    """What waits to go to one neighbour: control messages, then records."""

    control: deque[bytes] = attrs.Factory(lambda: deque(maxlen=_MAX_QUEUED_CONTROL))
    records: dict[tuple[bytes, bytes], bytes] = attrs.Factory(dict)  # (peer, signer) -> wire
    retry_at: float | None = None

    def __bool__(self) -> bool:
        return bool(self.control or self.records)

    def next_payload(self) -> bytes:
        if self.control:
            return self.control.popleft()
        parts, size = [], 2
        for key, wire in list(self.records.items()):
            if size + len(wire) > MAX_PAYLOAD_BYTES or len(parts) == 255:
                break
            parts.append(wire)
            size += len(wire)
            del self.records[key]
        return bytes((MessageType.UPDATE, len(parts))) + b"".join(parts)


class GossipNode:
    def __init__(self, identity: Identity, members: Iterable[bytes], *,
                 random_bytes: Callable[[int], bytes], next_seq: Callable[[], int],
                 params: GossipParams | None = None,
                 verify_record: Callable[[EndpointRecord], bool] = records.verify) -> None:
        self.identity = identity
        self.id = identity.public
        self.params = params or GossipParams()
        self._random_bytes = random_bytes
        self._next_seq = next_seq
        self._verify = verify_record
        self.members: frozenset[bytes] = frozenset(members) | {self.id}
        self.outbox: list[tuple[bytes, bytes]] = []
        self.counters: Counter[str] = Counter()
        self.log_lines: list[str] = []  # for the node's log, drained by it
        # peer -> signer -> (record, its bytes); signer == peer is the self-attested one
        self._records: dict[bytes, dict[bytes, tuple[EndpointRecord, bytes]]] = {}
        self._bucket_hashes: list[bytes | None] = [None] * BUCKETS  # None: recompute
        self._neighbours: list[bytes] = []  # sorted, so choices do not depend on hashing
        self._known: dict[bytes, dict[bytes, int]] = {}  # neighbour -> peer -> seq it holds
        self._outgoing: dict[bytes, _Outgoing] = {}
        self._first_exchange_at: dict[bytes, float] = {}
        self._interval_s = self.params.anti_entropy_interval_s
        self._digest_at = float("inf")
        self._changed: set[bytes] = set()  # peers whose record changed since the last digest
        self._observed: dict[bytes, list[GossipEndpoint]] = {}  # what we saw, newest first
        self._own_seq = 0  # the highest seq we know we signed, this run or before it
        self._asked_own: set[bytes] = set()  # neighbours asked for our record this run
        self._republish_at: float | None = None  # a paced republish above a returned seq
        self._republish_not_before = float("-inf")
        p = self.params
        self._receive_budget = TokenBuckets(p.receive_rate_per_s, p.receive_burst)
        self._send_budget = TokenBuckets(p.send_rate_per_s, p.send_burst)
        self._signer_budget = TokenBuckets(p.signer_rate_per_s, p.signer_burst)

    # ----- queries ---------------------------------------------------------

    def current(self, peer_id: bytes) -> EndpointRecord | None:
        stored = self._records.get(peer_id, {}).get(peer_id)
        return stored[0] if stored else None

    def hints(self, peer_id: bytes) -> list[EndpointRecord]:
        return [record for signer, (record, _) in sorted(self._records.get(peer_id, {}).items())
                if signer != peer_id]

    @property
    def neighbours(self) -> frozenset[bytes]:
        return frozenset(self._neighbours)

    def digest(self) -> Digest:
        for i, cached in enumerate(self._bucket_hashes):
            if cached is None:
                h = hashlib.blake2b(digest_size=BUCKET_HASH_BYTES, person=DIGEST_PERSON)
                for peer_id, seq in self._bucket_entries(i):
                    h.update(ENTRY.pack(peer_id, seq))
                self._bucket_hashes[i] = h.digest()
        count = sum(1 for peer_id, by_signer in self._records.items() if peer_id in by_signer)
        return Digest(count, tuple(h for h in self._bucket_hashes if h is not None))

    def _bucket_entries(self, bucket: int) -> list[tuple[bytes, int]]:
        return sorted((peer_id, by_signer[peer_id][0].seq)
                      for peer_id, by_signer in self._records.items()
                      if bucket_of(peer_id) == bucket and peer_id in by_signer)

    # ----- configuration ---------------------------------------------------

    def set_members(self, members: Iterable[bytes]) -> None:
        """The mesh file changed: forget everything about or signed by a removed node."""
        self.members = frozenset(members) | {self.id}
        for peer_id in list(self._records):
            if peer_id not in self.members:
                del self._records[peer_id]
                continue
            by_signer = self._records[peer_id]
            for signer in [s for s in by_signer if s not in self.members]:
                del by_signer[signer]
        self._bucket_hashes = [None] * BUCKETS
        self._observed = {k: v for k, v in self._observed.items() if k in self.members}

    def set_neighbours(self, ids: Iterable[bytes], now: float) -> None:
        """The members we have an active session with; a new one gets a quick exchange."""
        wanted = set(ids)
        if strangers := wanted - self.members:
            raise ValueError(f"{len(strangers)} neighbour(s) not in the mesh")
        wanted.discard(self.id)
        for gone in set(self._neighbours) - wanted:
            self._known.pop(gone, None)
            self._outgoing.pop(gone, None)
            self._first_exchange_at.pop(gone, None)
        for new in sorted(wanted - set(self._neighbours)):
            self._known[new] = {}
            self._outgoing[new] = _Outgoing()
            self._first_exchange_at[new] = now + self._jittered(self.params.first_exchange_s)
            if new not in self._asked_own:  # does it hold ours above our seq? (Our own seq)
                self._asked_own.add(new)
                self._send_control(new, encode_request(Request((self.id,))))
        self._neighbours = sorted(wanted)
        if self._neighbours and self._digest_at == float("inf"):
            self._digest_at = now + self._jittered(self._interval_s)
        self._flush(now)

    def restore(self, saved: Iterable[EndpointRecord]) -> None:
        """Records from the LKG cache at start-up: checked like any other, not forwarded."""
        for record in saved:
            if record.peer_id == self.id and record.self_attested:
                own = self.current(self.id)
                if self._verify(record) and (own is None or record.seq > own.seq):
                    self._store(record, records.encode_record(record))
                    self._own_seq = max(self._own_seq, record.seq)
                continue
            self._accept(None, record, records.encode_record(record), now=None)

    # ----- local events ----------------------------------------------------

    def publish_self(self, endpoints: Iterable[GossipEndpoint], now: float) -> EndpointRecord:
        """Sign and spread our endpoints under the next seq (above any of ours we know of);
        the caller persists it."""
        self._republish_at = None  # whatever was due goes out now
        record = records.sign_self(self.identity, tuple(endpoints), self._new_seq())
        self._spread(record, records.encode_record(record), None, now)
        self._flush(now)
        return record

    def _new_seq(self) -> int:
        """The shell's next seq, or above a seq of ours the mesh sent back if that is higher."""
        self._own_seq = max(self._next_seq(), self._own_seq + 1)
        return self._own_seq

    def _own_record_returned(self, record: EndpointRecord, now: float | None) -> None:
        """A record we signed, at or above our seq, came back: we lost our state. Publish
        above it, paced (Our own seq); before our first publish, only note the floor."""
        if record.seq >= records.MAX_SEQ:
            self.counters["own_seq_exhausted"] += 1  # nothing above it to sign with
            return
        self.counters["own_seq_returned"] += 1
        self._own_seq = max(self._own_seq, record.seq)
        if self.current(self.id) is None or now is None:
            return
        self.log_lines.append(f"the mesh holds our record at seq {record.seq} (was our state "
                              f"lost?); publishing above it")
        self._republish_at = max(now, self._republish_not_before)
        if now >= self._republish_at:
            self._republish(now)

    def _republish(self, now: float) -> None:
        own = self.current(self.id)
        if own is not None:
            self.publish_self(own.endpoints, now)
            self._republish_not_before = now + self.params.own_republish_spacing_s

    def observe(self, peer_id: bytes, endpoint: GossipEndpoint,
                now: float) -> EndpointRecord | None:
        """We saw `peer_id` at `endpoint` (an authenticated packet, §3.8): sign and spread
        an observation listing the endpoints we saw it at, newest first. None when
        `endpoint` is already the newest we reported."""
        if peer_id not in self.members or peer_id == self.id:
            raise ValueError("observations are about other members")
        seen = self._observed.setdefault(peer_id, [])
        if seen and seen[0] == endpoint:
            return None
        seen[:] = [endpoint, *(e for e in seen if e != endpoint)][: records.MAX_ENDPOINTS]
        record = records.sign_observation(self.identity, peer_id, seen, self._new_seq())
        self._spread(record, records.encode_record(record), None, now)
        self._flush(now)
        return record

    # ----- from the network ------------------------------------------------

    def receive(self, from_id: bytes, payload: bytes, now: float) -> None:
        if from_id not in self.members or from_id == self.id:
            self.counters["unknown_neighbour"] += 1
            return
        if not self._receive_budget.take(from_id.hex(), now):
            self.counters["rate_limited"] += 1
            return
        try:
            message = decode_message(payload)
        except MalformedMessage:
            self.counters["malformed"] += 1
            return
        match message:
            case Update():
                for record, wire in message.records:
                    if self._accept(from_id, record, wire, now):
                        self._spread(record, wire, from_id, now)
            case Digest():
                self._on_digest(from_id, message)
            case Summary():
                self._on_summary(from_id, message)
            case Request():
                self._on_request(from_id, message)
        self._flush(now)

    def _accept(self, from_id: bytes | None, record: EndpointRecord, wire: bytes,
                now: float | None) -> bool:
        """Check one record against the rules; store it and return True if it is news.
        `now` is None for records from our own cache, which no signer budget limits."""
        peer_id, signer = record.peer_id, record.signer
        stored = self._records.get(peer_id, {}).get(signer)
        if stored is not None and stored[1] == wire:
            self.counters["duplicate"] += 1  # the common case in gossip; verified before
            self._note_known(from_id, record)
            return False
        reason = None
        if peer_id not in self.members:
            reason = "unknown_peer"
        elif signer not in self.members:
            reason = "unknown_signer"
        elif record.self_attested and signer != peer_id:
            reason = "forged_self_attestation"
        elif peer_id == self.id:
            reason = "about_self"  # we are the authority on ourselves
            own = self.current(self.id)
            if record.self_attested and (own is None or record.seq >= own.seq) \
                    and self._verify(record):
                self._own_record_returned(record, now)  # counted there
                return False
        elif not self._verify(record):
            reason = "bad_signature"
        elif stored is not None and record.seq < stored[0].seq:
            reason = "replayed_or_older"
        elif stored is not None and record.seq == stored[0].seq:
            reason = "conflicting_same_seq"  # keep the first
        elif now is not None and not self._signer_budget.take(signer.hex(), now):
            reason = "signer_rate_limited"
        if reason is not None:
            self.counters[reason] += 1
            if reason in ("replayed_or_older", "conflicting_same_seq"):
                self._note_known(from_id, record)
            return False
        self._note_known(from_id, record)
        self._store(record, wire)
        if now is None:
            self.counters["restored"] += 1
        else:
            self.counters["accepted" if record.self_attested else "accepted_hint"] += 1
        return True

    def _store(self, record: EndpointRecord, wire: bytes) -> None:
        self._records.setdefault(record.peer_id, {})[record.signer] = (record, wire)
        if record.self_attested:
            self._bucket_hashes[bucket_of(record.peer_id)] = None

    def _note_known(self, neighbour: bytes | None, record: EndpointRecord) -> None:
        known = self._known.get(neighbour) if neighbour is not None else None
        if known is not None and record.self_attested:
            known[record.peer_id] = max(known.get(record.peer_id, -1), record.seq)

    def _spread(self, record: EndpointRecord, wire: bytes, came_from: bytes | None,
                now: float) -> None:
        """Store news (if not yet stored) and push it to `fanout` neighbours that lack it."""
        self._store(record, wire)
        peer_id = record.peer_id
        candidates = [n for n in self._neighbours if n not in (came_from, peer_id)
                      and not (record.self_attested
                               and self._known[n].get(peer_id, -1) >= record.seq)]
        for n in self._sample(candidates, self.params.fanout):
            self._queue_record(n, record, wire)
        if record.self_attested:
            self._changed.add(peer_id)
            self._anti_entropy_soon(now)

    def _queue_record(self, neighbour: bytes, record: EndpointRecord, wire: bytes) -> None:
        self._outgoing[neighbour].records[record.peer_id, record.signer] = wire
        self._note_known(neighbour, record)

    # ----- anti-entropy ----------------------------------------------------

    def _anti_entropy_soon(self, now: float) -> None:
        """Something changed: digests come quickly again (Trickle's reset)."""
        self._interval_s = self.params.anti_entropy_min_s
        if self._neighbours:
            self._digest_at = min(self._digest_at, now + self._jittered(self._interval_s))

    def _send_digest(self, neighbour: bytes, *, buckets: bool = False) -> None:
        mine = self.digest()
        self._send_control(neighbour, encode_digest(
            mine if buckets else Digest(mine.count, (mine.root,))))

    def _on_digest(self, from_id: bytes, theirs: Digest) -> None:
        self._first_exchange_at.pop(from_id, None)  # they started the exchange
        mine = self.digest()
        if len(theirs.hashes) == 1 and theirs.root != mine.root:
            self._send_digest(from_id, buckets=True)  # show where we differ
            return
        differing = [i for i in range(len(theirs.hashes))
                     if len(theirs.hashes) == BUCKETS and mine.hashes[i] != theirs.hashes[i]]
        if not differing:
            known = self._known.get(from_id)
            if known is not None:  # they hold exactly what we hold
                for peer_id, by_signer in self._records.items():
                    if peer_id in by_signer:
                        known[peer_id] = by_signer[peer_id][0].seq
            return
        message_entries: list[tuple[bytes, int]] = []
        complete = 0
        for bucket in differing:
            entries = self._bucket_entries(bucket)
            if len(message_entries) + len(entries) > MAX_SUMMARY_ENTRIES and message_entries:
                self._send_control(from_id, encode_summary(Summary(complete,
                                                                   tuple(message_entries))))
                message_entries, complete = [], 0
            if len(entries) <= MAX_SUMMARY_ENTRIES:
                complete |= 1 << bucket
            message_entries += entries[:MAX_SUMMARY_ENTRIES]
        self._send_control(from_id, encode_summary(Summary(complete, tuple(message_entries))))

    def _on_summary(self, from_id: bytes, summary: Summary) -> None:
        known = self._known.get(from_id)
        wanted: list[bytes] = []
        listed: set[bytes] = set()
        for peer_id, seq in summary.entries:
            if peer_id not in self.members:
                self.counters["unknown_peer"] += 1
                continue
            listed.add(peer_id)
            if known is not None:
                known[peer_id] = max(known.get(peer_id, -1), seq)
            own = self.current(peer_id)
            if own is None or seq > own.seq:
                wanted.append(peer_id)  # ours too: a higher seq of ours (Our own seq)
            elif seq < own.seq and peer_id != from_id:
                self._push_current(from_id, peer_id)
        for bucket in range(BUCKETS):
            if summary.complete & (1 << bucket):
                for peer_id, _ in self._bucket_entries(bucket):
                    if peer_id not in listed and peer_id != from_id:
                        self._push_current(from_id, peer_id)
        for i in range(0, len(wanted), MAX_REQUEST_IDS):
            self._send_control(from_id, encode_request(Request(tuple(
                wanted[i : i + MAX_REQUEST_IDS]))))

    def _on_request(self, from_id: bytes, request: Request) -> None:
        for peer_id in request.peer_ids:
            if peer_id in self.members and self.current(peer_id) is not None:
                self._push_current(from_id, peer_id)

    def _push_current(self, neighbour: bytes, peer_id: bytes) -> None:
        if neighbour in self._outgoing:
            record, wire = self._records[peer_id][peer_id]
            self._queue_record(neighbour, record, wire)

    # ----- timers and pacing -----------------------------------------------

    def next_deadline(self) -> float | None:
        times = [t for n, q in self._outgoing.items() if q and (t := q.retry_at) is not None]
        times += self._first_exchange_at.values()
        if self._republish_at is not None:
            times.append(self._republish_at)
        if self._neighbours:
            times.append(self._digest_at)
        return min(times, default=None)

    def handle_timer(self, now: float) -> None:
        if self._republish_at is not None and now >= self._republish_at:
            self._republish(now)
        for neighbour, at in list(self._first_exchange_at.items()):
            if at <= now:
                del self._first_exchange_at[neighbour]
                self._send_digest(neighbour)
        if now >= self._digest_at:
            targets = self._owed_neighbours()
            if not targets and self._neighbours:
                targets = self._sample(self._neighbours, 1)
            self._changed.clear()
            for neighbour in targets:
                self._send_digest(neighbour)
            self._interval_s = min(2 * self._interval_s, self.params.anti_entropy_interval_s)
            self._digest_at = now + self._jittered(self._interval_s)
        self._flush(now)

    def _owed_neighbours(self) -> list[bytes]:
        """Neighbours that may lack a record that changed since our last digest."""
        changed = [(p, self._records[p][p][0].seq) for p in self._changed
                   if p in self._records and p in self._records[p]]
        return [n for n in self._neighbours
                if any(p != n and self._known[n].get(p, -1) < seq for p, seq in changed)]

    def _send_control(self, neighbour: bytes, payload: bytes) -> None:
        queue = self._outgoing.get(neighbour)
        if queue is None:
            return  # no session any more; anti-entropy will catch up later
        if len(queue.control) == queue.control.maxlen:
            self.counters["send_queue_full"] += 1
        queue.control.append(payload)

    def _flush(self, now: float) -> None:
        """Send what the per-neighbour token buckets allow; the rest waits for a token."""
        for neighbour in self._neighbours:
            queue = self._outgoing[neighbour]
            if not queue or (queue.retry_at is not None and now < queue.retry_at):
                continue
            queue.retry_at = None
            while queue:
                if not self._send_budget.take(neighbour.hex(), now):
                    queue.retry_at = now + 1.0 / self.params.send_rate_per_s
                    break
                self.outbox.append((neighbour, queue.next_payload()))

    # ----- randomness (injected) -------------------------------------------

    def _random_below(self, n: int) -> int:
        return int.from_bytes(self._random_bytes(4), "big") % n

    def _sample(self, items: list[bytes], k: int) -> list[bytes]:
        pool = list(items)
        for i in range(min(k, len(pool))):
            j = i + self._random_below(len(pool) - i)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]

    def _jittered(self, seconds: float) -> float:
        fraction = int.from_bytes(self._random_bytes(2), "big") / 65536
        return seconds * (1.0 + self.params.jitter * fraction)
