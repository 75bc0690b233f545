"""The kernel-MPTCP reference: what Linux's own multipath TCP makes of the bench's links.

The same `EmulatedLinks` carry, in turn, one plain iperf3 TCP flow over each link alone
(the best-single-path reference) and one MPTCP flow over all of them. MPTCP set-up follows
the in-kernel path manager (Documentation/networking/mptcp-sysctl.rst, ip-mptcp(8)):
- both hosts: `ip mptcp limits set subflow N add_addr_accepted N`;
- the server (right) announces its address on every link but the first with a `signal`
  endpoint; the client (left) has no endpoints and, on each ADD_ADDR, opens a subflow to
  the announced address from the source address its routes give (link k's own, since each
  link's /24 is directly connected), so subflow k runs over link k.
iperf3 3.12 has no `--mptcp`: `mptcpize run` (Debian package `mptcpize`) makes its TCP
sockets MPTCP ones. The server listens on every address, so the joins to the announced
addresses find it.
"""

from __future__ import annotations

import shutil

import attrs

from whalescale.bench.links import EmulatedLinks
from whalescale.lab.iperf import IperfResult, iperf_tcp
from whalescale.lab.netns import Host

MPTCP_PORT = 5211
MPTCPIZE = "mptcpize"


def mptcp_available() -> str | None:
    """Why the MPTCP reference cannot run here, or None when it can."""
    if shutil.which(MPTCPIZE) is None:
        return "no mptcpize (Debian package `mptcpize`)"
    if shutil.which("iperf3") is None:
        return "no iperf3"
    return None


@attrs.frozen
class MptcpReference:
    """Goodputs in Mbit/s; `single_path` in link order."""

    mptcp_mbit: float
    mptcp_retransmits: int
    single_path_mbit: tuple[float, ...]
    single_path_retransmits: tuple[int, ...]

    @property
    def best_single_mbit(self) -> float:
        return max(self.single_path_mbit)


def configure_mptcp(bench: EmulatedLinks) -> None:
    """Limits on both hosts; right announces its address on links 1..N-1."""
    n = len(bench.links)
    for host in (bench.left, bench.right):
        host.sysctl("net.mptcp.enabled", "1")
        host.run("ip", "mptcp", "endpoint", "flush")
        host.run("ip", "mptcp", "limits", "set", "subflow", str(n), "add_addr_accepted", str(n))
    for link in bench.links[1:]:
        bench.right.run("ip", "mptcp", "endpoint", "add", link.right_addr,
                        "dev", link.link.b_ifname, "signal")  # fmt: skip


def mptcp_iperf(client: Host, server: Host, server_addr: str, seconds: float) -> IperfResult:
    """One MPTCP flow client -> server_addr (iperf3 under mptcpize on both ends)."""
    return iperf_tcp(client, server, server_addr, seconds, wrapper=(MPTCPIZE, "run"),
                     port=MPTCP_PORT, bind=False)


def mptcp_reference(bench: EmulatedLinks, seconds: float = 5.0) -> MptcpReference:
    """Each link alone with plain TCP, then MPTCP over all links, left -> right."""
    singles = [iperf_tcp(bench.left, bench.right, link.right_addr, seconds)
               for link in bench.links]  # fmt: skip
    configure_mptcp(bench)
    multi = mptcp_iperf(bench.left, bench.right, bench.links[0].right_addr, seconds)
    return MptcpReference(
        mptcp_mbit=multi.gbit_s * 1000,
        mptcp_retransmits=multi.retransmits,
        single_path_mbit=tuple(r.gbit_s * 1000 for r in singles),
        single_path_retransmits=tuple(r.retransmits for r in singles),
    )
