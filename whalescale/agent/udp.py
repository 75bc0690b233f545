"""Batched UDP for the data path: GSO on send, GRO on receive, on a non-blocking socket.

One `sendmsg` with a UDP_SEGMENT control message hands the kernel up to 64 equal-size datagrams
(the last may be shorter) and one `recvmsg` with UDP_GRO enabled returns up to 64 KB of
datagrams that arrived back to back, with their size in a control message. Both cut the
per-datagram system-call cost that bounds a Python data path. Where the kernel or the route
cannot segment (EIO), we remember it per socket and send one datagram at a time.
"""

import errno
import logging
import socket
import struct
import weakref

log = logging.getLogger(__name__)

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
# ip(7)/ipv6(7): set DF and never fragment, whatever the kernel's PMTU cache says
IP_MTU_DISCOVER, IPV6_MTU_DISCOVER, PMTUDISC_PROBE = 10, 23, 3
# udp(7): at most 64 segments, and the whole run must fit one IP packet's length field.
MAX_GSO_SEGMENTS = 64
MAX_GSO_BYTES = 65507
BUFFER_BYTES = 8 * 1024 * 1024
_RECV_BYTES = 65535
_GSO_SIZE = struct.Struct("=H")  # UDP_SEGMENT takes a u16
_GRO_SIZE = struct.Struct("=i")  # UDP_GRO reports an int
_CMSG_BYTES = socket.CMSG_SPACE(_GRO_SIZE.size)
# Also bounds a batch of empty datagrams, which `max_bytes` cannot.
MAX_RECV_CALLS = 256

# Sockets on which GSO failed for good; weak so closed sockets drop out.
_gso_refused: "weakref.WeakSet[socket.socket]" = weakref.WeakSet()


def open_udp(host: str, port: int, family: socket.AddressFamily = socket.AF_INET,
             device: str | None = None, *, reuseport: bool = False,
             receive_buffer: int = BUFFER_BYTES) -> socket.socket:
    """Bind a non-blocking UDP socket with large buffers and UDP_GRO on; with `device`,
    one that sends and receives only through that interface (a multipath path's); with
    `reuseport`, one of a SO_REUSEPORT group on the same address (steering.py)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        # The default socket and the per-interface ones share the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if device is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
            # A multipath path's probes measure its MTU (multipath/link.py): one too large
            # must be lost, not fragmented on the way, and the path's data is sized to fit.
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, PMTUDISC_PROBE)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, PMTUDISC_PROBE)
        if family == socket.AF_INET6:
            # The agent binds IPv4 separately on the same port; mapped addresses
            # would also give one peer two spellings of its endpoint.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        for force, plain, size in (
            (SO_RCVBUFFORCE, socket.SO_RCVBUF, receive_buffer),
            (SO_SNDBUFFORCE, socket.SO_SNDBUF, BUFFER_BYTES),
        ):
            try:
                # The FORCE variants pass net.core.[rw]mem_max; they need CAP_NET_ADMIN.
                sock.setsockopt(socket.SOL_SOCKET, force, size)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
        try:
            sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        except OSError as error:
            log.info("UDP_GRO unavailable (%s): one datagram per receive", error)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def recv_batch(sock: socket.socket, max_bytes: int = 1 << 20,
               max_calls: int = MAX_RECV_CALLS) -> list[tuple[bytes, object]]:
    """Receive what is queued, up to about `max_bytes` in at most `max_calls` receives,
    as (datagram, address) pairs."""
    datagrams: list[tuple[bytes, object]] = []
    buffer = bytearray(_RECV_BYTES)
    view = memoryview(buffer)
    received = 0
    for _ in range(max_calls):
        if received >= max_bytes:
            break
        try:
            size, ancdata, _flags, address = sock.recvmsg_into([buffer], _CMSG_BYTES)
        except (BlockingIOError, InterruptedError):
            break
        received += size
        if size == 0:
            datagrams.append((b"", address))
            continue
        segment = size
        for level, kind, data in ancdata:
            if level == SOL_UDP and kind == UDP_GRO and len(data) >= _GRO_SIZE.size:
                segment = _GRO_SIZE.unpack_from(data)[0] or size
        filled = view[:size]
        datagrams.extend(
            (bytes(filled[offset : offset + segment]), address)
            for offset in range(0, size, segment)
        )
    return datagrams


def send_batch(sock: socket.socket, datagrams: list[bytes], address: object) -> int:
    """Send `datagrams` to `address`, runs of equal size in one GSO call; return how many left.

    A full send buffer drops the rest of the batch, as a full queue would: UDP promises nothing.
    Other errors of a plain send (unreachable network, ...) are raised to the caller.
    """
    sent = index = 0
    while index < len(datagrams):
        end = index + 1 if sock in _gso_refused else _run_end(datagrams, index)
        try:
            if end - index > 1 and _send_segmented(sock, datagrams[index:end], address):
                sent += end - index
            else:
                for datagram in datagrams[index:end]:
                    sock.sendto(datagram, address)
                    sent += 1
        except BlockingIOError:
            break
        index = end
    return sent


def _run_end(datagrams: list[bytes], start: int) -> int:
    """End of the GSO run from `start`: equal sizes, one shorter last, within kernel limits."""
    size = len(datagrams[start])
    total = size
    end = start + 1
    limit = min(len(datagrams), start + MAX_GSO_SEGMENTS)
    while end < limit and size:
        length = len(datagrams[end])
        if length > size or total + length > MAX_GSO_BYTES:
            break
        total += length
        end += 1
        if length < size:
            break
    return end


def _send_segmented(sock: socket.socket, run: list[bytes], address: object) -> bool:
    """One sendmsg for the whole run; False if the kernel refused it (caller sends singly)."""
    control = [(SOL_UDP, UDP_SEGMENT, _GSO_SIZE.pack(len(run[0])))]
    try:
        sock.sendmsg(run, control, 0, address)
    except BlockingIOError:
        raise
    except OSError as error:
        if error.errno in (errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
            # No GSO here (e.g. EIO: the route's device cannot checksum): stop trying.
            log.info("UDP GSO refused (%s): sending one datagram at a time", error)
            _gso_refused.add(sock)
        # Anything else (e.g. EINVAL for segments above the path MTU) costs this run only.
        return False
    return True
