"""The lab: hosts in network namespaces on this machine, joined by veth links.

Rules this file keeps:
- Every namespace name starts with the lab's own random prefix, so two labs never share
  a name and teardown can find everything it made, even a half-created host.
- Veth ends are created directly inside their namespaces, so their short names never
  meet another lab's in the root namespace.
- Addresses come from 10.0.0.0/8 and fd00::/8, assigned only inside our namespaces.
- Teardown stops only processes this lab spawned (by process group), deletes only our
  namespaces and `/etc/netns` entries, is idempotent and cannot be cut short by Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from whalescale.lab.closing import Closing
from whalescale.lab.errors import LabError
from whalescale.lab.netns import Host, Link
from whalescale.lab.proc import run

INTERNET = "inet"
# Set to 1 to keep the lab's temporary directory (process logs) after teardown.
KEEP_ENV = "WHALESCALE_LAB_KEEP"
IFNAMSIZ = 15  # the kernel's limit on interface names, without the trailing NUL
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
PREFIX_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
AUTO_V4 = ipaddress.ip_network("10.0.0.0/8")
AUTO_V6 = ipaddress.ip_network("fd00::/48")


def lab_available() -> str | None:
    """Why the lab cannot run on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, veth, nftables)"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if run(["ip", "netns", "list"], check=False).returncode != 0:
        return "`ip netns` does not work here"
    if not Path("/dev/net/tun").exists():
        return "no /dev/net/tun"
    return None


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold back SIGINT in this thread; a Ctrl-C meanwhile is raised when the block ends."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Lab(Closing):
    """A set of hosts and links; use as `with Lab() as lab:` so it always tears down."""

    def __init__(self, prefix: str | None = None) -> None:
        if prefix is None:
            prefix = f"ws{secrets.token_hex(3)}-"
        if not PREFIX_RE.fullmatch(prefix):
            raise LabError(f"lab prefix {prefix!r} must match {PREFIX_RE.pattern}")
        self.prefix = prefix
        self.hosts: dict[str, Host] = {}
        self.links: list[Link] = []
        self.tempdir = Path(tempfile.mkdtemp(prefix=f"whalescale-lab-{prefix}"))
        self._used_v4: list[ipaddress.IPv4Network] = []
        self._cleanups: list[tuple[str, Callable[[], None]]] = []
        self._next_auto_subnet = 1

    def host(self, name: str) -> Host:
        """A new host in namespace `<prefix><name>`: loopback up, forwarding off."""
        if not NAME_RE.fullmatch(name):
            raise LabError(f"host name {name!r} must match {NAME_RE.pattern}")
        if name in self.hosts:
            raise LabError(f"host {name!r} exists already")
        netns = f"{self.prefix}{name}"
        run(["ip", "netns", "add", netns])
        host = Host(name, netns, self.tempdir)
        self.hosts[name] = host
        host.run("ip", "link", "set", "lo", "up")
        host.set_forwarding(False)
        # Duplicate address detection would hold every new IPv6 address, link-local ones
        # included, "tentative" for a second or two; lab addresses are unique by design.
        host.sysctl("net.ipv6.conf.default.accept_dad", "0")
        return host

    def internet(self) -> Host:
        """The routing namespace between all "public" subnets (created on first use)."""
        if INTERNET not in self.hosts:
            self.host(INTERNET).set_forwarding(True)
        return self.hosts[INTERNET]

    def _auto_subnet(self) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]:
        """The next 10.a.b.0/24 that no link uses yet, with the matching fd00:0:0:n::/64."""
        while True:
            n = self._next_auto_subnet
            self._next_auto_subnet += 1
            v4 = ipaddress.IPv4Network((int(AUTO_V4.network_address) + (n << 8), 24))
            if v4.broadcast_address > AUTO_V4.broadcast_address:
                raise LabError("the lab has run out of automatic subnets")
            if not any(v4.overlaps(used) for used in self._used_v4):
                v6 = ipaddress.IPv6Network((int(AUTO_V6.network_address) + (n << 64), 64))
                return v4, v6

    def link(self, a: Host, b: Host, *, subnet: str | None = None, v6: bool = False) -> Link:
        """A veth pair between `a` and `b`, both ends up; `a` takes the subnet's first
        address and `b` the second (and likewise in a fresh fd00::/64 when `v6`)."""
        auto_v4, auto_v6 = self._auto_subnet()
        net4 = ipaddress.IPv4Network(subnet, strict=False) if subnet else auto_v4
        if net4.num_addresses < 4:
            raise LabError(f"subnet {net4} has no room for two hosts")
        self._used_v4.append(net4)
        index = len(self.links)
        suffix = f"-{index}"
        # Each end is named for the host it leads to, cut so the index always fits.
        a_ifname = f"{b.name[: IFNAMSIZ - len(suffix)]}{suffix}"
        b_ifname = f"{a.name[: IFNAMSIZ - len(suffix)]}{suffix}"
        run(
            ["ip", "link", "add", "name", a_ifname, "netns", a.netns, "type", "veth",
             "peer", "name", b_ifname, "netns", b.netns]
        )  # fmt: skip
        a_addr, b_addr = (str(addr) for addr in list(net4.hosts())[:2])
        a_addr6 = b_addr6 = None
        if v6:
            a_addr6, b_addr6 = str(auto_v6.network_address + 1), str(auto_v6.network_address + 2)
        for host, ifname, addr4, addr6 in (
            (a, a_ifname, a_addr, a_addr6),
            (b, b_ifname, b_addr, b_addr6),
        ):
            host.run("ip", "addr", "add", f"{addr4}/{net4.prefixlen}", "dev", ifname)
            if addr6 is not None:
                host.run("ip", "-6", "addr", "add", f"{addr6}/64", "dev", ifname, "nodad")
            host.run("ip", "link", "set", ifname, "up")
        link = Link(a, b, a_ifname, b_ifname, a_addr, b_addr, net4.prefixlen, a_addr6, b_addr6)
        self.links.append(link)
        a.links.append(link)
        b.links.append(link)
        return link

    def star(self, names: list[str], *, v6: bool = False) -> dict[str, Host]:
        """Hosts `names`, each on its own subnet to the internet namespace and routed
        through it by default, so that every host reaches every other one's address."""
        inet = self.internet()
        hosts: dict[str, Host] = {}
        for name in names:
            host = self.host(name)
            host.route_via(self.link(inet, host, v6=v6))
            hosts[name] = host
        return hosts

    def on_close(self, what: str, cleanup: Callable[[], None]) -> None:
        """Run `cleanup` at teardown, after our processes stop and before our namespaces and
        files go (an overlay a container booted from, say); the last added runs first."""
        self._cleanups.append((what, cleanup))

    def _namespaces(self) -> set[str]:
        """Our namespaces: those we registered and any other carrying our prefix (a host
        whose set-up was interrupted after `ip netns add`)."""
        names = {host.netns for host in self.hosts.values()}
        listing = run(["ip", "netns", "list"], check=False).stdout
        names.update(
            line.split()[0]
            for line in listing.splitlines()
            if line.strip() and line.split()[0].startswith(self.prefix)
        )
        return names

    def close(self) -> None:
        """Stop our processes, delete our namespaces and files; safe to call repeatedly.

        Every step is tried even when an earlier one fails; failures are raised together.
        """
        failures: list[str] = []
        # SIGINT is blocked only in this thread; in a test run that is the main thread,
        # where Python delivers it anyway.
        with _sigint_deferred():
            for host in self.hosts.values():
                for proc in host.procs:
                    try:
                        proc.stop()
                    except OSError as exc:
                        failures.append(f"stopping {proc!r} in {host.name}: {exc}")
            while self._cleanups:
                what, cleanup = self._cleanups.pop()
                try:
                    cleanup()
                except (OSError, LabError) as exc:
                    failures.append(f"{what}: {exc}")
            for netns in sorted(self._namespaces()):
                result = run(["ip", "netns", "del", netns], check=False)
                if result.returncode != 0 and "No such file" not in result.stderr:
                    failures.append(f"ip netns del {netns}: {result.stderr.strip()}")
                shutil.rmtree(Path("/etc/netns") / netns, ignore_errors=True)
            if os.environ.get(KEEP_ENV) == "1":
                if self.tempdir.exists():
                    print(f"lab {self.prefix}: logs kept in {self.tempdir}", file=sys.stderr)
            else:
                shutil.rmtree(self.tempdir, ignore_errors=True)
        if failures:
            raise LabError("lab teardown incomplete: " + "; ".join(failures))
