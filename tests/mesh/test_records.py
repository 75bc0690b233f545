"""The gossip record: exact encoding, signatures, and decoding hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whalescale.identity import Identity
from whalescale.mesh.records import (
    MAX_ENDPOINTS,
    MAX_RECORD_BYTES,
    MAX_SEQ,
    EndpointRecord,
    GossipEndpoint,
    MalformedRecord,
    PathType,
    decode_record,
    encode_record,
    read_record,
    sign_observation,
    sign_self,
    verify,
)

ALICE = Identity.from_seed(b"\x01" * 32)
MALLORY = Identity.from_seed(b"\x02" * 32)
V4 = GossipEndpoint("198.51.100.7", 51820, PathType.IPV4)
V6 = GossipEndpoint("2001:db8::7", 51820, PathType.IPV6)
LAN = GossipEndpoint("192.168.1.7", 51820, PathType.LAN)


def test_self_attested_record_layout_and_round_trip():
    record = sign_self(ALICE, [V4, V6], seq=5)
    data = encode_record(record)
    # head 74, kind+4+2 = 7, kind+16+2 = 19, signature 64
    assert len(data) == 74 + 7 + 19 + 64
    assert data[:32] == ALICE.public and data[32:40] == (5).to_bytes(8, "big")
    assert data[40] == 1 and data[41:73] == ALICE.public and data[73] == 2
    assert decode_record(data) == record
    assert verify(record)


def test_observation_is_signed_by_the_observer():
    record = sign_observation(MALLORY, ALICE.public, [LAN], seq=9)
    assert not record.self_attested and record.signer == MALLORY.public
    assert verify(record)
    assert decode_record(encode_record(record)) == record


def test_self_attestation_signed_by_someone_else_does_not_verify():
    honest = sign_observation(MALLORY, ALICE.public, [V4], seq=1)
    forged = EndpointRecord(ALICE.public, (V4,), 1, True, MALLORY.public, honest.signature)
    assert not verify(forged)
    # ... and it still decodes: gossip must be able to name the forgery.
    assert decode_record(encode_record(forged)) == forged


@pytest.mark.parametrize(("host", "port", "path_type"), [
    ("example.org", 1, PathType.IPV4),      # not an IP literal
    ("198.51.100.7", 0, PathType.IPV4),     # port 0
    ("198.51.100.7", 65536, PathType.IPV4),
    ("2001:db8::1", 1, PathType.IPV4),      # family does not match the path type
    ("198.51.100.7", 1, PathType.IPV6),
    ("fe80::1%eth0", 1, PathType.LAN),      # a scope means nothing elsewhere
])
def test_invalid_endpoints_are_refused(host, port, path_type):
    with pytest.raises(ValueError):
        GossipEndpoint(host, port, path_type)


def test_host_is_kept_in_canonical_form():
    assert GossipEndpoint("2001:DB8:0::7", 1, PathType.IPV6).host == "2001:db8::7"


def test_signing_refuses_what_cannot_be_encoded():
    with pytest.raises(ValueError):
        sign_self(ALICE, [V4] * 2, seq=1)
    with pytest.raises(ValueError):
        sign_self(ALICE, [GossipEndpoint("10.0.0.1", p, PathType.LAN) for p in range(1, 10)], 1)
    with pytest.raises(ValueError):
        sign_self(ALICE, [V4], seq=MAX_SEQ + 1)
    with pytest.raises(ValueError):
        sign_observation(ALICE, ALICE.public, [V4], seq=1)


def _valid() -> bytes:
    return encode_record(sign_self(ALICE, [V4, LAN], seq=3))


@pytest.mark.parametrize(("name", "mutate"), [
    ("empty", lambda b: b""),
    ("truncated signature", lambda b: b[:-1]),
    ("trailing byte", lambda b: b + b"\x00"),
    ("unknown flag", lambda b: b[:40] + b"\x03" + b[41:]),
    ("top bit of seq", lambda b: b[:32] + b"\x80" + b[33:]),
    ("too many endpoints", lambda b: b[:73] + bytes([MAX_ENDPOINTS + 1]) + b[74:]),
    ("unknown kind", lambda b: b[:74] + b"\x09" + b[75:]),
    ("port zero", lambda b: b[:79] + b"\x00\x00" + b[81:]),
    ("duplicate endpoint", lambda b: b[:73] + b"\x02" + b[74:81] * 2 + b[-64:]),
])
def test_malformed_table(name, mutate):
    with pytest.raises(MalformedRecord):
        decode_record(mutate(_valid()))


def test_read_record_walks_a_sequence():
    a, b = sign_self(ALICE, [V4], 1), sign_self(MALLORY, [], 2)
    data = encode_record(a) + encode_record(b)
    first, offset = read_record(data)
    second, end = read_record(data, offset)
    assert (first, second, end) == (a, b, len(data))


# ----- properties -------------------------------------------------------------

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
endpoints = st.one_of(
    st.builds(GossipEndpoint, ipv4, st.integers(1, 65535), st.just(PathType.IPV4)),
    st.builds(GossipEndpoint, ipv6, st.integers(1, 65535), st.just(PathType.IPV6)),
    st.builds(GossipEndpoint, ipv4 | ipv6, st.integers(1, 65535), st.just(PathType.LAN)),
)
endpoint_lists = st.lists(endpoints, max_size=MAX_ENDPOINTS, unique=True)
seqs = st.integers(0, MAX_SEQ)


@st.composite
def signed_records(draw: st.DrawFn) -> EndpointRecord:
    eps, seq = draw(endpoint_lists), draw(seqs)
    if draw(st.booleans()):
        return sign_self(ALICE, eps, seq)
    return sign_observation(MALLORY, ALICE.public, eps, seq)


@given(st.binary(max_size=MAX_RECORD_BYTES + 8))
@settings(max_examples=500)
def test_decode_raises_only_malformed_record(data):
    try:
        record = decode_record(data)
    except MalformedRecord:
        return
    assert encode_record(record) == data  # one encoding per record


@given(signed_records())
def test_encode_decode_round_trip(record):
    data = encode_record(record)
    assert len(data) <= MAX_RECORD_BYTES
    assert decode_record(data) == record
    assert verify(record)


@given(signed_records(), st.data())
def test_any_bit_flip_breaks_the_record(record, data):
    raw = bytearray(encode_record(record))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    try:
        flipped = decode_record(bytes(raw))
    except MalformedRecord:
        return
    assert not verify(flipped)
