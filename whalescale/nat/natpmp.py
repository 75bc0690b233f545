"""NAT-PMP (RFC 6886) messages as pure functions: bytes in, frozen records out.

Only what a client needs: the external address request (opcode 0) and the UDP/TCP
mapping requests (opcodes 1, 2), and the server's answers to them. `parse_response`
raises only `WireFormatError`; result codes it does not know are kept as plain ints.
"""

from __future__ import annotations

import enum
import ipaddress
import struct

import attrs

from . import errors
from .errors import WireFormatError

# Specification (RFC 6886 section 3).
SERVER_PORT = 5351
VERSION = 0
OP_EXTERNAL_ADDRESS = 0
OP_MAP_UDP = 1
OP_MAP_TCP = 2
RESPONSE_BIT = 0x80
RECOMMENDED_LIFETIME_S = 7200  # section 3.3

_HEADER = struct.Struct("!BBHI")  # version, opcode, result code, seconds since epoch
_EXTERNAL_ADDRESS_RESPONSE = struct.Struct("!BBHI4s")
_MAP_REQUEST = struct.Struct("!BBHHHI")  # version, opcode, reserved, internal, external, life
_MAP_RESPONSE = struct.Struct("!BBHIHHI")


class ResultCode(enum.IntEnum):
    """RFC 6886 section 3.5."""

    SUCCESS = 0
    UNSUPPORTED_VERSION = 1
    NOT_AUTHORIZED = 2  # "Refused": the box supports mapping but the user turned it off
    NETWORK_FAILURE = 3  # e.g. the NAT box itself has no DHCP lease yet
    OUT_OF_RESOURCES = 4
    UNSUPPORTED_OPCODE = 5


def result_name(code: int) -> str:
    return errors.result_name(ResultCode, code)


@attrs.frozen(slots=True)
class ExternalAddressResponse:
    result: int
    epoch_s: int
    address: ipaddress.IPv4Address


@attrs.frozen(slots=True)
class MapResponse:
    result: int
    epoch_s: int
    opcode: int  # OP_MAP_UDP or OP_MAP_TCP
    internal_port: int
    external_port: int
    lifetime_s: int


@attrs.frozen(slots=True)
class ErrorResponse:
    """A short (header-only) answer, as sent for an unsupported version or opcode."""

    result: int
    epoch_s: int
    opcode: int


Response = ExternalAddressResponse | MapResponse | ErrorResponse


def encode_external_address_request() -> bytes:
    return bytes((VERSION, OP_EXTERNAL_ADDRESS))


def encode_map_request(
    opcode: int, internal_port: int, suggested_external_port: int, lifetime_s: int
) -> bytes:
    """A mapping request; `lifetime_s` 0 with external port 0 deletes it (section 3.4)."""
    if opcode not in (OP_MAP_UDP, OP_MAP_TCP):
        raise ValueError(f"NAT-PMP opcode {opcode} is not a mapping opcode")
    return _MAP_REQUEST.pack(
        VERSION, opcode, 0, internal_port, suggested_external_port, lifetime_s
    )


def parse_response(data: bytes) -> Response:
    """One datagram from the server's port 5351; `WireFormatError` if it is not one."""
    if len(data) < _HEADER.size:
        raise WireFormatError(f"NAT-PMP response of {len(data)} bytes, need 8")
    version, op, result, epoch_s = _HEADER.unpack_from(data)
    if version != VERSION:
        raise WireFormatError(f"NAT-PMP version {version}, expected {VERSION}")
    if not op & RESPONSE_BIT:
        raise WireFormatError(f"NAT-PMP opcode {op} is a request, not a response")
    opcode = op & ~RESPONSE_BIT
    if opcode == OP_EXTERNAL_ADDRESS and len(data) >= _EXTERNAL_ADDRESS_RESPONSE.size:
        packed = _EXTERNAL_ADDRESS_RESPONSE.unpack_from(data)[4]
        return ExternalAddressResponse(result, epoch_s, ipaddress.IPv4Address(packed))
    if opcode in (OP_MAP_UDP, OP_MAP_TCP) and len(data) >= _MAP_RESPONSE.size:
        internal, external, lifetime_s = _MAP_RESPONSE.unpack_from(data)[4:]
        return MapResponse(result, epoch_s, opcode, internal, external, lifetime_s)
    if result == ResultCode.SUCCESS:
        # Section 3.5: only an error answer may be cut short.
        raise WireFormatError(f"NAT-PMP success for opcode {opcode} is truncated or unknown")
    return ErrorResponse(result, epoch_s, opcode)


def encode_response(response: Response) -> bytes:
    """The server's side, for test gateways and round trips."""
    match response:
        case ExternalAddressResponse(result, epoch_s, address):
            return _EXTERNAL_ADDRESS_RESPONSE.pack(
                VERSION, RESPONSE_BIT | OP_EXTERNAL_ADDRESS, result, epoch_s, address.packed
            )
        case MapResponse(result, epoch_s, opcode, internal, external, lifetime_s):
            return _MAP_RESPONSE.pack(
                VERSION, RESPONSE_BIT | opcode, result, epoch_s, internal, external, lifetime_s
            )
        case ErrorResponse(result, epoch_s, opcode):
            return _HEADER.pack(VERSION, RESPONSE_BIT | opcode, result, epoch_s)
