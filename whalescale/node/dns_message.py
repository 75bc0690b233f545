"""The DNS wire format, as much of it as an authoritative answerer for one zone needs:
a query in (RFC 1035 §4.1 header and question, an RFC 6891 OPT record), a response
out. Strict and bounded: anything a stub resolver would not send is MalformedQuery,
and a malformed query gets no answer at all (it may be a response bounced at us, or
a probe: answering it could start a loop or reflect traffic).
"""

from __future__ import annotations

import struct

import attrs

# RFC 1035 §4.1.1 header flags and codes, RFC 6891 §6.1 OPT.
QR = 0x8000
OPCODE_MASK = 0x7800
AA = 0x0400
TC = 0x0200
RD = 0x0100
RCODE_NOERROR, RCODE_FORMERR, RCODE_NXDOMAIN, RCODE_NOTIMP, RCODE_REFUSED = 0, 1, 3, 4, 5
RCODE_BADVERS = 16  # extended: the low 4 bits in the header, the rest in OPT
TYPE_A, TYPE_AAAA, TYPE_OPT, TYPE_ANY = 1, 28, 41, 255
CLASS_IN = 1
MAX_NAME_BYTES = 255  # RFC 1035 §2.3.4, on the wire
MAX_LABEL_BYTES = 63
PLAIN_UDP_BYTES = 512  # a response without EDNS (RFC 1035 §4.2.1)
_HEADER = struct.Struct("!HHHHHH")
_TYPE_CLASS = struct.Struct("!HH")
_OPT_FIXED = struct.Struct("!HHBBHH")  # type, UDP size, ext-rcode, version, flags, rdlen
_POINTER_TO_QUESTION = b"\xc0\x0c"  # every answer's owner is the question's name


class MalformedQuery(ValueError):
    """Not a query we parse; the message says what is wrong (for a debug log)."""


@attrs.frozen
class Edns:
    udp_size: int
    version: int


@attrs.frozen
class Query:
    id: int
    flags: int
    labels: tuple[bytes, ...]  # lower-cased, for matching
    qtype: int
    qclass: int
    question: bytes  # as sent, case and all: echoed back (0x20 randomisation checks it)
    edns: Edns | None

    @property
    def opcode(self) -> int:
        return (self.flags & OPCODE_MASK) >> 11


def parse_query(data: bytes) -> Query:
    """One query: one question, no answer or authority records, at most an OPT record in
    the additional section, nothing after. Raises MalformedQuery."""
    if len(data) < _HEADER.size:
        raise MalformedQuery(f"{len(data)} bytes, shorter than a DNS header")
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & QR:
        raise MalformedQuery("a response, not a query")
    if (qdcount, ancount, nscount) != (1, 0, 0) or arcount > 1:
        raise MalformedQuery(f"sections {qdcount}/{ancount}/{nscount}/{arcount}, "
                             "expected one question and at most an OPT record")
    labels, offset = _name(data, _HEADER.size)
    if offset + _TYPE_CLASS.size > len(data):
        raise MalformedQuery("the question ends before its type and class")
    qtype, qclass = _TYPE_CLASS.unpack_from(data, offset)
    offset += _TYPE_CLASS.size
    question = data[_HEADER.size:offset]
    edns = None
    if arcount:
        edns, offset = _opt(data, offset)
    if offset != len(data):
        raise MalformedQuery(f"{len(data) - offset} bytes after the query")
    return Query(qid, flags, tuple(label.lower() for label in labels), qtype, qclass,
                 question, edns)


def _name(data: bytes, offset: int) -> tuple[list[bytes], int]:
    """An uncompressed name: a query has one name, so a pointer is never needed."""
    labels: list[bytes] = []
    start = offset
    while True:
        if offset >= len(data):
            raise MalformedQuery("the name runs past the end")
        length = data[offset]
        if length & 0xC0:
            raise MalformedQuery("a compressed or extended label in a question")
        offset += 1
        if length == 0:
            break
        if offset + length > len(data):
            raise MalformedQuery("a label runs past the end")
        labels.append(data[offset:offset + length])
        offset += length
        if offset - start >= MAX_NAME_BYTES:
            raise MalformedQuery(f"a name longer than {MAX_NAME_BYTES} bytes")
    return labels, offset


def _opt(data: bytes, offset: int) -> tuple[Edns, int]:
    """The OPT pseudo-record (RFC 6891 §6.1.2); its options are skipped, but their
    lengths must add up."""
    if data[offset:offset + 1] != b"\x00":
        raise MalformedQuery("an additional record that is not an OPT with the root name")
    offset += 1
    if offset + _OPT_FIXED.size > len(data):
        raise MalformedQuery("the OPT record ends early")
    rtype, udp_size, _ext_rcode, version, _flags, rdlen = _OPT_FIXED.unpack_from(data, offset)
    if rtype != TYPE_OPT:
        raise MalformedQuery(f"an additional record of type {rtype}, expected OPT")
    offset += _OPT_FIXED.size
    end = offset + rdlen
    if end > len(data):
        raise MalformedQuery("the OPT options run past the end")
    while offset < end:
        if offset + 4 > end:
            raise MalformedQuery("an EDNS option header runs past its record")
        (length,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + length
        if offset > end:
            raise MalformedQuery("an EDNS option runs past its record")
    return Edns(udp_size, version), end


@attrs.frozen
class Record:
    """An answer for the question's name."""

    rtype: int
    ttl_s: int
    rdata: bytes

    def encode(self) -> bytes:
        return (_POINTER_TO_QUESTION + struct.pack("!HHIH", self.rtype, CLASS_IN, self.ttl_s,
                                                   len(self.rdata)) + self.rdata)


def encode_response(query: Query, rcode: int, answers: list[Record], *, limit: int,
                    edns_udp_size: int) -> bytes:
    """The response to `query`: authoritative, not recursive (RA clear, RD echoed), the
    question echoed. If the answers do not fit in `limit` bytes, none are sent and TC is
    set (the resolver then asks over TCP). With EDNS in the query, an OPT record says
    we take `edns_udp_size`."""
    opt = b""
    if query.edns is not None:
        opt = b"\x00" + _OPT_FIXED.pack(TYPE_OPT, edns_udp_size, rcode >> 4, 0, 0, 0)
    body = b"".join(record.encode() for record in answers)
    flags = QR | (query.flags & (OPCODE_MASK | RD)) | AA | (rcode & 0xF)
    if _HEADER.size + len(query.question) + len(body) + len(opt) > limit:
        flags |= TC
        answers, body = [], b""
    header = _HEADER.pack(query.id, flags, 1, len(answers), 0, 1 if opt else 0)
    return header + query.question + body + opt


def encode_header_only(query: Query, rcode: int) -> bytes:
    """A bare header with `rcode` (NOTIMP for an opcode we do not serve): never longer
    than the query."""
    flags = QR | (query.flags & (OPCODE_MASK | RD)) | (rcode & 0xF)
    return _HEADER.pack(query.id, flags, 0, 0, 0, 0)
