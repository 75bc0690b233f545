"""iperf3 between lab hosts, read from its JSON output."""

from __future__ import annotations

import json

import attrs

from .netns import Host

IPERF_PORT = 5201


@attrs.frozen
class IperfResult:
    gbit_s: float
    retransmits: int
    intervals_gbit_s: tuple[float, ...]


def iperf_tcp(client: Host, server: Host, server_addr: str, seconds: float,
              *extra: str, wrapper: tuple[str, ...] = (), port: int = IPERF_PORT,
              bind: bool = True) -> IperfResult:
    """One TCP flow client -> server for `seconds`; the server answers exactly once.

    `wrapper` runs both ends under a command (e.g. `mptcpize run`); `bind=False`
    lets the server listen on every address (MPTCP subflows arrive on several)."""
    bound = ("-B", server_addr) if bind else ()
    proc = server.spawn(*wrapper, "iperf3", "-s", "-1", "--forceflush", *bound,
                        "-p", str(port))
    try:
        if not proc.wait_for_log(r"Server listening", 10):
            raise TimeoutError(f"iperf3 server did not start:\n{proc.log()}")
        out = client.run(*wrapper, "iperf3", "-c", server_addr, "-p", str(port),
                         "-t", str(seconds), "-J", *extra, timeout=seconds + 30).stdout
    finally:
        proc.stop()
    report = json.loads(out)
    end = report["end"]
    return IperfResult(
        gbit_s=end["sum_received"]["bits_per_second"] / 1e9,
        retransmits=end["sum_sent"].get("retransmits", 0),
        intervals_gbit_s=tuple(i["sum"]["bits_per_second"] / 1e9 for i in report["intervals"]),
    )
