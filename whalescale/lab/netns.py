"""Hosts of the lab: one network namespace each, and the veth links between them.

A `Host` runs commands and background processes inside its namespace and owns the
processes it started, so the lab can stop exactly those at teardown. Addresses and
interface names are chosen by `Lab.link`; a `Link` records what it chose.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from whalescale.lab.errors import LabError
from whalescale.lab.proc import Proc, run

ICMP_SCRIPT = Path(__file__).with_name("icmp.py")


@dataclass(frozen=True, slots=True)
class Link:
    """A veth pair: `a_ifname` lives in host `a` with `a_addr`, likewise for `b`."""

    a: Host
    b: Host
    a_ifname: str
    b_ifname: str
    a_addr: str
    b_addr: str
    prefixlen: int
    a_addr6: str | None = None
    b_addr6: str | None = None

    def peer_of(self, host: Host) -> Host:
        if host is self.a:
            return self.b
        if host is self.b:
            return self.a
        raise LabError(f"{host.name} is not on the link {self.a.name}<->{self.b.name}")

    def addr_of(self, host: Host, *, v6: bool = False) -> str:
        """`host`'s own address on this link."""
        self.peer_of(host)  # raises unless host is on this link
        if v6:
            addr = self.a_addr6 if host is self.a else self.b_addr6
            if addr is None:
                raise LabError(f"link {self.a.name}<->{self.b.name} has no IPv6 addresses")
            return addr
        return self.a_addr if host is self.a else self.b_addr

    def peer_addr(self, host: Host, *, v6: bool = False) -> str:
        """The address of the far end of this link, as seen from `host`."""
        return self.addr_of(self.peer_of(host), v6=v6)


class Host:
    """One lab node: a network namespace named `netns`, known by its role `name`."""

    def __init__(self, name: str, netns: str, log_dir: Path) -> None:
        self.name = name
        self.netns = netns
        self.links: list[Link] = []
        self.procs: list[Proc] = []
        self._log_dir = log_dir

    def __repr__(self) -> str:
        return f"Host({self.name!r}, netns={self.netns!r})"

    def _in_netns(self, argv: tuple[str, ...]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 30,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in this host's namespace; `LabError` with stderr if it fails."""
        return run(self._in_netns(argv), check=check, timeout=timeout, input=input)

    def spawn(
        self, *argv: str, log_path: Path | None = None, env: Mapping[str, str] | None = None
    ) -> Proc:
        """Start a background process group in the namespace; `env` adds to our environment.

        Output goes to `log_path`, by default `<name>-<n>.log` in the lab's directory.
        """
        if log_path is None:
            log_path = self._log_dir / f"{self.name}-{len(self.procs)}.log"
        proc = Proc(self._in_netns(argv), log_path, env)
        self.procs.append(proc)
        return proc

    def sysctl(self, key: str, value: str) -> None:
        self.run("sysctl", "-q", "-w", f"{key}={value}")

    def set_forwarding(self, enabled: bool) -> None:
        value = "1" if enabled else "0"
        self.sysctl("net.ipv4.ip_forward", value)
        self.sysctl("net.ipv6.conf.all.forwarding", value)

    def addr(self) -> str:
        """This host's IPv4 address on its first lab link."""
        if not self.links:
            raise LabError(f"{self.name} has no links yet")
        return self.links[0].addr_of(self)

    def addr6(self) -> str:
        """This host's IPv6 address on its first lab link that has one."""
        for link in self.links:
            if link.a_addr6 is not None:
                return link.addr_of(self, v6=True)
        raise LabError(f"{self.name} has no IPv6 link")

    def etc_dir(self) -> Path:
        """This host's `/etc/netns/<netns>`: `ip netns exec` bind-mounts each entry over
        the same name in `/etc` (which must exist on the machine). Removed at teardown."""
        path = Path("/etc/netns") / self.netns
        path.mkdir(parents=True, exist_ok=True)
        return path

    def set_hosts(self, names: Mapping[str, str]) -> None:
        """This host's view of DNS: `names` (name -> address) as its /etc/hosts, and a
        resolv.conf whose only server is its own loopback, where nothing listens, so a
        name not listed fails here and no query leaves the lab. Rewritten in place: a
        process started earlier sees the change (`ip netns exec` bound the file)."""
        etc = self.etc_dir()
        lines = ["127.0.0.1 localhost", *(f"{addr} {name}" for name, addr in names.items())]
        for path, text in ((etc / "hosts", "\n".join(lines) + "\n"),
                           (etc / "resolv.conf", "nameserver 127.0.0.1\n"
                            "options timeout:1 attempts:1\n")):
            with path.open("w") as file:  # same inode: bind mounts of it follow
                file.write(text)

    def _route(self, to: str, gw_addr: str) -> None:
        family = "-6" if ipaddress.ip_address(gw_addr).version == 6 else "-4"
        self.run("ip", family, "route", "replace", to, "via", gw_addr)

    def default_route(self, gw_addr: str) -> None:
        """Send all traffic of `gw_addr`'s family via `gw_addr` (replacing any default)."""
        self._route("default", gw_addr)

    def route_via(self, link: Link, to: str = "default") -> None:
        """Route `to` (a prefix, or "default") via the far end of `link`; "default" is set
        for IPv4 and, when the link has them, IPv6 too."""
        if to != "default":
            v6 = ipaddress.ip_network(to, strict=False).version == 6
            self._route(to, link.peer_addr(self, v6=v6))
            return
        self._route(to, link.peer_addr(self))
        if link.a_addr6 is not None:
            self._route(to, link.peer_addr(self, v6=True))

    def readdress(self, new: str | None = None) -> str:
        """Move this host to a new IPv4 address on its first link (a laptop changing
        networks; a router whose provider changed its public address); returns it.
        Default: .77 of the same subnet, .78 if it has that already. The `Link` record
        keeps the first address: ask the host, not the link, from then on."""
        link = self.links[0]
        ifname = link.b_ifname if link.b is self else link.a_ifname
        gateway = link.peer_addr(self)
        shown = self.run("ip", "-4", "-o", "addr", "show", "dev", ifname).stdout.split()
        old = shown[shown.index("inet") + 1].split("/")[0]
        if new is None:
            new = f"{old.rsplit('.', 1)[0]}.{78 if old.endswith('.77') else 77}"
        self.run("ip", "addr", "del", f"{old}/{link.prefixlen}", "dev", ifname)
        self.run("ip", "addr", "add", f"{new}/{link.prefixlen}", "dev", ifname)
        self.run("ip", "route", "replace", "default", "via", gateway)
        return new

    def ping(self, addr: str, count: int = 1, timeout: float = 2.0) -> bool:
        """Whether `addr` answers an ICMP echo from this host within `timeout` per try."""
        result = self.run(
            sys.executable,
            str(ICMP_SCRIPT),
            addr,
            str(count),
            str(timeout),
            check=False,
            timeout=count * timeout + 10,
        )
        return result.returncode == 0

    def nft(self, ruleset: str) -> None:
        """Load an nftables ruleset here; a rejected ruleset raises (it would not NAT)."""
        try:
            self.run("nft", "-f", "-", input=ruleset)
        except LabError as exc:
            raise LabError(f"nft ruleset rejected in {self.name}: {exc}") from exc
