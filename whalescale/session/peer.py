"""The WireGuard state of one peer: its keypairs, its handshake and its timers.

Theory of operation (whitepaper §5.4, §6; wireguard-go's timers.go):
- A peer holds up to three keypairs. `current` sends; `previous` still
  receives for a while after a rotation; `next` is a responder's keypair that
  becomes current only once the initiator used it (key confirmation).
- Timers are absolute deadlines (`None` = disarmed), named after what they
  do; hooks named after protocol events arm and disarm them. The engine asks
  `next_deadline()` and calls `on_timer(now)` when it passes. Nothing here
  reads a clock.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from ..multipath.link import MultipathLink, Outgoing
from ..wire import control
from . import events
from .cookie import CookieGenerator
from .endpoints import Candidates
from .handshake import InitiatorHandshake, TransportKeys
from .keypair import Keypair
from .timers import (
    INITIATION_COPIES,
    INITIATION_COPY_EVERY_S,
    KEEPALIVE_ASSUMED_S,
    KEEPALIVE_TIMEOUT_S,
    MAX_HANDSHAKE_ATTEMPTS,
    MAX_STAGED_PACKETS,
    REACHABLE_WITHIN_KEEPALIVES,
    RECOVERY_FIRST_S,
    RECOVERY_LATER_STEPS,
    RECOVERY_MAX_S,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_S,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_S,
    REKEY_ON_RECEIVE_AFTER_S,
    REKEY_TIMEOUT_S,
    STREAM_STEADY_PACKETS,
    STREAM_WINDOW_S,
    UNANSWERED_S,
    ZERO_KEYS_AFTER_S,
)

if TYPE_CHECKING:
    from .engine import Engine, PeerSpec

Addr = tuple[str, int]


class Peer:
    def __init__(self, spec: PeerSpec, engine: Engine) -> None:
        self.spec = spec
        self.name = spec.name
        self._engine = engine
        self.cookies = CookieGenerator(spec.static_public)
        self._cookie_retry_at = float("-inf")
        self.copy_initiation_at: float | None = None
        self._copies_left = 0
        self.candidates = Candidates(configured=list(spec.endpoints))
        self.endpoint: Addr | None = spec.endpoints[0] if spec.endpoints else None
        self.current: Keypair | None = None
        self.previous: Keypair | None = None
        self.next: Keypair | None = None
        # handshake we initiated and are waiting on
        self.handshake: InitiatorHandshake | None = None
        self.handshake_index: int | None = None
        self.initiation: bytes | None = None  # its datagram, for hole punching
        self.handshake_attempts = 0
        self.last_initiation_sent = float("-inf")
        self.last_handshake_at: float | None = None
        self.last_received_at: float | None = None  # any authenticated packet
        # responder side: WireGuard's replay and flood protection of initiations
        self.last_timestamp = b""
        self.last_initiation_consumed = float("-inf")
        self.staged: deque[bytes] = deque(maxlen=MAX_STAGED_PACKETS)
        self.sent_last_minute_handshake = False
        self.need_another_keepalive = False
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.rx_packets = 0
        self.tx_packets = 0
        # timers
        self.retransmit_at: float | None = None
        self.new_handshake_at: float | None = None
        self.send_keepalive_at: float | None = None
        self.persistent_keepalive_at: float | None = None
        self.zero_keys_at: float | None = None
        self.unanswered_at: float | None = None  # whalescale: our data met silence
        self.stream_watch_at: float | None = None  # whalescale: its data still coming?
        self._stream_mark = 0  # rx_packets when the window being watched began
        self._stream_steady = False
        # whalescale: a PING asked about a silence that began then, for this cause
        self._silent_since: float | None = None
        self._silence_cause = ""
        # several paths at once, with a whalescale peer when the engine is configured so
        config = engine.multipath
        self.mp: MultipathLink | None = (
            MultipathLink(list(config.local_addrs), scheduler=config.scheduler, now=0.0,
                          random_bytes=engine.random_bytes, base_mtu=lambda: engine.mtu,
                          backup_addrs=config.backup_addrs)
            if config is not None and spec.whalescale else None)
        if self.mp is not None and engine.gone_locals:
            self.mp.set_gone_locals(engine.gone_locals, None, 0.0)

    # ----- sending -------------------------------------------------------

    def send(self, packets: list[bytes], now: float, *, data: bool = True) -> None:
        """Send inner packets (from the TUN), or stage them until a session exists.
        `data` packets may be spread over several paths; control messages are not."""
        kp = self.current
        if kp is None or not self._usable(kp, now):
            self.staged.extend(packets)
            self.initiate(now, retry=False, reason="no valid session for outgoing data")
            return
        if data and self.mp is not None and self.mp.routing:
            for out in self.mp.route(packets, now):
                self._send_on(kp, out, now)
        else:
            self._send_transport(kp, packets, now)
        if self.new_handshake_at is None:  # timersDataSent
            self.new_handshake_at = now + KEEPALIVE_TIMEOUT_S + REKEY_TIMEOUT_S
        if data and self.unanswered_at is None and self.spec.whalescale:
            self.unanswered_at = now + UNANSWERED_S
        if kp.initiator and (
            kp.send_counter > REKEY_AFTER_MESSAGES or now - kp.born > REKEY_AFTER_S
        ):
            self.initiate(now, retry=False, reason="session is due for rekey")

    def send_keepalive(self, now: float) -> None:
        """Flush staged packets, or send an empty transport message if none; without a
        session, start a handshake (as wireguard-go's keepalive does by staging one)."""
        if self.staged:
            self.send_staged(now)
            return
        kp = self.current
        if kp is not None and self._usable(kp, now):
            self._send_transport(kp, [b""], now)
        elif self.handshake is None:
            self.initiate(now, retry=False, reason="keepalive due and no session")

    def send_staged(self, now: float) -> None:
        staged, self.staged = self.staged, deque(maxlen=MAX_STAGED_PACKETS)
        if staged:
            self.send(list(staged), now)

    def _send_transport(self, kp: Keypair, packets: list[bytes], now: float,
                        local: Addr | None = None, remote: Addr | None = None) -> None:
        endpoint = remote or self.endpoint
        if endpoint is None:
            return
        # padding only up to the mesh's MTU (a multipath path may carry more)
        datagrams = kp.seal(packets, self._engine.mtu)
        self._engine.outbox.extend([(d, endpoint, local) for d in datagrams])
        self.tx_bytes += sum(map(len, datagrams))
        self.tx_packets += len(datagrams)
        self.send_keepalive_at = None  # timersAnyAuthenticatedPacketSent
        self._rearm_persistent_keepalive(now)

    def _send_on(self, kp: Keypair, out: Outgoing, now: float) -> None:
        self._send_transport(kp, list(out.plaintexts), now, out.local, out.remote)

    def _send_outgoing(self, outgoing: list[Outgoing], now: float) -> None:
        kp = self.current
        if kp is None or not self._usable(kp, now):
            return
        for out in outgoing:
            self._send_on(kp, out, now)

    def path_message(self, kind: control.Kind, body: bytes, local: Addr | None, remote: Addr,
                     now: float) -> None:
        """PATH_ANNOUNCE(_BACKUP) / PROBE / PROBE_REPLY / MP_HEARTBEAT / MP_FEEDBACK from this
        peer."""
        mp = self.mp
        if mp is None:
            self._engine.drops["multipath_not_enabled"] += 1
            return
        match kind:
            case control.Kind.PATH_ANNOUNCE:
                self._send_outgoing(mp.on_announce(body, now), now)
            case control.Kind.PATH_ANNOUNCE_BACKUP:
                self._send_outgoing(mp.on_announce(body, now, backup=True), now)
            case control.Kind.PATH_PROBE:
                self._send_outgoing(mp.on_probe(body, local, remote), now)
            case control.Kind.PATH_PROBE_REPLY:
                mp.on_probe_reply(body, local, remote, now)
            case control.Kind.MP_HEARTBEAT:
                self._engine.deliver(mp.on_heartbeat(body, now))
            case control.Kind.MP_FEEDBACK:
                mp.on_feedback(body, local, remote, now)

    @staticmethod
    def _usable(kp: Keypair, now: float) -> bool:
        return kp.send_counter < REJECT_AFTER_MESSAGES and now - kp.born < REJECT_AFTER_S

    def _rearm_persistent_keepalive(self, now: float) -> None:
        """timersAnyAuthenticatedPacketTraversal: re-arm the persistent keepalive."""
        if self.spec.keepalive_s:
            self.persistent_keepalive_at = now + self.spec.keepalive_s

    # ----- handshake -----------------------------------------------------

    def initiate(self, now: float, *, retry: bool, reason: str) -> None:
        if not retry:
            if now - self.last_initiation_sent < REKEY_TIMEOUT_S:
                return  # one is under way; its retransmit timer is armed
            if self.spec.whalescale and self.retransmit_at is not None:
                return  # in recovery: its backoff decides, not each packet sent
            self.handshake_attempts = 0
        if self.endpoint is None:
            return  # nowhere to send; a peer that reaches us will give us one
        self._engine.emit(self._new_initiation(now), self.endpoint)
        self._engine.event(events.HandshakeInitiated(self.name, self.endpoint, reason))
        self._arm_retransmit(now)
        self._copy_until_answered(now)  # copies only: the next handshake keeps the backoff

    def cookie_arrived(self, now: float) -> None:
        """The peer is under load and sent a cookie for our initiation: send a new one
        with it at once (mac2), not at the retransmit 1-5 s later; once per handshake
        timeout, so a peer that keeps answering with cookies cannot make us loop."""
        if now - self._cookie_retry_at >= REKEY_TIMEOUT_S:
            self._cookie_retry_at = now
            self.initiate(now, retry=True, reason="cookie reply: again with the cookie")

    def _copy_until_answered(self, now: float) -> None:
        """Send the pending initiation again every INITIATION_COPY_EVERY_S, at most
        INITIATION_COPIES times, until the handshake completes (timers.py says why)."""
        self._copies_left = INITIATION_COPIES
        self.copy_initiation_at = now + INITIATION_COPY_EVERY_S

    def _copy_initiation(self, now: float) -> None:
        self._copies_left -= 1
        self.copy_initiation_at = now + INITIATION_COPY_EVERY_S if self._copies_left else None
        if self.handshake is not None and self.initiation is not None and self.endpoint:
            self._engine.emit(self.initiation, self.endpoint)

    def _new_initiation(self, now: float) -> bytes:
        """A fresh initiation, registered (timersHandshakeInitiated, bar the retransmit
        timer: the caller decides whether this handshake is retried)."""
        engine = self._engine
        if self.handshake_index is not None:
            engine.forget_handshake(self.handshake_index)
        self.handshake = InitiatorHandshake(
            engine.static_private, self.spec.static_public, engine.random_bytes(32)
        )
        self.handshake_index = engine.register_handshake(self)
        noise = self.handshake.write_initiation(engine.tai64n(now))
        self.initiation = self.cookies.seal(engine.initiation_body(self.handshake_index, noise),
                                            now)
        self.last_initiation_sent = now
        self._rearm_persistent_keepalive(now)
        self.send_keepalive_at = None
        return self.initiation

    def punch(self, addr: Addr, now: float, reason: str = "hole punch") -> None:
        """Send our initiation to `addr` too: a hole punch (nat/punch.py), or an address
        worth trying now (a name that resolved anew). The pending one is reused while
        fresh: every copy belongs to one handshake, and the responder's TAI64N check
        answers only the first copy that gets through."""
        if self.handshake is None or now - self.last_initiation_sent >= REKEY_TIMEOUT_S:
            self._new_initiation(now)
            if self.current is None:  # no session yet: retry it as any first contact
                self._arm_retransmit(now)
            # else a failed punch must leave the working (e.g. relayed) session alone
        assert self.initiation is not None
        self._engine.emit(self.initiation, addr)
        self._engine.event(events.HandshakeInitiated(self.name, addr, reason))

    def _arm_retransmit(self, now: float) -> None:
        """timersHandshakeInitiated's retransmit timer, with our recovery backoff."""
        self.retransmit_at = now + self._retry_delay() + self._engine.jitter()

    def _retry_delay(self) -> float:
        """WireGuard retries every 5 s. A whalescale peer is in recovery (design §3.8):
        1, 2, 4 ... 60 s, anchors first (others start at the third step), never giving up."""
        if not self.spec.whalescale:
            return REKEY_TIMEOUT_S
        step = self.handshake_attempts + (0 if self.spec.anchor else RECOVERY_LATER_STEPS)
        return min(RECOVERY_MAX_S, RECOVERY_FIRST_S * 2 ** min(step, 16))

    def complete_as_initiator(self, keys: TransportKeys, remote_index: int, addr: Addr,
                              now: float) -> None:
        assert self.handshake_index is not None
        self._authenticated_from(addr, now)
        kp = Keypair(keys, local_index=self.handshake_index, remote_index=remote_index,
                     initiator=True, born=now)
        self.handshake = None
        self.handshake_index = None
        if self.next is not None:
            self._engine.forget_keypair(self.current)
            self.previous, self.next = self.next, None
        else:
            self._engine.forget_keypair(self.previous)
            self.previous = self.current
        self.current = kp
        self._engine.register_keypair(kp, self)
        self._handshake_complete(now)
        self._engine.event(events.HandshakeCompleted(
            self.name, True, self.endpoint or ("", 0), now - self.last_initiation_sent))
        self.zero_keys_at = now + ZERO_KEYS_AFTER_S  # timersSessionDerived
        self.send_keepalive(now)  # confirms the keys to the responder
        self._announce_paths(now)

    def complete_as_responder(self, kp: Keypair, addr: Addr, now: float) -> None:
        """We answered a valid initiation; `kp` waits for the initiator to use it."""
        self._authenticated_from(addr, now)
        self.send_keepalive_at = None  # the response counts as an authenticated packet sent
        self._engine.forget_keypair(self.next)
        self._engine.forget_keypair(self.previous)
        self.previous = None
        self.next = kp
        self._engine.register_keypair(kp, self)
        self.zero_keys_at = now + ZERO_KEYS_AFTER_S

    def set_gone_locals(self, gone: frozenset[Addr], now: float) -> None:
        if self.mp is not None:
            self._send_outgoing(self.mp.set_gone_locals(gone, self.endpoint, now), now)

    def _announce_paths(self, now: float) -> None:
        if self.mp is not None and self.endpoint is not None:
            self._send_outgoing(self.mp.announce(self.endpoint, now), now)

    def _handshake_complete(self, now: float) -> None:
        self._engine.handshake_outcomes["completed"] += 1
        self.retransmit_at = self.copy_initiation_at = None
        self.handshake_attempts = 0
        self.sent_last_minute_handshake = False
        self.last_handshake_at = now

    # ----- receiving -----------------------------------------------------

    def received(self, kp: Keypair, addr: Addr, size: int, packets: int, keepalive: bool,
                 now: float) -> None:
        """Authenticated transport messages (`packets`, `size` bytes) arrived on `kp`
        from `addr`."""
        self.rx_bytes += size
        self.rx_packets += packets
        self._authenticated_from(addr, now, on_data=True)
        if not keepalive and self.stream_watch_at is None and self.spec.whalescale:
            self.stream_watch_at = now + STREAM_WINDOW_S
            self._stream_mark = self.rx_packets
            self._stream_steady = False
        if kp is self.next:  # key confirmation: the initiator used the new keys
            self._engine.forget_keypair(self.previous)
            self.previous, self.current, self.next = self.current, kp, None
            self._handshake_complete(now)
            self._engine.event(events.HandshakeCompleted(self.name, False, addr, None))
            self.send_staged(now)
            self._announce_paths(now)
        if not keepalive:  # timersDataReceived
            if self.send_keepalive_at is None:
                self.send_keepalive_at = now + KEEPALIVE_TIMEOUT_S
            else:
                self.need_another_keepalive = True
        cur = self.current
        if (cur is kp and cur.initiator and not self.sent_last_minute_handshake
                and now - cur.born > REKEY_ON_RECEIVE_AFTER_S):
            self.sent_last_minute_handshake = True
            self.initiate(now, retry=False, reason="session is about to expire")

    def _authenticated_from(self, addr: Addr, now: float, *, on_data: bool = False) -> None:
        """Any authenticated packet: roam to its source, and we heard back."""
        if addr != self.endpoint and not (self.mp is not None and self.mp.knows_remote(addr)):
            self._engine.event(events.EndpointChanged(self.name, self.endpoint, addr, on_data))
            self.endpoint = addr
        self.last_received_at = now
        self.new_handshake_at = None  # timersAnyAuthenticatedPacketReceived
        self.unanswered_at = self._silent_since = None
        self._rearm_persistent_keepalive(now)

    # ----- timers --------------------------------------------------------

    def next_deadline(self) -> float | None:
        deadlines = [t for t in (self.retransmit_at, self.new_handshake_at,
                                 self.send_keepalive_at, self.persistent_keepalive_at,
                                 self.zero_keys_at, self.unanswered_at,
                                 self.stream_watch_at, self.copy_initiation_at) if t is not None]
        if self.mp is not None and self.current is not None:
            mp_deadline = self.mp.next_deadline()
            if mp_deadline is not None:
                deadlines.append(mp_deadline)
        return min(deadlines, default=None)

    def on_timer(self, now: float) -> None:
        if self.mp is not None and self.current is not None:
            mp_deadline = self.mp.next_deadline()
            if mp_deadline is not None and now >= mp_deadline:
                outgoing, released = self.mp.on_timer(now, self.endpoint)
                self._send_outgoing(outgoing, now)
                self._engine.deliver(released)
                self.endpoint = self.mp.usable_remote(self.endpoint)
        if self.retransmit_at is not None and now >= self.retransmit_at:
            self.retransmit_at = None
            self._retransmit_expired(now)
        if self.copy_initiation_at is not None and now >= self.copy_initiation_at:
            self._copy_initiation(now)
        if self.send_keepalive_at is not None and now >= self.send_keepalive_at:
            self.send_keepalive_at = None
            self.send_keepalive(now)
            if self.need_another_keepalive:
                self.need_another_keepalive = False
                self.send_keepalive_at = now + KEEPALIVE_TIMEOUT_S
        if self.new_handshake_at is not None and now >= self.new_handshake_at:
            self.new_handshake_at = None
            self.initiate(now, retry=False, reason="no reply to data for 15 s")
        if self.persistent_keepalive_at is not None and now >= self.persistent_keepalive_at:
            self.persistent_keepalive_at = None
            self.send_keepalive(now)
        if self.zero_keys_at is not None and now >= self.zero_keys_at:
            self.zero_keys_at = None
            self._zero_keys()
        if self.stream_watch_at is not None and now >= self.stream_watch_at:
            self._watch_stream(now)
        if self.unanswered_at is not None and now >= self.unanswered_at:
            self._unanswered(now)

    def _watch_stream(self, now: float) -> None:
        """A window of the peer's data ended: watch the next while it comes, and ask
        when a steady stream stopped (we may have moved without knowing it)."""
        arrived = self.rx_packets - self._stream_mark
        if arrived:
            self._stream_steady = self._stream_steady or arrived >= STREAM_STEADY_PACKETS
            self._stream_mark = self.rx_packets
            self.stream_watch_at = now + STREAM_WINDOW_S
            return
        self.stream_watch_at = None  # its next data starts the watch again
        if self._stream_steady and self._silent_since is None and self.current is not None:
            assert self.last_received_at is not None  # data arrived to start the watch
            self._ask(self.last_received_at, "its data stopped", now)

    def _unanswered(self, now: float) -> None:
        """Our data met silence: ask once, then say so (until anything is heard again)."""
        if self.current is None:
            self.unanswered_at = None
            return
        if self._silent_since is None:
            self._ask(now - UNANSWERED_S, "no answer to our data", now)
            return
        self.unanswered_at = None  # the next data sent arms it again
        self._engine.event(events.PeerUnanswered(self.name, now - self._silent_since,
                                                 self._silence_cause))

    def _ask(self, silent_since: float, cause: str, now: float) -> None:
        """A PING about a silence; unanswered for UNANSWERED_S / 2, `_unanswered` says so."""
        self._silent_since, self._silence_cause = silent_since, cause
        self.unanswered_at = now + UNANSWERED_S / 2
        self._engine.send_control(self, control.Kind.PING, b"are you there", now)

    def _retransmit_expired(self, now: float) -> None:
        self._engine.handshake_outcomes["timed_out"] += 1
        if self.handshake_attempts >= MAX_HANDSHAKE_ATTEMPTS and not self.spec.whalescale:
            self._engine.event(events.HandshakeGaveUp(self.name, self.handshake_attempts + 2))
            self.staged.clear()
            if self.zero_keys_at is None:
                self.zero_keys_at = now + ZERO_KEYS_AFTER_S
            return
        self.handshake_attempts += 1
        waited = now - self.last_initiation_sent
        # Not while the peer still talks to us where we are: only a handshake went missing.
        if self.last_received_at is None or \
                now - self.last_received_at >= KEEPALIVE_TIMEOUT_S + REKEY_TIMEOUT_S:
            self._next_endpoint()
        self.initiate(now, retry=True,
                      reason=f"no response after {waited:.1f} s, "
                             f"attempt {self.handshake_attempts + 1}")

    def _next_endpoint(self) -> None:
        """Several known endpoints: a silent one may be stale, so try the next."""
        if len(self.endpoints) > 1:
            i = self.endpoints.index(self.endpoint) if self.endpoint in self.endpoints else -1
            self.endpoint = self.endpoints[(i + 1) % len(self.endpoints)]
        elif self.endpoints and self.endpoint not in self.endpoints:
            self.endpoint = self.endpoints[0]

    def _zero_keys(self) -> None:
        self.forget()
        self._engine.event(events.SessionKeysZeroed(self.name))

    def forget(self) -> None:
        """Erase every key and the pending handshake (zero-keys timer, or removal)."""
        engine = self._engine
        for kp in (self.previous, self.current, self.next):
            engine.forget_keypair(kp)
        self.previous = self.current = self.next = None
        if self.handshake_index is not None:
            engine.forget_handshake(self.handshake_index)
        self.handshake = None
        self.handshake_index = None
        self.staged.clear()

    # ----- where it is: commands to its candidates (session/endpoints.py) -----

    @property
    def endpoints(self) -> list[Addr]:
        """Its candidate endpoints, best first."""
        return self.candidates.ordered()

    def learn_endpoints(self, endpoints: list[Addr], now: float | None) -> None:
        """The mesh controller's candidates (`now` None: before start-up)."""
        self.candidates.learned = list(endpoints)
        self._follow_candidates(now)

    def relayed(self, alias: Addr, now: float) -> None:
        """A relay is up (no direct path was found): send through it at once."""
        self.candidates.relay = alias
        self._move_to(alias, now)

    def unrelayed(self, now: float) -> None:
        """The relay closed: if the session used it, try the best direct candidate."""
        alias, self.candidates.relay = self.candidates.relay, None
        if alias is not None and self.endpoint == alias:
            ordered = self.candidates.ordered()
            self._move_to(ordered[0] if ordered else None, now)

    def on_lan(self, addr: Addr) -> None:
        """LAN discovery heard it there (its answer to a punch moves the session)."""
        self.candidates.lan = addr

    def _follow_candidates(self, now: float | None) -> None:
        """A session heard from stays where it is; otherwise the best candidate is tried at
        once, not at the next backoff step. (The relay alias, when up, is the best.)"""
        ordered = self.candidates.ordered()
        if not ordered or ordered[0] == self.endpoint:
            return
        if now is None:
            self.endpoint = ordered[0]
        elif not self.reachable(now):
            self._move_to(ordered[0], now)

    def _move_to(self, addr: Addr | None, now: float) -> None:
        self.endpoint = addr
        if addr is not None:
            self.retransmit_at = None
            self.last_initiation_sent = float("-inf")
            self.initiate(now, retry=False, reason="new endpoints, no live session")

    def reachable(self, now: float) -> bool:
        """Heard from within three keepalive intervals (one lost keepalive is no alarm)."""
        if self.last_received_at is None:
            return False
        window = REACHABLE_WITHIN_KEEPALIVES * (self.spec.keepalive_s or KEEPALIVE_ASSUMED_S)
        return now - self.last_received_at <= window

    def reconfigure(self, spec: PeerSpec) -> None:
        """New settings from a reloaded mesh; the session and its keys stay."""
        self.spec = spec
        self.name = spec.name
        self.candidates.configured = list(spec.endpoints)
        if self.endpoint is None and self.endpoints:
            self.endpoint = self.endpoints[0]
        if not spec.keepalive_s:
            self.persistent_keepalive_at = None
