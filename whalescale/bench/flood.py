"""Floods against a live agent (issue 15): what one hostile sender costs a session.

Theory of operation: three lab hosts. `target` runs an agent (an anchor, public) and
`peer` one with a live session to it; `flood` sits on its own link to the target. For
each kind of flood, a pinger in `peer` sends a UDP datagram through the tunnel every
`PING_EVERY_S` to an echo on the target and records each round trip, while `flood`
sends as fast as one Python process can for `seconds`; then a newcomer node's agent
starts (a new legitimate handshake under the flood) and the time to its first answer
is taken. Reported per kind: the flood's rate, pings lost and the largest round trip,
the target agent's CPU share and RSS growth, its handshake work (responses sent) and
its drop counters, the newcomer's first answer, and how long the target's and the
peer's agents and the pinger waited for a core during the worst round trip (they share
the machine with the flood's sender: a late answer may be a process kept off the CPU).

Kinds (each datagram a WireGuard message to the target's port):
- `init-mac1`: initiations with a valid mac1 and random bodies, from 6 source addresses;
- `init-bad-mac1`: the same with a wrong mac1;
- `init-spoofed`: valid-mac1 initiations from thousands of spoofed source addresses
  (a raw socket writes the IP header);
- `data-random`: transport-data messages with random receiver indices.

Run as `python -m whalescale.bench.flood send KIND ...` inside the flood namespace, this
module is the sender; `... ping ADDR PORT SECONDS` the pinger.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import struct
import sys
import threading
import time

from ..lab.proc import cpu_seconds, proc_file, rss_mib
from .start import agent_pid

PING_EVERY_S = 0.02
KINDS = ("init-mac1", "init-bad-mac1", "init-spoofed", "data-random")
SOURCES = 6
SPOOFED_SOURCES = 4096
_VARIANTS = 512


def _initiations(target_public: bytes, valid_mac1: bool) -> list[bytes]:
    from whalescale.session.cookie import CookieGenerator
    from whalescale.wire import messages

    sealer = CookieGenerator(target_public)
    rng = random.Random(7)
    found = []
    for _ in range(_VARIANTS):
        body = messages.build_initiation_body(rng.getrandbits(32), rng.randbytes(32 + 48 + 28))
        message = bytearray(sealer.seal(body, 0.0))
        if not valid_mac1:
            message[messages.INITIATION_MAC1_OFFSET] ^= 0xFF
        found.append(bytes(message))
    return found


def _data() -> list[bytes]:
    rng = random.Random(7)
    return [struct.pack("<IIQ", 4, rng.getrandbits(32), rng.getrandbits(64)) + rng.randbytes(64)
            for _ in range(_VARIANTS)]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _spoofed(payloads: list[bytes], target: str, port: int, base: str) -> list[bytes]:
    """IPv4 + UDP packets from `SPOOFED_SOURCES` addresses of `base`/16 (UDP checksum 0:
    allowed over IPv4, and the kernel takes it)."""
    rng = random.Random(9)
    prefix = socket.inet_aton(base)[:2]
    found = []
    for i in range(_VARIANTS * 8):
        payload = payloads[i % len(payloads)]
        source = prefix + struct.pack("!H", rng.randrange(1, SPOOFED_SOURCES + 1))
        udp = struct.pack("!HHHH", rng.randrange(1024, 65535), port, 8 + len(payload), 0)
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(payload), 0, 0x4000, 64,
                             socket.IPPROTO_UDP, 0, source, socket.inet_aton(target))
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
        found.append(header + udp + payload)
    return found


def send(kind: str, target: str, port: int, target_public: bytes, seconds: float,
         sources: list[str]) -> dict[str, float]:
    if kind == "data-random":
        payloads = _data()
    else:
        payloads = _initiations(target_public, valid_mac1=kind != "init-bad-mac1")
    if kind == "init-spoofed":
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        packets = _spoofed(payloads, target, port, "172.31.0.0")
        socks = [(raw, p) for p in packets]
        dest = (target, 0)
    else:
        socks = []
        for i, source in enumerate(sources):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((source, 0))
            socks += [(sock, p) for p in payloads[i::len(sources)]]
        dest = (target, port)
    sent = failed = i = 0
    n = len(socks)
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        for _ in range(1024):
            sock, packet = socks[i]
            i = (i + 1) % n
            try:
                sock.sendto(packet, dest)
                sent += 1
            except OSError:  # a full queue (ENOBUFS): the kernel drops, we go on
                failed += 1
    elapsed = time.monotonic() - started
    return {"kind": kind, "sent": sent, "failed": failed, "seconds": elapsed,
            "rate": sent / elapsed}


def ping(addr: str, port: int, seconds: float) -> dict[str, float]:
    """A datagram every PING_EVERY_S; each answer's round trip (late ones count as lost
    after 1 s)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sent_at: dict[int, float] = {}
    # (sent at, round trip); the monotonic clock is the machine's, so the bench can put
    # its run-queue samples beside the worst one
    rtts: list[tuple[float, float]] = []
    seq = 0
    print("started", flush=True)
    started = time.monotonic()
    next_send = started
    while time.monotonic() < started + seconds + 1.0:
        now = time.monotonic()
        if now >= next_send and now < started + seconds:
            sock.sendto(struct.pack("!I", seq), (addr, port))
            sent_at[seq] = now
            seq += 1
            next_send += PING_EVERY_S
        try:
            while True:
                data = sock.recv(64)
                (got,) = struct.unpack("!I", data[:4])
                if got in sent_at and time.monotonic() - sent_at[got] <= 1.0:
                    at = sent_at.pop(got)
                    rtts.append((at, time.monotonic() - at))
        except BlockingIOError:
            pass
        time.sleep(0.001)
    worst = max(rtts, default=None, key=lambda sent_rtt: sent_rtt[1])
    ordered = sorted(rtt for _, rtt in rtts)
    return {"sent": seq, "answered": len(rtts),
            "max_rtt_ms": 1000 * ordered[-1] if rtts else None,
            "p99_rtt_ms": 1000 * ordered[int(0.99 * (len(rtts) - 1))] if rtts else None,
            "worst_sent_at": worst[0] if worst else None}


if __name__ == "__main__":
    if sys.argv[1] == "send":
        _, _, kind, target, port, public_hex, seconds, *sources = sys.argv
        os.nice(0)
        print(json.dumps(send(kind, target, int(port), bytes.fromhex(public_hex),
                              float(seconds), sources)), flush=True)
    else:
        print(json.dumps(ping(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))), flush=True)


# ----- the bench: lab hosts, the target's agent, the figures --------------------------------

def _cpu_s(pid: int) -> float:
    return cpu_seconds(proc_file(pid, "stat"), os.sysconf("SC_CLK_TCK"))


class RunQueueWaits:
    """How long each of some processes' main threads waited for a core (the scheduler's
    run-queue delay, /proc/PID/schedstat), sampled every 10 ms: the flood's sender, the
    agents and the pinger share this machine's cores, and a late ping may be one of them
    waiting rather than the tunnel."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            waits = {}
            for name, pid in self._pids.items():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    waits[name] = int(proc_file(pid, "schedstat").split()[1])
            self._samples.append((time.monotonic(), waits))

    def between(self, start: float, end: float) -> dict[str, float]:
        """Milliseconds each waited from the last sample before `start` to the first
        after `end` (so at most 10 ms more on either side)."""
        before = [w for t, w in self._samples if t <= start]
        after = [w for t, w in self._samples if t >= end]
        if not before or not after:
            return {}
        return {name: (after[0][name] - before[-1][name]) / 1e6
                for name in self._pids if name in before[-1] and name in after[0]}


DH_DROPS = ("unknown_peer", "bad_initiation")


def run_flood_bench(kinds: tuple[str, ...] = KINDS, seconds: float = 20.0,
                    python_path: str | None = None) -> list[dict]:
    """`python_path`: the agents' PYTHONPATH, to measure another checkout's agent."""
    from whalescale.lab import gaps
    from whalescale.lab.lab import Lab
    from whalescale.lab.mesh import LabMesh

    results = []
    with Lab() as lab:
        hosts = lab.star(["target", "peer", "newcomer"])
        target = hosts["target"]
        flood = lab.host("flood")
        link = lab.link(flood, target)
        flood_if = link.a_ifname
        base = link.addr_of(flood).rsplit(".", 1)[0]
        sources = [link.addr_of(flood)]
        for k in range(10, 10 + SOURCES - 1):
            flood.run("ip", "addr", "add", f"{base}.{k}/{link.prefixlen}", "dev", flood_if)
            sources.append(f"{base}.{k}")
        for key in ("all", "default", link.b_ifname):
            target.sysctl(f"net.ipv4.conf.{key}.rp_filter", "0")
        mesh = LabMesh(lab)
        tnode = mesh.add_node(target, anchor=True)
        mesh.add_node(hosts["peer"], static_endpoint=False)
        newcomer = mesh.add_node(hosts["newcomer"], static_endpoint=False)
        for node in mesh.nodes.values():
            node.python_path = python_path
        mesh.write_mesh()
        for name in ("target", "peer"):
            mesh.start(name)
            mesh.wait_up(name)
        if not hosts["peer"].ping(tnode.tunnel_addr, count=3):
            raise RuntimeError("no session peer -> target")
        gaps.start_echo(target, tnode.tunnel_addr, 7300)
        pid = agent_pid(tnode)
        public_hex = tnode.identity.x25519_public.hex()
        for kind in kinds:
            drops0 = mesh.status("target")["drops"]
            cpu0, rss0, t0 = _cpu_s(pid), rss_mib(pid), time.monotonic()
            pinger = hosts["peer"].spawn(sys.executable, "-m", __name__, "ping",
                                         tnode.tunnel_addr, "7300", str(seconds + 2))
            pinger.wait_for_log("started", 10)
            waits = RunQueueWaits({"target": pid, "peer": agent_pid(mesh.nodes["peer"]),
                                   "pinger": pinger.pid})
            waits.start()
            time.sleep(1.0)
            sender = flood.spawn(sys.executable, "-m", __name__, "send", kind,
                                 link.addr_of(target), "51820", public_hex, str(seconds),
                                 *sources)
            time.sleep(seconds / 2)
            mesh.start("newcomer")
            started = time.monotonic()
            first = None
            while time.monotonic() - started < seconds / 2:
                if hosts["newcomer"].ping(tnode.tunnel_addr, count=1, timeout=0.2):
                    first = time.monotonic() - started
                    break
            sender.wait_for_log(r"\{.*\}", seconds + 30)
            pinger.wait_for_log(r"\{.*\}", seconds + 30)
            waits.stop()
            cpu1, rss1, t1 = _cpu_s(pid), rss_mib(pid), time.monotonic()
            drops1 = mesh.status("target")["drops"]
            newcomer.proc.stop()
            flood_out = json.loads(gaps.RESULT.findall(sender.log())[-1])
            ping_out = json.loads(gaps.RESULT.findall(pinger.log())[-1])
            worst_at = ping_out.pop("worst_sent_at")
            delta = {k: drops1.get(k, 0) - drops0.get(k, 0) for k in drops1
                     if drops1.get(k, 0) != drops0.get(k, 0)}
            results.append({
                "kind": kind, "flood_rate": round(flood_out["rate"]),
                "pings": ping_out, "lost_pct": 100 * (1 - ping_out["answered"] / ping_out["sent"]),
                "agent_cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
                "rss_growth_mib": rss1 - rss0,
                "dh_per_s": sum(delta.get(k, 0) for k in DH_DROPS) / seconds,
                "newcomer_first_answer_s": first, "drops": delta,
                "worst_ping_waits_ms": {} if worst_at is None else waits.between(
                    worst_at, worst_at + ping_out["max_rtt_ms"] / 1000)})
            print(json.dumps(results[-1]), flush=True)
            time.sleep(2.0)
    return results


def render(results: list[dict]) -> str:
    rows = ["| flood | rate/s | pings lost | max RTT | p99 RTT | agent CPU | RSS growth | DH/s "
            "| newcomer answered | waits for a core in the worst ping |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
    for r in results:
        ping = r["pings"]
        first = r["newcomer_first_answer_s"]
        rows.append(
            f"| {r['kind']} | {r['flood_rate']:,} | {r['lost_pct']:.1f}% "
            f"| {ping['max_rtt_ms'] or 0:.0f} ms | {ping['p99_rtt_ms'] or 0:.0f} ms "
            f"| {r['agent_cpu_pct']:.0f}% | {r['rss_growth_mib']:+.1f} MiB | {r['dh_per_s']:.0f} "
            f"| {'-' if first is None else f'{first:.1f} s'} "
            f"| {' / '.join(f'{k} {v:.0f} ms' for k, v in r['worst_ping_waits_ms'].items())} |")
    return "\n".join(rows)
