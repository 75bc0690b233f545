"""Silence on a whalescale session, found in about a second: our data unanswered, or the
peer's steady data stopped (we may have moved without knowing it). Either way one PING
asks, and only its silence too makes a `PeerUnanswered` (nat/traversal.py acts on it)."""

from __future__ import annotations

from whalescale.session import events
from whalescale.session.timers import STREAM_WINDOW_S, UNANSWERED_S
from whalescale.wire import control

from .pair import Pair

WHALESCALE = {"spec_kw": {"whalescale": True}}


def streaming_pair(every_s: float, seconds: float) -> Pair:
    """alice sends bob a one-way flow, a packet every `every_s`, for `seconds`."""
    pair = Pair(alice_kw=WHALESCALE, bob_kw=WHALESCALE)
    pair.alice_to_bob()
    pair.pump()
    for _ in range(round(seconds / every_s)):
        pair.advance(every_s)
        pair.alice_to_bob()
        pair.pump()
    pair.bob.events.clear()
    return pair


def sent_by(pair: Pair, name: str, since: int) -> int:
    return sum(1 for sender, _ in pair.sent_to[since:] if sender == name)


def pings_to_alice(pair: Pair) -> list[float]:
    """When alice gets a PING from bob; she answers it as the engine would."""
    at: list[float] = []

    def answer(peer, kind, body, addr, local, now) -> None:
        at.append(now)
        pair.alice.send_control(peer, control.Kind.PONG, body, now)

    pair.alice.handle_control(control.Kind.PING, answer)
    return at


def unanswered(pair: Pair) -> list[events.PeerUnanswered]:
    return [e for e in pair.bob.events if isinstance(e, events.PeerUnanswered)]


def test_a_steady_stream_that_stops_is_asked_once_and_an_answer_ends_it():
    pair = streaming_pair(0.1, 2.0)
    pings = pings_to_alice(pair)
    pair.advance(5.0)
    # alice's own PINGs (her data unanswered) count as its data: the watch waits them out
    assert len(pings) == 1 and pings[0] - pair.now + 5.0 <= 2 * STREAM_WINDOW_S + UNANSWERED_S
    assert unanswered(pair) == []


def test_a_steady_stream_cut_off_is_unanswered_within_about_a_second():
    pair = streaming_pair(0.1, 2.0)
    last_data = pair.now
    pair.lost.add("alice")  # our new NAT mapping drops what alice sends
    pair.advance(3.0)
    (event,) = unanswered(pair)
    assert event.peer == "alice" and event.cause == "its data stopped"
    # one or two windows to see the stream stop, then half the answer timeout
    asked_after = event.silent_s - UNANSWERED_S / 2
    assert STREAM_WINDOW_S - 0.05 <= asked_after <= 2 * STREAM_WINDOW_S + 0.05
    assert pair.now - last_data >= event.silent_s


def test_a_trickle_that_pauses_is_not_asked():
    pair = streaming_pair(0.5, 5.0)  # two packets a second: its pauses say nothing
    since = len(pair.sent_to)
    pair.lost.add("alice")
    pair.advance(3.0)
    assert sent_by(pair, "bob", since) == 0
    assert unanswered(pair) == []


def test_our_data_unanswered_is_asked_once_then_reported():
    pair = Pair(alice_kw=WHALESCALE, bob_kw=WHALESCALE)
    pair.alice_to_bob()
    pair.pump()
    pair.lost.add("alice")  # bob's answers never come back... to bob: alice's are lost
    pair.bob_to_alice()
    pair.pump()
    pair.advance(UNANSWERED_S * 1.5 + 0.05)
    (event,) = unanswered(pair)
    assert event.cause == "no answer to our data"
    assert abs(event.silent_s - UNANSWERED_S * 1.5) < 0.06
