"""The feedback message: round trip, and decode raises only MalformedFeedback."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whalescale.multipath import feedback as fb

REPORT = fb.PathReport(path_id=3, packets=1000, bytes=1_400_000, highest_seq=1009, lost=10,
                       echo_delay_s=0.012345)


def test_round_trip():
    message = fb.Feedback((REPORT, fb.PathReport(0, 0, 0, -1, 0, 0.0)))
    data = fb.encode(message)
    assert len(data) == 2 + 2 * 37
    assert fb.decode(data) == message


@pytest.mark.parametrize(("data", "match"), [
    (b"", "shorter"),
    (b"\x00\x01" + bytes(37), "not feedback"),
    (b"\x4d\x00", "0 reports"),
    (b"\x4d\x01" + bytes(36), "38 bytes for 1 reports"),
])
def test_malformed_says_what(data, match):
    with pytest.raises(fb.MalformedFeedback, match=match):
        fb.decode(data)


def test_same_path_twice_is_malformed():
    data = fb.encode(fb.Feedback((REPORT, REPORT)))
    with pytest.raises(fb.MalformedFeedback, match="twice"):
        fb.decode(data)


reports = st.builds(
    fb.PathReport, path_id=st.integers(0, 255), packets=st.integers(0, 2**64 - 1),
    bytes=st.integers(0, 2**64 - 1), highest_seq=st.integers(-1, 2**40),
    lost=st.integers(0, 0), echo_delay_s=st.floats(0, 4000, allow_nan=False))


@given(st.lists(reports, min_size=1, max_size=fb.MAX_PATHS, unique_by=lambda r: r.path_id))
def test_round_trip_any(rs):
    decoded = fb.decode(fb.encode(fb.Feedback(tuple(rs))))
    assert [r.path_id for r in decoded.reports] == [r.path_id for r in rs]
    assert [r.highest_seq for r in decoded.reports] == [r.highest_seq for r in rs]


@given(st.binary(max_size=700))
def test_decode_fuzz_raises_only_malformed(data):
    with contextlib.suppress(fb.MalformedFeedback):
        fb.decode(data)


@given(st.lists(reports, min_size=1, max_size=4, unique_by=lambda r: r.path_id), st.data())
def test_decode_fuzz_mutated(rs, data):
    raw = bytearray(fb.encode(fb.Feedback(tuple(rs))))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(fb.MalformedFeedback):
        fb.decode(bytes(raw))
