"""Whatever arrives from the network: parsers and the engine only count and drop."""

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.session.pair import A_ADDR, Pair
from whalescale.wire import control
from whalescale.wire import messages as wire

PARSERS = [wire.parse_initiation, wire.parse_response, wire.parse_cookie_reply,
           wire.message_type]


@given(st.binary(max_size=300))
def test_parsers_raise_only_malformed(data):
    for parse in PARSERS:
        with contextlib.suppress(wire.MalformedMessage):
            parse(data)


def _established() -> tuple[Pair, list[bytes]]:
    pair = Pair(seed=11)
    pair.alice_to_bob(b"a" * 64)
    pair.pump()
    pair.alice_to_bob(b"b" * 64)
    pair.pump()
    return pair, [d for _, d in pair.wire]


PAIR, VALID = _established()


@settings(max_examples=300)
@given(st.sampled_from(range(len(VALID))), st.data())
def test_mutated_valid_datagrams_never_raise_or_deliver(index, data):
    original = VALID[index]
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(mutated) - 1))
        mutated[pos] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    datagram = bytes(mutated[:cut] if data.draw(st.booleans()) else mutated)
    before = len(PAIR.bob.inbox)
    PAIR.bob.receive_datagram(datagram, A_ADDR, PAIR.now)
    PAIR.bob.outbox.clear()
    # a changed transport message never authenticates: nothing new reaches the TUN
    if original[0] == 4 and datagram != original:
        assert len(PAIR.bob.inbox) == before


@given(st.binary(max_size=200), st.sampled_from([1, 2, 3, 4]))
def test_typed_garbage_never_raises(body, kind):
    pair = PAIR
    pair.bob.receive_datagram(bytes([kind, 0, 0, 0]) + body, A_ADDR, pair.now)
    pair.bob.outbox.clear()


@given(st.binary(max_size=1300))
def test_control_decode_raises_only_malformed(data):
    with contextlib.suppress(control.MalformedControl):
        control.decode(data)


@given(st.sampled_from(list(control.Kind)), st.binary(max_size=control.MAX_BODY),
       st.integers(0, 15))
def test_control_round_trip_survives_wireguard_padding(kind, body, pad):
    assert control.decode(control.encode(kind, body) + bytes(pad)) == (kind, body)
