"""The one error the NAT wire parsers raise."""


class WireFormatError(ValueError):
    """A datagram is not a well-formed NAT-PMP/PCP message; the text says which field."""
