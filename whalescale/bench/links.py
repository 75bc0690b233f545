"""The bench's paths: two hosts joined by N emulated links, and the emulator's own ceiling.

Topology (one of these per link k):

    left [pathk] --veth-- [left] emuk [right] --veth-- [pathk] right
         10.77.n.1/24                                  10.77.n.2/24

Each emulator namespace `emuk` is an L2 wire without addresses: either the userspace
emulator (linkemu.py, for delay, jitter and loss) or, when the spec asks for none of those,
a kernel bridge. So link k's /24 is directly connected on both hosts and traffic between
left's and right's address k takes link k with no routes or rules at all; each host has one
address per link, for one socket per address. Rate is tbf on both of `emuk`'s egress
interfaces, i.e. after the delay, as a bottleneck queue of `queue_ms` depth.

A link can be set down (every frame dropped in the middle; the hosts' carrier stays up,
as when a path dies somewhere on the Internet) and respecified at run time. From the hosts'
side each emulated link is also a `Link` of the lab (`host.links`, `host.addr()`).

The emulator costs CPU on the same two cores as everything else: `measure_ceiling` says
how far it goes, and `ceiling_problems` flags a scenario whose rates come near it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import statistics
import sys
import tempfile

import attrs

from whalescale.bench.linkemu import EmuParams
from whalescale.lab.errors import LabError
from whalescale.lab.iperf import iperf_tcp
from whalescale.lab.lab import Lab
from whalescale.lab.netns import Host, Link
from whalescale.lab.proc import Proc, run

# The bench's own range: link k normally gets 10.77.k.0/24 (skipping any the lab uses).
BENCH_NET = ipaddress.ip_network("10.77.0.0/16")
EMU_MODULE = "whalescale.bench.linkemu"
# A scenario may use at most this share of the emulator's measured ceiling.
CEILING_SHARE = 0.5
TBF_MIN_BURST_BYTES = 16 * 1024
PROBE_PORT = 5301


class BenchError(LabError):
    """The bench's topology or measurement failed; the message names the link."""


@attrs.frozen
class LinkSpec:
    """One emulated link; delay, jitter and loss apply to each direction alike."""

    rate_mbit: float | None = None  # None: no tbf, as fast as the emulator goes
    delay_ms: float = 0.0  # one way
    jitter_ms: float = 0.0  # delay varies by +-jitter, order kept (see linkemu.py)
    loss: float = 0.0  # probability per frame and direction
    mtu: int = 1500
    queue_ms: float = 20.0  # tbf's queue, as time at `rate_mbit`

    @property
    def emulated(self) -> bool:
        """Whether the link needs the userspace emulator (else a kernel bridge does)."""
        return bool(self.delay_ms or self.jitter_ms or self.loss)

    def emu_params(self) -> EmuParams:
        return EmuParams(self.delay_ms, self.jitter_ms, self.loss)


@attrs.define
class EmulatedLink:
    index: int
    spec: LinkSpec
    emu: Host
    link: Link  # left (a) <-> right (b), as the hosts see it
    control_path: str
    proc: Proc | None = None  # the emulator; None while bridged
    down: bool = False

    @property
    def left_addr(self) -> str:
        return self.link.a_addr

    @property
    def right_addr(self) -> str:
        return self.link.b_addr


class EmulatedLinks:
    """`left` and `right` joined by one emulated link per spec; see the module docstring."""

    def __init__(
        self,
        lab: Lab,
        specs: list[LinkSpec],
        *,
        left: str = "left",
        right: str = "right",
        always_emulate: bool = False,
        seed: int = 0,
    ) -> None:
        self.lab = lab
        self.always_emulate = always_emulate
        self.seed = seed
        self.left, self.right = lab.host(left), lab.host(right)
        self.links: list[EmulatedLink] = []
        for index, spec in enumerate(specs):
            self.links.append(self._build(index, spec))

    # -- building ------------------------------------------------------------------------

    def _free_subnet(self) -> ipaddress.IPv4Network:
        used = [ipaddress.ip_interface(f"{ln.a_addr}/{ln.prefixlen}").network
                for ln in self.lab.links]
        for net in BENCH_NET.subnets(new_prefix=24):
            if not any(net.overlaps(u) for u in used):
                return net
        raise BenchError(f"no free /24 left in {BENCH_NET}")

    def _build(self, index: int, spec: LinkSpec) -> EmulatedLink:
        emu = self.lab.host(f"emu{index}")
        # No IPv6 on the wire's own ends: no link-local chatter (RS, MLD) of its own.
        emu.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
        emu.sysctl("net.ipv6.conf.all.disable_ipv6", "1")
        ifname = f"path{index}"
        for host, emu_end in ((self.left, "left"), (self.right, "right")):
            run(["ip", "link", "add", "name", ifname, "netns", host.netns, "type", "veth",
                 "peer", "name", emu_end, "netns", emu.netns])  # fmt: skip
        net = self._free_subnet()
        left_addr, right_addr = (str(a) for a in list(net.hosts())[:2])
        for host, addr in ((self.left, left_addr), (self.right, right_addr)):
            host.run("ip", "addr", "add", f"{addr}/{net.prefixlen}", "dev", ifname)
            # Whole wire frames with correct checksums, so loss hits one packet at a time.
            host.run(sys.executable, "-m", EMU_MODULE, "offload-off", ifname)
        link = Link(self.left, self.right, ifname, ifname, left_addr, right_addr,
                    net.prefixlen)
        self.lab.links.append(link)
        self.left.links.append(link)
        self.right.links.append(link)
        control_path = str(self.lab.tempdir / f"emu{index}.ctl")
        built = EmulatedLink(index, spec, emu, link, control_path)
        self._set_mtu(built, spec.mtu)
        for host, dev in ((self.left, ifname), (self.right, ifname), (emu, "left"),
                          (emu, "right")):
            host.run("ip", "link", "set", dev, "up")
        self._set_rate(built, spec)
        if spec.emulated or self.always_emulate:
            self._start_emulator(built)
        else:
            emu.run("ip", "link", "add", "name", "wire", "type", "bridge")
            for dev in ("left", "right"):
                emu.run("ip", "link", "set", dev, "master", "wire")
            emu.run("ip", "link", "set", "wire", "up")
        return built

    def _set_mtu(self, link: EmulatedLink, mtu: int) -> None:
        for host, dev in ((self.left, link.link.a_ifname), (self.right, link.link.b_ifname),
                          (link.emu, "left"), (link.emu, "right")):
            host.run("ip", "link", "set", dev, "mtu", str(mtu))

    def _set_rate(self, link: EmulatedLink, spec: LinkSpec) -> None:
        for dev in ("left", "right"):
            if spec.rate_mbit is None:
                link.emu.run("tc", "qdisc", "del", "dev", dev, "root", check=False)
                continue
            # tbf needs a bucket of at least one frame and of what the timer may let pass
            # at once; 16 KiB as in the lab brief, larger at high rates.
            burst = max(TBF_MIN_BURST_BYTES, int(spec.rate_mbit * 1e6 / 8 * 0.002))
            link.emu.run("tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                         "rate", f"{spec.rate_mbit}mbit", "burst", str(burst),
                         "latency", f"{spec.queue_ms}ms")  # fmt: skip

    def _start_emulator(self, link: EmulatedLink) -> None:
        p = link.spec.emu_params()
        link.proc = link.emu.spawn(
            sys.executable, "-m", EMU_MODULE, "serve", "--left", "left", "--right", "right",
            "--delay-ms", str(p.delay_ms), "--jitter-ms", str(p.jitter_ms),
            "--loss", str(p.loss), "--seed", str(self.seed + link.index),
            "--control", link.control_path,
        )  # fmt: skip
        if not link.proc.wait_for_log(r"linkemu ready", 10):
            raise BenchError(f"emulator of link {link.index} did not start:\n{link.proc.log()}")

    # -- run-time changes ----------------------------------------------------------------

    def _control(self, link: EmulatedLink, request: dict[str, object]) -> dict[str, object]:
        """One request to link's emulator, and its answer."""
        with tempfile.TemporaryDirectory(dir=self.lab.tempdir) as tmp, socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM
        ) as sock:
            sock.bind(os.path.join(tmp, "c"))
            sock.settimeout(5)
            sock.sendto(json.dumps(request).encode(), link.control_path)
            try:
                answer = json.loads(sock.recv(65536))
            except TimeoutError as exc:
                raise BenchError(f"emulator of link {link.index} did not answer") from exc
        if not answer.get("ok"):
            raise BenchError(f"emulator of link {link.index}: {answer.get('error')}")
        return answer

    def _bridge_drop(self, link: EmulatedLink, drop: bool) -> None:
        if drop:
            link.emu.nft("table bridge down {\n chain forward {\n"
                         "  type filter hook forward priority 0; policy drop;\n }\n}\n")
        else:
            link.emu.run("nft", "delete", "table", "bridge", "down", check=False)

    def set_down(self, k: int) -> None:
        """Path k dies: every frame is dropped in the middle, the carrier stays up."""
        link = self.links[k]
        if link.proc is not None:
            self._control(link, {"op": "down"})
        else:
            self._bridge_drop(link, True)
        link.down = True

    def set_up(self, k: int) -> None:
        link = self.links[k]
        if link.proc is not None:
            self._control(link, {"op": "up"})
        else:
            self._bridge_drop(link, False)
        link.down = False

    def update(self, k: int, spec: LinkSpec) -> None:
        """Respecify link k in place. A bridged link that now needs delay, jitter or loss
        gets its emulator; an emulated one keeps it (with zero parameters if so asked)."""
        link = self.links[k]
        if spec.mtu != link.spec.mtu:
            self._set_mtu(link, spec.mtu)
        if (spec.rate_mbit, spec.queue_ms) != (link.spec.rate_mbit, link.spec.queue_ms):
            self._set_rate(link, spec)
        link.spec = spec
        if link.proc is not None:
            p = spec.emu_params()
            self._control(link, {"op": "set", "delay_ms": p.delay_ms,
                                 "jitter_ms": p.jitter_ms, "loss": p.loss})
        elif spec.emulated:
            link.emu.run("ip", "link", "del", "wire")
            self._bridge_drop(link, False)
            self._start_emulator(link)
            if link.down:
                self._control(link, {"op": "down"})

    def emulator_stats(self, k: int) -> dict[str, object]:
        """Per-direction frame counters of link k's emulator (empty while bridged)."""
        link = self.links[k]
        if link.proc is None:
            return {}
        return dict(self._control(link, {"op": "stats"})["stats"])  # type: ignore[call-overload]

    def addrs(self, host: Host) -> list[str]:
        """`host`'s address on each link, in link order (one socket per address)."""
        return [ln.link.addr_of(host) for ln in self.links]

    def ceiling_problems(self, ceiling: EmulatorCeiling, share: float = CEILING_SHARE) -> list[str]:
        """Why this topology's rates may measure the emulator rather than the links."""
        return ceiling_problems([ln.spec for ln in self.links], ceiling, share)


# -- measuring -------------------------------------------------------------------------------


def ping_rtts_ms(src: Host, dst_addr: str, count: int = 10, interval_ms: float = 20.0,
                 timeout_s: float = 2.0) -> list[float | None]:
    """ICMP echo round-trip times from `src` to `dst_addr` (None: no reply in time)."""
    out = src.run(sys.executable, "-m", EMU_MODULE, "ping", "--to", dst_addr,
                  "--count", str(count), "--interval-ms", str(interval_ms),
                  "--timeout-s", str(timeout_s),
                  timeout=count * (timeout_s + 1) + 10).stdout  # fmt: skip
    return list(json.loads(out))


@attrs.frozen
class ProbeResult:
    sent: int
    received: int
    reordered: int
    one_way_ms: tuple[float, ...]

    @property
    def loss(self) -> float:
        return 1 - self.received / self.sent


def udp_probe(src: Host, dst: Host, dst_addr: str, *, src_addr: str = "", count: int = 100,
              interval_ms: float = 5.0, size: int = 100) -> ProbeResult:
    """`count` stamped UDP datagrams src -> dst: one-way delay (both namespaces read the
    same monotonic clock), loss and reordering."""
    recv = dst.spawn(sys.executable, "-m", EMU_MODULE, "probe-recv", "--bind", dst_addr,
                     "--port", str(PROBE_PORT), "--count", str(count), "--idle-s", "2")
    try:
        if not recv.wait_for_log(r"probe listening", 10):
            raise BenchError(f"UDP probe receiver did not start:\n{recv.log()}")
        src.run(sys.executable, "-m", EMU_MODULE, "probe-send", "--to", dst_addr,
                "--port", str(PROBE_PORT), "--bind", src_addr, "--count", str(count),
                "--interval-ms", str(interval_ms), "--size", str(size),
                timeout=count * interval_ms / 1000 + 30)  # fmt: skip
        if not recv.wait_for_log(r'"received"', 10):
            raise BenchError(f"UDP probe receiver gave no result:\n{recv.log()}")
    finally:
        recv.stop()
    summary = json.loads(recv.log().splitlines()[-1])
    return ProbeResult(count, summary["received"], summary["reordered"],
                       tuple(summary["one_way_ms"]))


@attrs.frozen
class EmulatorCeiling:
    """What one emulated link carries on this machine, with its senders and receivers on
    the same cores, and how exactly it delays."""

    udp_pps: float  # 1500-byte IP packets delivered per second under an unlimited flood
    udp_mbit: float
    tcp_mbit: float  # one iperf3 TCP flow through the emulator, no delay
    delay_ms: float  # the one-way delay asked for below
    ping_rtt_ms: float  # median; ideally 2 * delay_ms
    probe_one_way_ms: float  # median UDP one-way delay; ideally delay_ms
    probe_one_way_p99_ms: float

    @property
    def mbit(self) -> float:
        """The ceiling a scenario is held to: the lesser of the UDP and TCP figures."""
        return min(self.udp_mbit, self.tcp_mbit)


def _udp_flood(src: Host, dst: Host, dst_addr: str, seconds: float) -> tuple[float, float]:
    """(packets/s, Mbit/s) of 1500-byte IP packets that reach `dst` from an unlimited
    iperf3 UDP sender."""
    server = dst.spawn("iperf3", "-s", "-1", "--forceflush", "-B", dst_addr, "-p", "5202")
    try:
        if not server.wait_for_log(r"Server listening", 10):
            raise BenchError(f"iperf3 server did not start:\n{server.log()}")
        out = src.run("iperf3", "-c", dst_addr, "-p", "5202", "-u", "-b", "0", "-l", "1472",
                      "-t", str(seconds), "-J", timeout=seconds + 30).stdout  # fmt: skip
    finally:
        server.stop()
    end = json.loads(out)["end"]["sum"]
    received = end["packets"] - end["lost_packets"]
    pps = received / end["seconds"]
    return pps, pps * 1500 * 8 / 1e6


def measure_ceiling(seconds: float = 2.0, delay_ms: float = 10.0) -> EmulatorCeiling:
    """Measure one emulated link in a lab of its own (made and torn down here)."""
    with Lab() as lab:
        bench = EmulatedLinks(lab, [LinkSpec()], always_emulate=True)
        left, right = bench.left, bench.right
        addr = bench.links[0].right_addr
        pps, udp_mbit = _udp_flood(left, right, addr, seconds)
        tcp_mbit = iperf_tcp(left, right, addr, seconds).gbit_s * 1000
        bench.update(0, LinkSpec(delay_ms=delay_ms))
        rtts = [r for r in ping_rtts_ms(left, addr, count=20) if r is not None]
        probe = udp_probe(left, right, addr, count=200, interval_ms=2)
        one_way = sorted(probe.one_way_ms)
    if not rtts or not one_way:
        raise BenchError("the emulator delivered no delay probes")
    return EmulatorCeiling(
        udp_pps=pps, udp_mbit=udp_mbit, tcp_mbit=tcp_mbit, delay_ms=delay_ms,
        ping_rtt_ms=statistics.median(rtts), probe_one_way_ms=statistics.median(one_way),
        probe_one_way_p99_ms=one_way[min(len(one_way) - 1, int(len(one_way) * 0.99))],
    )  # fmt: skip


def ceiling_problems(specs: list[LinkSpec], ceiling: EmulatorCeiling,
                     share: float = CEILING_SHARE) -> list[str]:
    """Why `specs` may measure the emulator rather than the links: an emulated link without
    a rate, or emulated rates that add up past `share` of the ceiling (all emulators share
    the machine's cores)."""
    problems = []
    limit = share * ceiling.mbit
    emulated = [(k, s) for k, s in enumerate(specs) if s.emulated]
    for k, spec in emulated:
        if spec.rate_mbit is None:
            problems.append(f"link {k}: emulated without a rate; the emulator is the limit")
    total = sum(s.rate_mbit or 0 for _, s in emulated)
    if total > limit:
        problems.append(f"emulated links sum to {total:g} Mbit/s, over {share:.0%} of the "
                        f"emulator's ceiling ({ceiling.mbit:.0f} Mbit/s)")
    return problems

