"""Which inner packets skip the steady delay: a table of real header layouts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whalescale.multipath.traffic import prompt

SRC_DST_V4 = bytes([10, 9, 0, 1, 10, 9, 0, 2])
SRC_DST_V6 = bytes(15) + b"\x01" + bytes(15) + b"\x02"


def ipv4(proto: int, payload: bytes, ihl: int = 5) -> bytes:
    total = ihl * 4 + len(payload)
    return (bytes([0x40 | ihl, 0]) + total.to_bytes(2, "big") + bytes(5) + bytes([proto])
            + bytes(2) + SRC_DST_V4 + bytes(ihl * 4 - 20) + payload)


def ipv6(next_header: int, payload: bytes) -> bytes:
    return (b"\x60" + bytes(3) + len(payload).to_bytes(2, "big") + bytes([next_header, 64])
            + SRC_DST_V6 + payload)


def tcp(flags: int, data: bytes = b"", options: int = 0) -> bytes:
    return bytes(12) + bytes([(5 + options) << 4, flags]) + bytes(6) + bytes(4 * options) + data


ACK, PSH_ACK, SYN, SYN_ACK, FIN_ACK, RST = 0x10, 0x18, 0x02, 0x12, 0x11, 0x04


@pytest.mark.parametrize(("name", "packet", "expected"), [
    ("ICMP echo", ipv4(1, b"\x08\x00" + bytes(30)), True),
    ("ICMPv6 echo", ipv6(58, b"\x80\x00" + bytes(30)), True),
    ("pure ACK", ipv4(6, tcp(ACK)), True),
    ("pure ACK with timestamps", ipv4(6, tcp(ACK, options=3)), True),
    ("pure ACK, IPv4 options", ipv4(6, tcp(ACK), ihl=6), True),
    ("pure ACK over IPv6", ipv6(6, tcp(ACK, options=3)), True),
    ("RST", ipv4(6, tcp(RST)), True),
    ("data", ipv4(6, tcp(PSH_ACK, b"x" * 1000)), False),
    ("one byte of data", ipv4(6, tcp(PSH_ACK, b"x")), False),
    ("SYN: the handshake is held like data", ipv4(6, tcp(SYN)), False),
    ("SYN-ACK", ipv6(6, tcp(SYN_ACK)), False),
    ("FIN", ipv4(6, tcp(FIN_ACK)), False),
    ("UDP", ipv4(17, bytes(8) + b"q" * 100), False),
    ("UDP over IPv6", ipv6(17, bytes(8)), False),
    ("truncated TCP header", ipv4(6, bytes(10)), False),
    ("too short for IP", b"\x45" + bytes(10), False),
])  # fmt: skip
def test_prompt_table(name, packet, expected):
    assert prompt(packet) is expected, name


@given(st.binary(max_size=120))
def test_any_bytes_give_an_answer_and_no_error(data):
    assert prompt(data) in (True, False)
