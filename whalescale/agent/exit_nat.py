"""Offering an exit node, the shell's side: forward and masquerade the mesh's traffic.

One nftables table that the agent owns, `inet whalescale-exit`, loaded with `nft -f -`
when the node offers itself and deleted when it stops offering or the agent stops. It
masquerades what comes in on the TUN and leaves by any other interface, IPv4 and IPv6
(`inet`), so the internet sees the exit's own address. Forwarding itself is the host's
policy (sysctls set by the Ansible role or the NixOS module): we only check it and warn.

A crash leaves the table: harmless (it translates only what the host forwards from a TUN
that is gone), and the next start replaces it, the next clean stop deletes it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger("whalescale.agent")

NFT_TABLE = "whalescale-exit"
FORWARDING_SYSCTLS = {
    "net.ipv4.ip_forward": Path("/proc/sys/net/ipv4/ip_forward"),
    "net.ipv6.conf.all.forwarding": Path("/proc/sys/net/ipv6/conf/all/forwarding"),
}
_TIMEOUT_S = 10.0


class ExitNatError(OSError):
    """nft is missing or refused our table."""


def ruleset(interface: str) -> str:
    """Our table, replaced whole in one transaction (declaring it first makes the delete
    never fail): masquerade what enters by the TUN and leaves by another interface."""
    table = f"inet {NFT_TABLE}"
    return (f"table {table}\ndelete table {table}\nadd table {table}\n"
            f"add chain {table} postrouting "
            "{ type nat hook postrouting priority srcnat; policy accept; }\n"
            f'add rule {table} postrouting iifname "{interface}" oifname != "{interface}" '
            "masquerade\n")


def _nft(script: str) -> None:
    nft = shutil.which("nft")
    if nft is None:
        raise ExitNatError("an exit node needs nftables: no `nft` command on the PATH")
    try:
        result = subprocess.run([nft, "-f", "-"], input=script, capture_output=True,
                                text=True, timeout=_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ExitNatError(f"nft did not answer within {_TIMEOUT_S:g} s") from exc
    if result.returncode != 0:
        raise ExitNatError(f"nft refused the {NFT_TABLE} table: {result.stderr.strip()}")


def offer(interface: str) -> None:
    _nft(ruleset(interface))


def withdraw() -> None:
    _nft(f"table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n")


def forwarding_off() -> list[str]:
    """The forwarding sysctls that are off (an exit cannot forward then)."""
    off = []
    for name, path in FORWARDING_SYSCTLS.items():
        try:
            if path.read_text().strip() == "0":
                off.append(name)
        except OSError:
            off.append(name)
    return off
