"""The one error the NAT wire parsers raise, and how their result codes read."""

from enum import IntEnum


class WireFormatError(ValueError):
    """A datagram is not a well-formed NAT-PMP/PCP message; the text says which field."""


def result_name(codes: type[IntEnum], code: int) -> str:
    """The name of a protocol's result code, or the number when it is not one we know."""
    try:
        return codes(code).name
    except ValueError:
        return f"result {code}"
