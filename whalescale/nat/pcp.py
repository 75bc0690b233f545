"""PCP (RFC 6887) MAP messages as pure functions: bytes in, frozen records out.

Addresses are 128-bit fields; IPv4 travels as an IPv4-mapped IPv6 address (section 5),
and `::ffff:0.0.0.0` asks for "any IPv4 external address" (section 11.1). Options are
neither sent nor interpreted: a response's options are skipped after a length check.
`parse_response` raises only `WireFormatError`.
"""

from __future__ import annotations

import enum
import ipaddress
import struct

import attrs

from . import errors
from .errors import WireFormatError

# Specification (RFC 6887 sections 7 and 11).
SERVER_PORT = 5351
VERSION = 2
OP_ANNOUNCE = 0
OP_MAP = 1
RESPONSE_BIT = 0x80
NONCE_BYTES = 12
MAX_MESSAGE_BYTES = 1100  # section 7
PROTOCOL_TCP = 6
PROTOCOL_UDP = 17
ANY_IPV4 = ipaddress.IPv4Address("0.0.0.0")  # sent as ::ffff:0.0.0.0

# version, R|opcode, reserved, requested lifetime, client IP
_REQUEST_HEADER = struct.Struct("!BBHI16s")
# version, R|opcode, reserved, result code, lifetime, epoch time, 96 reserved bits
_RESPONSE_HEADER = struct.Struct("!BBBBII12x")
# nonce, protocol, 24 reserved bits, internal port, external port, external address
_MAP_BODY = struct.Struct("!12sB3xHH16s")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ResultCode(enum.IntEnum):
    """RFC 6887 section 7.4."""

    SUCCESS = 0
    UNSUPP_VERSION = 1
    NOT_AUTHORIZED = 2
    MALFORMED_REQUEST = 3
    UNSUPP_OPCODE = 4
    UNSUPP_OPTION = 5
    MALFORMED_OPTION = 6
    NETWORK_FAILURE = 7
    NO_RESOURCES = 8
    UNSUPP_PROTOCOL = 9
    USER_EX_QUOTA = 10
    CANNOT_PROVIDE_EXTERNAL = 11
    ADDRESS_MISMATCH = 12
    EXCESSIVE_REMOTE_PEERS = 13


def result_name(code: int) -> str:
    return errors.result_name(ResultCode, code)


@attrs.frozen(slots=True)
class MapRequest:
    nonce: bytes
    protocol: int
    internal_port: int
    suggested_external_port: int
    lifetime_s: int
    client_address: IPAddress
    suggested_external_address: IPAddress = ANY_IPV4


@attrs.frozen(slots=True)
class MapResponse:
    result: int
    lifetime_s: int
    epoch_s: int
    nonce: bytes
    protocol: int
    internal_port: int
    external_port: int
    external_address: IPAddress  # unmapped: an IPv4Address for IPv4


@attrs.frozen(slots=True)
class ErrorResponse:
    """A header-only answer (e.g. UNSUPP_VERSION, whose version field is the server's)."""

    version: int
    opcode: int
    result: int
    lifetime_s: int
    epoch_s: int


Response = MapResponse | ErrorResponse


def pack_address(address: IPAddress) -> bytes:
    if isinstance(address, ipaddress.IPv4Address):
        return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + address.packed).packed
    return address.packed


def unpack_address(packed: bytes) -> IPAddress:
    address = ipaddress.IPv6Address(packed)
    return address.ipv4_mapped or address


def encode_map_request(request: MapRequest) -> bytes:
    """A MAP request (sections 7.1, 11.1); lifetime 0 deletes the mapping (15)."""
    if len(request.nonce) != NONCE_BYTES:
        raise ValueError(f"PCP nonce must be {NONCE_BYTES} bytes, not {len(request.nonce)}")
    header = _REQUEST_HEADER.pack(
        VERSION, OP_MAP, 0, request.lifetime_s, pack_address(request.client_address)
    )
    body = _MAP_BODY.pack(
        request.nonce,
        request.protocol,
        request.internal_port,
        request.suggested_external_port,
        pack_address(request.suggested_external_address),
    )
    return header + body


def parse_response(data: bytes) -> Response:
    """One datagram from the server's port 5351; `WireFormatError` if it is not one."""
    if len(data) < _RESPONSE_HEADER.size:
        raise WireFormatError(f"PCP response of {len(data)} bytes, need 24")
    if len(data) > MAX_MESSAGE_BYTES or len(data) % 4:
        raise WireFormatError(f"PCP response of {len(data)} bytes (max 1100, multiple of 4)")
    version, op, _, result, lifetime_s, epoch_s = _RESPONSE_HEADER.unpack_from(data)
    if not op & RESPONSE_BIT:
        raise WireFormatError(f"PCP opcode {op} is a request, not a response")
    opcode = op & ~RESPONSE_BIT
    has_body = len(data) >= _RESPONSE_HEADER.size + _MAP_BODY.size
    if version == VERSION and opcode == OP_MAP and has_body:
        nonce, protocol, internal, external, address = _MAP_BODY.unpack_from(
            data, _RESPONSE_HEADER.size
        )
        return MapResponse(
            result, lifetime_s, epoch_s, nonce, protocol, internal, external,
            unpack_address(address),
        )  # fmt: skip
    if result == ResultCode.SUCCESS:
        raise WireFormatError(
            f"PCP success (version {version}, opcode {opcode}) without a MAP body"
        )
    return ErrorResponse(version, opcode, result, lifetime_s, epoch_s)


def encode_response(response: Response) -> bytes:
    """The server's side, for test gateways and round trips."""
    match response:
        case MapResponse():
            header = _RESPONSE_HEADER.pack(
                VERSION, RESPONSE_BIT | OP_MAP, 0, response.result, response.lifetime_s,
                response.epoch_s,
            )  # fmt: skip
            body = _MAP_BODY.pack(
                response.nonce, response.protocol, response.internal_port,
                response.external_port, pack_address(response.external_address),
            )  # fmt: skip
            return header + body
        case ErrorResponse():
            return _RESPONSE_HEADER.pack(
                response.version, RESPONSE_BIT | response.opcode, 0, response.result,
                response.lifetime_s, response.epoch_s,
            )  # fmt: skip


def parse_map_request(data: bytes) -> MapRequest:
    """The server's side of `encode_map_request`, for test gateways and round trips."""
    if len(data) < _REQUEST_HEADER.size + _MAP_BODY.size:
        raise WireFormatError(f"PCP MAP request of {len(data)} bytes, need 60")
    version, op, _, lifetime_s, client = _REQUEST_HEADER.unpack_from(data)
    if version != VERSION or op != OP_MAP:
        raise WireFormatError(f"not a PCP MAP request (version {version}, opcode {op})")
    nonce, protocol, internal, external, address = _MAP_BODY.unpack_from(
        data, _REQUEST_HEADER.size
    )
    return MapRequest(
        nonce, protocol, internal, external, lifetime_s, unpack_address(client),
        unpack_address(address),
    )  # fmt: skip
