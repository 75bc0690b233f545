"""The link emulator: delay, jitter and loss in userspace, because this kernel has no netem.

Theory of operation. One process per emulated link runs inside that link's emulator
namespace (see links.py) and forwards Ethernet frames between its two interfaces with
AF_PACKET raw sockets. The namespace has no addresses and IP forwarding off, so the kernel
never forwards a frame itself: this process is the only way across, and the link is a
plain L2 wire to the hosts (ARP included).

Each direction is a `DelayLine`:
- a frame is lost with probability `loss` (independently per frame and per direction);
- otherwise it leaves at arrival + delay + uniform(-jitter, +jitter) (never below zero),
  but never before the frame ahead of it. Real links keep order: jitter shows as varying
  delay, not as reordering. Under load this skews the delay upward (a frame drawn early
  waits behind the one before it), as a queue would.
Departures are monotonic, so a direction's pending frames are a FIFO and a deque is the
timer heap; the process sleeps in `select` until the earlier of the two heads is due.

Rate is not ours: tbf on each interface's egress (links.py) shapes what we send, so a link
is "propagation delay, then the bottleneck queue". A frame that tbf refuses (queue full)
fails our send with ENOBUFS and counts as a queue drop. Senders must not hand us TSO
super-frames or partial checksums: `offload-off` (used by links.py on the hosts' ends)
turns those off, so every frame we see is one wire frame with a correct checksum.

Control: a UNIX datagram socket takes JSON requests {"op": "set", "delay_ms", "jitter_ms",
"loss"}, {"op": "down"} / {"op": "up"} (drop everything, as a path that died, while
keeping the hosts' carrier up) and {"op": "stats"}; each gets a JSON answer.

The same module carries the measuring tools run inside lab hosts: `probe-send` and
`probe-recv` (one-way delay from the shared monotonic clock, loss, reordering over UDP)
and `ping` (ICMP echo round-trip times; the machine has no ping binary).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import errno
import fcntl
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time

import attrs

from whalescale.lab.icmp import ECHO_REPLY_V4, ECHO_REQUEST_V4, checksum

ETH_P_ALL = 0x0003
# Linux socket options the socket module does not name (include/uapi/linux/if_packet.h).
SOL_PACKET, PACKET_IGNORE_OUTGOING = 263, 23
SO_RCVBUFFORCE, SO_SNDBUFFORCE = 33, 32
SOCKET_BUF_BYTES = 8 << 20
# Frames read from one socket before looking at the other and at departures.
RECV_BATCH = 128
# Legacy ethtool ioctls (include/uapi/linux/ethtool.h); they still work on every driver.
SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM, ETHTOOL_SSG, ETHTOOL_STSO, ETHTOOL_SGSO = 0x17, 0x19, 0x1F, 0x24
PROBE_HEADER = struct.Struct("!QQ")  # sequence number, send time (CLOCK_MONOTONIC, ns)


@attrs.frozen
class EmuParams:
    """What one direction of a link does to frames; both directions get the same."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError(f"delay and jitter must be >= 0, got {self}")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss is a probability in [0, 1], got {self.loss}")


@attrs.define
class DirectionStats:
    frames_in: int = 0
    lost: int = 0  # dropped by the emulated random loss
    down_drops: int = 0  # dropped because the link was set down
    queue_drops: int = 0  # refused by tbf (or the interface) when we sent
    forwarded: int = 0


class DelayLine:
    """One direction of a link: loss on arrival, then FIFO departure at arrival + delay.

    Sans-I/O: the caller passes `now` (seconds) and does the sending.
    """

    def __init__(self, params: EmuParams, rng: random.Random) -> None:
        self.params = params
        self.down = False
        self.stats = DirectionStats()
        self._rng = rng
        self._pending: collections.deque[tuple[float, bytes]] = collections.deque()
        self._last_departure = 0.0

    def arrive(self, now: float, frame: bytes) -> None:
        self.stats.frames_in += 1
        p = self.params
        if self.down:
            self.stats.down_drops += 1
            return
        if p.loss and self._rng.random() < p.loss:
            self.stats.lost += 1
            return
        delay_s = p.delay_ms / 1000
        if p.jitter_ms:
            delay_s = max(0.0, delay_s + self._rng.uniform(-p.jitter_ms, p.jitter_ms) / 1000)
        departure = max(now + delay_s, self._last_departure)
        self._last_departure = departure
        self._pending.append((departure, frame))

    def next_departure(self) -> float | None:
        return self._pending[0][0] if self._pending else None

    def due(self, now: float) -> list[bytes]:
        """The frames whose departure time has come, oldest first."""
        out = []
        pending = self._pending
        while pending and pending[0][0] <= now:
            out.append(pending.popleft()[1])
        return out

    def set_down(self, down: bool) -> None:
        """A dead path loses what it carried too."""
        self.down = down
        if down:
            self.stats.down_drops += len(self._pending)
            self._pending.clear()


def _packet_socket(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    # Our own sends would come back to us as PACKET_OUTGOING copies.
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    # Forced sizes: the default 208 KiB overflows at a few hundred Mbit/s, and a full send
    # buffer must not decide drops that belong to tbf.
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, SOCKET_BUF_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SOCKET_BUF_BYTES)
    sock.bind((ifname, ETH_P_ALL))
    sock.setblocking(False)
    return sock


class Emulator:
    """The I/O shell: two packet sockets, two delay lines, one control socket."""

    def __init__(
        self, left: str, right: str, params: EmuParams, seed: int, control_path: str
    ) -> None:
        self.socks = {name: _packet_socket(name) for name in (left, right)}
        rng = random.Random(seed)
        # lines[x] carries frames that arrived on interface x towards the other one.
        self.lines = {left: DelayLine(params, rng), right: DelayLine(params, rng)}
        self.out = {left: self.socks[right], right: self.socks[left]}
        self.mtu_frame = 65536
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.control.bind(control_path)
        self.control.setblocking(False)
        self._by_fd: dict[int, str] = {s.fileno(): n for n, s in self.socks.items()}

    def _read(self, name: str) -> None:
        sock, line = self.socks[name], self.lines[name]
        for _ in range(RECV_BATCH):
            try:
                frame = sock.recv(self.mtu_frame)
            except BlockingIOError:
                return
            line.arrive(time.monotonic(), frame)

    def _send_due(self, now: float) -> None:
        for name, line in self.lines.items():
            frames = line.due(now)
            if not frames:
                continue
            sock = self.out[name]
            for frame in frames:
                try:
                    sock.send(frame)
                    line.stats.forwarded += 1
                except OSError as exc:
                    # ENOBUFS: tbf's queue is full; EAGAIN: socket buffer; ENETDOWN and
                    # friends: the interface went away. All are drops on the wire.
                    if exc.errno not in (errno.ENOBUFS, errno.EAGAIN, errno.ENETDOWN,
                                         errno.ENXIO, errno.EMSGSIZE):
                        raise
                    line.stats.queue_drops += 1

    def _handle_control(self) -> None:
        while True:
            try:
                data, peer = self.control.recvfrom(4096)
            except BlockingIOError:
                return
            try:
                request = json.loads(data)
                answer = self._apply(request)
            except (ValueError, KeyError, TypeError) as exc:
                answer = {"ok": False, "error": str(exc)}
            if peer:
                # OSError: the asker went away; nothing to tell.
                with contextlib.suppress(OSError):
                    self.control.sendto(json.dumps(answer).encode(), peer)

    def _apply(self, request: dict[str, object]) -> dict[str, object]:
        op = request["op"]
        if op == "set":
            params = EmuParams(
                float(request["delay_ms"]), float(request["jitter_ms"]), float(request["loss"])  # type: ignore[arg-type]
            )
            for line in self.lines.values():
                line.params = params
        elif op in ("down", "up"):
            for line in self.lines.values():
                line.set_down(op == "down")
        elif op != "stats":
            raise ValueError(f"unknown op {op!r}")
        return {"ok": True, "stats": self.stats()}

    def stats(self) -> dict[str, dict[str, int]]:
        return {name: attrs.asdict(line.stats) for name, line in self.lines.items()}

    def run(self) -> None:
        """Forward until a signal handler raises."""
        # select, not poll: its timeout has microsecond resolution, poll's only milliseconds
        # (which showed as up to a millisecond of extra delay).
        fds = [*self.socks.values(), self.control]
        while True:
            heads = [
                t for t in (ln.next_departure() for ln in self.lines.values()) if t is not None
            ]
            timeout_s = max(0.0, min(heads) - time.monotonic()) if heads else None
            readable, _, _ = select.select(fds, [], [], timeout_s)
            for sock in readable:
                if sock is self.control:
                    self._handle_control()
                else:
                    self._read(self._by_fd[sock.fileno()])
            self._send_due(time.monotonic())


class _Stop(Exception):
    """SIGTERM or SIGINT: leave the loop (raised from the handler, so a blocking poll
    ends too instead of being retried)."""


def _on_stop_signal(signum: int, frame: object) -> None:
    raise _Stop


def serve(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _on_stop_signal)
    signal.signal(signal.SIGINT, _on_stop_signal)
    params = EmuParams(args.delay_ms, args.jitter_ms, args.loss)
    emu = Emulator(args.left, args.right, params, args.seed, args.control)
    print(f"linkemu ready: {args.left}<->{args.right} {params}", flush=True)
    try:
        emu.run()
    except _Stop:
        pass
    finally:
        print("linkemu stats " + json.dumps(emu.stats()), flush=True)
        os.unlink(args.control)
    return 0


def offload_off(ifnames: list[str]) -> int:
    """Turn off checksum offload, scatter-gather, TSO and GSO on `ifnames` (this netns)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for ifname in ifnames:
            for cmd in (ETHTOOL_STXCSUM, ETHTOOL_SSG, ETHTOOL_STSO, ETHTOOL_SGSO):
                value = ctypes.create_string_buffer(struct.pack("=II", cmd, 0))
                ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(value))
                fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    return 0


def probe_send(args: argparse.Namespace) -> int:
    """`count` UDP datagrams of `size` bytes, each stamped with its sequence and send time."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        if args.bind:
            sock.bind((args.bind, 0))
        padding = b"\0" * max(0, args.size - PROBE_HEADER.size)
        start = time.monotonic()
        for seq in range(args.count):
            # Paced against the start time, so a late wake-up does not stretch the run.
            wait = start + seq * args.interval_ms / 1000 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            sock.sendto(PROBE_HEADER.pack(seq, time.monotonic_ns()) + padding,
                        (args.to, args.port))
    return 0


def probe_recv(args: argparse.Namespace) -> int:
    """Receive probes until `count` came or none for `idle_s`; print a JSON summary."""
    one_way_ms: list[float] = []
    reordered = 0
    highest = -1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, SOCKET_BUF_BYTES)
        sock.bind((args.bind, args.port))
        print("probe listening", flush=True)
        sock.settimeout(args.first_s)
        while len(one_way_ms) < args.count:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            now_ns = time.monotonic_ns()
            sock.settimeout(args.idle_s)
            seq, sent_ns = PROBE_HEADER.unpack_from(data)
            one_way_ms.append((now_ns - sent_ns) / 1e6)
            if seq < highest:
                reordered += 1
            highest = max(highest, seq)
    print(json.dumps({"received": len(one_way_ms), "reordered": reordered,
                      "one_way_ms": one_way_ms}), flush=True)
    return 0


def ping(args: argparse.Namespace) -> int:
    """ICMP echo round-trip times in ms as JSON (null for a request without reply)."""
    ident = os.getpid() & 0xFFFF
    rtts: list[float | None] = []
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        for seq in range(args.count):
            payload = struct.pack("!Q", time.monotonic_ns())
            header = struct.pack("!BBHHH", ECHO_REQUEST_V4, 0, 0, ident, seq)
            header = struct.pack("!BBHHH", ECHO_REQUEST_V4, 0, checksum(header + payload),
                                 ident, seq)
            sock.sendto(header + payload, (args.to, 0))
            deadline = time.monotonic() + args.timeout_s
            rtt = None
            while rtt is None and (left := deadline - time.monotonic()) > 0:
                if not select.select([sock], [], [], left)[0]:
                    break
                packet = sock.recv(2048)
                now_ns = time.monotonic_ns()
                icmp = packet[(packet[0] & 0x0F) * 4:]
                kind, _, _, r_ident, r_seq = struct.unpack("!BBHHH", icmp[:8])
                if (kind, r_ident, r_seq) == (ECHO_REPLY_V4, ident, seq):
                    rtt = (now_ns - struct.unpack("!Q", icmp[8:16])[0]) / 1e6
            rtts.append(rtt)
            time.sleep(args.interval_ms / 1000)
    print(json.dumps(rtts), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m whalescale.bench.linkemu")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve", help="forward frames between two interfaces")
    p.add_argument("--left", required=True)
    p.add_argument("--right", required=True)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--control", required=True, help="path of the control socket")
    p.set_defaults(func=serve)
    p = sub.add_parser("offload-off", help="no TSO/GSO/checksum offload on interfaces")
    p.add_argument("ifnames", nargs="+")
    p.set_defaults(func=lambda a: offload_off(a.ifnames))
    p = sub.add_parser("probe-send")
    p.add_argument("--to", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bind", default="")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--interval-ms", type=float, default=10.0)
    p.add_argument("--size", type=int, default=100)
    p.set_defaults(func=probe_send)
    p = sub.add_parser("probe-recv")
    p.add_argument("--bind", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--first-s", type=float, default=10.0, help="wait for the first probe")
    p.add_argument("--idle-s", type=float, default=1.0, help="give up after a silence")
    p.set_defaults(func=probe_recv)
    p = sub.add_parser("ping")
    p.add_argument("--to", required=True)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--interval-ms", type=float, default=20.0)
    p.add_argument("--timeout-s", type=float, default=2.0)
    p.set_defaults(func=ping)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
