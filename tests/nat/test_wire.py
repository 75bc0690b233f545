"""NAT-PMP, PCP and STUN messages: known bytes, round trips, and fuzzed parsers that
only ever raise `WireFormatError`."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whalescale.nat import natpmp, pcp, stun_responder
from whalescale.nat.errors import WireFormatError

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
ipv4 = st.builds(ipaddress.IPv4Address, u32)
ipv6 = st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1)).filter(
    lambda a: a.ipv4_mapped is None
)


# ----- NAT-PMP ---------------------------------------------------------------


def test_natpmp_requests_are_the_rfc_layout():
    assert natpmp.encode_external_address_request() == b"\x00\x00"
    # version 0, opcode 1 (UDP), reserved, internal 40000, suggested 40001, 7200 s
    assert natpmp.encode_map_request(natpmp.OP_MAP_UDP, 40000, 40001, 7200) == bytes.fromhex(
        "0001 0000 9c40 9c41 00001c20"
    )


def test_natpmp_parses_a_known_external_address_response():
    data = bytes.fromhex("0080 0000 0000002a 0a000102")
    assert natpmp.parse_response(data) == natpmp.ExternalAddressResponse(
        0, 42, ipaddress.IPv4Address("10.0.1.2")
    )


@given(
    st.one_of(
        st.builds(natpmp.ExternalAddressResponse, u16, u32, ipv4),
        st.builds(
            natpmp.MapResponse, u16, u32, st.sampled_from([natpmp.OP_MAP_UDP, natpmp.OP_MAP_TCP]),
            u16, u16, u32,
        ),
        st.builds(natpmp.ErrorResponse, st.integers(1, 0xFFFF), u32, st.integers(3, 127)),
    )
)  # fmt: skip
def test_natpmp_responses_round_trip(response):
    assert natpmp.parse_response(natpmp.encode_response(response)) == response


def test_natpmp_short_error_answers_parse_but_short_successes_do_not():
    unsupported = bytes.fromhex("0081 0001 00000005")
    assert natpmp.parse_response(unsupported) == natpmp.ErrorResponse(
        natpmp.ResultCode.UNSUPPORTED_VERSION, 5, natpmp.OP_MAP_UDP
    )
    with pytest.raises(WireFormatError, match="truncated"):
        natpmp.parse_response(bytes.fromhex("0081 0000 00000005"))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "need 8"),
        (bytes.fromhex("0180 0000 00000000 0a000001"), "version 1"),
        (bytes.fromhex("0000 0000 00000000 0a000001"), "request"),
    ],
)
def test_natpmp_rejects(data, reason):
    with pytest.raises(WireFormatError, match=reason):
        natpmp.parse_response(data)


@given(st.binary(max_size=40))
def test_natpmp_parser_raises_only_wire_format_errors(data):
    with contextlib.suppress(WireFormatError):
        natpmp.parse_response(data)


# ----- PCP -------------------------------------------------------------------

NONCE = bytes(range(12))


def test_pcp_map_request_is_the_rfc_layout():
    request = pcp.MapRequest(
        nonce=NONCE, protocol=pcp.PROTOCOL_UDP, internal_port=40000,
        suggested_external_port=0, lifetime_s=7200,
        client_address=ipaddress.IPv4Address("10.0.3.2"),
    )  # fmt: skip
    data = pcp.encode_map_request(request)
    assert len(data) == 60
    assert data[:4] == bytes((2, 1, 0, 0))  # version 2, request MAP, reserved
    assert struct.unpack("!I", data[4:8]) == (7200,)
    assert data[8:24] == bytes(10) + b"\xff\xff" + bytes((10, 0, 3, 2))  # IPv4-mapped
    assert data[24:36] == NONCE
    assert data[36] == 17 and data[37:40] == bytes(3)
    assert data[40:44] == bytes.fromhex("9c40 0000")
    assert data[44:60] == bytes(10) + b"\xff\xff" + bytes(4)  # "any IPv4 address"
    assert pcp.parse_map_request(data) == request


@given(
    st.builds(
        pcp.MapRequest, st.binary(min_size=12, max_size=12), st.integers(0, 255), u16, u16,
        u32, st.one_of(ipv4, ipv6), st.one_of(ipv4, ipv6),
    )
)  # fmt: skip
def test_pcp_map_requests_round_trip(request):
    assert pcp.parse_map_request(pcp.encode_map_request(request)) == request


@given(
    st.one_of(
        st.builds(
            pcp.MapResponse, st.integers(0, 255), u32, u32, st.binary(min_size=12, max_size=12),
            st.integers(0, 255), u16, u16, st.one_of(ipv4, ipv6),
        ),
        st.builds(
            pcp.ErrorResponse, st.integers(0, 255), st.integers(2, 127), st.integers(1, 255),
            u32, u32,
        ),
    )
)  # fmt: skip
def test_pcp_responses_round_trip(response):
    assert pcp.parse_response(pcp.encode_response(response)) == response


def test_pcp_unsupported_version_answer_is_an_error_response():
    data = pcp.encode_response(pcp.ErrorResponse(1, pcp.OP_MAP, pcp.ResultCode.UNSUPP_VERSION,
                                                 0, 9))  # fmt: skip
    assert len(data) == 24
    assert pcp.parse_response(data).result == pcp.ResultCode.UNSUPP_VERSION


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes(23), "need 24"),
        (bytes(62), "multiple of 4"),
        (bytes(1104), "max 1100"),
        (bytes((2, 1)) + bytes(58), "request"),
        (bytes((2, 0x81)) + bytes(22), "without a MAP body"),
    ],
)
def test_pcp_rejects(data, reason):
    with pytest.raises(WireFormatError, match=reason):
        pcp.parse_response(data)


@given(st.binary(max_size=120))
def test_pcp_parsers_raise_only_wire_format_errors(data):
    for parse in (pcp.parse_response, pcp.parse_map_request):
        with contextlib.suppress(WireFormatError):
            parse(data)


@given(st.binary(min_size=24, max_size=24), st.binary(min_size=36, max_size=36))
def test_pcp_parser_on_plausible_headers(header, body):
    data = bytes((2, 0x81)) + header[2:] + body
    with contextlib.suppress(WireFormatError):
        pcp.parse_response(data)


# ----- STUN (the lab's responder) ---------------------------------------------


def test_stun_binding_response_carries_the_source_xored():
    request = struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, NONCE)
    answer = stun_responder.binding_response(request, ("10.0.1.2", 46114))
    assert answer is not None
    kind, length, cookie, txid = struct.unpack_from("!HHI12s", answer)
    assert (kind, length, cookie, txid) == (0x0101, 24, 0x2112A442, NONCE)
    attr_type, _, family, xport, xaddr = struct.unpack_from("!HHxBH4s", answer, 32)
    assert (attr_type, family) == (0x0020, 1)
    assert xport ^ 0x2112 == 46114
    assert ipaddress.IPv4Address(int.from_bytes(xaddr, "big") ^ 0x2112A442) == (
        ipaddress.IPv4Address("10.0.1.2")
    )


@given(st.binary(max_size=64))
def test_stun_responder_ignores_anything_else(data):
    answer = stun_responder.binding_response(data, ("10.0.0.1", 1))
    assert answer is None or answer[:2] == b"\x01\x01"
