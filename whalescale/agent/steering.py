"""The port's two sockets, and the kernel steering each datagram to one of them.

Two UDP sockets share the mesh port in a SO_REUSEPORT group; a classic BPF program on
the group (SO_ATTACH_REUSEPORT_CBPF) reads the payload's first byte and returns the
socket's place in the group, as `wire.port.queue_of` decides: transport data to one
socket, everything else (handshakes, cookies, bootstrap probes, LAN hellos) to the
other, which has a small receive buffer and is read in small batches. A flood of
handshake messages then overflows its own queue in the kernel, where dropping costs
nothing, and transport data keeps its own queue and its place in the event loop.
Where the kernel refuses the program, one socket serves both, as before.

Every socket that takes transport data also carries a socket filter that drops, in the
kernel, untagged transport data whose receiver index is not one of ours: the engine
gives every index of ours the same random top byte (`Engine.index_tag`), so a flood of
random indices reaches Python at 1 in 256. Relay-tagged data passes (an anchor forwards
other nodes' sessions); the engine still checks every index that gets through.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct

from ..wire.port import TRANSPORT_TYPE, Queue
from . import udp

log = logging.getLogger("whalescale.agent")

SO_ATTACH_FILTER = 26
SO_ATTACH_REUSEPORT_CBPF = 51
# linux/filter.h opcodes
BPF_LD_B_ABS = 0x30  # BPF_LD | BPF_B | BPF_ABS: A = data[k] (out of range: return 0)
BPF_LD_H_ABS = 0x28  # BPF_LD | BPF_H | BPF_ABS: A = data[k:k+2], big-endian
BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
BPF_RET_K = 0x06
ACCEPT = 0xFFFFFFFF  # a socket filter's "keep the whole packet"
UDP_HEADER = 8  # a socket filter sees the datagram from its UDP header on
Program = tuple[tuple[int, int, int, int], ...]
CONTROL_BUFFER_BYTES = 256 * 1024  # a few hundred handshake-sized datagrams at most

# The program, one (code, jt, jf, k) per instruction. For UDP the kernel runs it on
# the payload (past the UDP header): an empty datagram fails the load, which returns
# 0, so CONTROL must be place 0.
assert Queue.CONTROL == 0
PROGRAM = (
    (BPF_LD_B_ABS, 0, 0, 0),
    (BPF_JEQ_K, 0, 1, TRANSPORT_TYPE),
    (BPF_RET_K, 0, 0, Queue.DATA),
    (BPF_RET_K, 0, 0, Queue.CONTROL),
)


def index_filter(tag: int) -> Program:
    """Keep what is not untagged transport data, and transport data whose receiver index
    (little-endian, payload bytes 4-7) has `tag` as its top byte; drop the rest."""
    return (
        (BPF_LD_B_ABS, 0, 0, UDP_HEADER),  # message type
        (BPF_JEQ_K, 0, 6, TRANSPORT_TYPE),  # not transport data: keep
        (BPF_LD_H_ABS, 0, 0, UDP_HEADER + 1),  # the relay tag's bytes...
        (BPF_JEQ_K, 0, 4, 0),
        (BPF_LD_B_ABS, 0, 0, UDP_HEADER + 3),
        (BPF_JEQ_K, 0, 2, 0),  # ...relay-tagged: keep
        (BPF_LD_B_ABS, 0, 0, UDP_HEADER + 7),  # the receiver index's top byte
        (BPF_JEQ_K, 0, 1, tag),
        (BPF_RET_K, 0, 0, ACCEPT),
        (BPF_RET_K, 0, 0, 0),
    )


def run_program(data: bytes, program: Program = PROGRAM) -> int:
    """What the kernel does with `program` (the tests hold it against `queue_of`)."""
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        if code in (BPF_LD_B_ABS, BPF_LD_H_ABS):
            size = 1 if code == BPF_LD_B_ABS else 2
            if k + size > len(data):
                return 0
            acc = int.from_bytes(data[k:k + size], "big")
            pc += 1
        elif code == BPF_JEQ_K:
            pc += 1 + (jt if acc == k else jf)
        elif code == BPF_RET_K:
            return k
        else:
            raise ValueError(f"opcode {code:#x}")


def _attach(sock: socket.socket, option: int, program: Program) -> None:
    filters = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(filters)  # the kernel copies it
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, option, fprog)


def filter_indices(sock: socket.socket, tag: int) -> None:
    """Drop foreign transport data on `sock` in the kernel (see the module's text)."""
    try:
        _attach(sock, SO_ATTACH_FILTER, index_filter(tag))
    except OSError as exc:
        log.info("no kernel filter of receiver indices (%s)", exc.strerror)


def open_port(host: str, port: int, family: socket.AddressFamily
              ) -> tuple[socket.socket, socket.socket | None]:
    """(the socket that sends and takes transport data, the control socket); the
    second is None where steering is not available, and the first takes everything."""
    control = udp.open_udp(host, port, family, reuseport=True,
                           receive_buffer=CONTROL_BUFFER_BYTES)
    try:
        data = udp.open_udp(host, port, family, reuseport=True)
    except OSError:
        control.close()
        raise
    try:
        _attach(control, SO_ATTACH_REUSEPORT_CBPF, PROGRAM)
    except OSError as exc:
        log.info("no kernel steering of the port (%s): one socket for all", exc.strerror)
        control.close()
        return data, None
    return data, control
