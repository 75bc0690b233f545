"""The agent's own nftables tables, each loaded whole with `nft -f -` and deleted whole.

- `inet whalescale-exit`, while the node offers itself as an exit: masquerade what comes
  in on the TUN and leaves by any other interface, IPv4 and IPv6, so the internet sees
  the exit's own address. Forwarding itself is the host's policy (sysctl.py).
- `inet whalescale-marks`, while the node uses an exit: the connection's mark is saved
  from our marked UDP datagrams and given back to their answers, as wg-quick does, so
  that strict reverse path filtering (rp_filter = 1, with the host's src_valid_mark = 1)
  checks an anchor's answer against the main table, where it came from, not against
  the exit's table, which would send it into the TUN and drop it. And DNS to the
  resolvers the exit routes carry: a query pinned to another interface (IP_UNICAST_IF,
  as systemd-resolved sends to a link's own servers) is routed with that interface as
  its output, which our table's route into the TUN never matches, so it left by the
  Wi-Fi. Given DNS_MARK, it is routed anew (a route chain re-routes a packet whose mark
  changed, and that lookup knows only a device the socket is bound to) into the TUN,
  and masqueraded to our tunnel address, the only source the exit accepts from us.

A crash leaves them: harmless (one translates only what the host forwards from a TUN that
is gone, the other only copies marks); the next start replaces them (or, for the marks,
deletes them with the crashed run's rules), a clean stop deletes them. A node that uses
no exit and offers none never runs nft.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable

from .exit_routes import Address

EXIT_TABLE = "whalescale-exit"
MARKS_TABLE = "whalescale-marks"
DNS_MARK = 0x7774
_TIMEOUT_S = 10.0


class NftError(OSError):
    """nft is missing or refused one of our tables."""


def _replace(name: str, chains: dict[str, tuple[str, list[str]]]) -> str:
    """Table `name` replaced whole in one transaction (declaring it first makes the
    delete never fail); `chains`: name -> (hook line, rules)."""
    table = f"inet {name}"
    lines = [f"table {table}", f"delete table {table}", f"add table {table}"]
    for chain, (hook, rules) in chains.items():
        lines.append(f"add chain {table} {chain} {{ {hook}; policy accept; }}")
        lines += [f"add rule {table} {chain} {rule}" for rule in rules]
    return "\n".join(lines) + "\n"


def exit_ruleset(interface: str) -> str:
    return _replace(EXIT_TABLE, {"postrouting": (
        "type nat hook postrouting priority srcnat",
        [f'iifname "{interface}" oifname != "{interface}" masquerade'])})


def marks_ruleset(fwmark: int, interface: str, resolvers: Iterable[Address]) -> str:
    chains = {
        "prerouting": ("type filter hook prerouting priority mangle",
                       ["meta l4proto udp meta mark set ct mark"]),
        "postrouting": ("type filter hook postrouting priority mangle",
                        [f"meta l4proto udp meta mark {fwmark:#x} ct mark set meta mark"])}
    by_family = {f: sorted(str(a) for a in resolvers if a.version == v)
                 for f, v in (("ip", 4), ("ip6", 6))}
    pinned = [f"{family} daddr {{ {', '.join(addrs)} }} meta l4proto {{ udp, tcp }} th dport 53 "
              f'oifname != "{interface}" meta mark set {DNS_MARK:#x}'
              for family, addrs in by_family.items() if addrs]
    if pinned:
        chains["dns"] = ("type route hook output priority mangle", pinned)
        chains["dns-source"] = ("type nat hook postrouting priority srcnat",
                                [f'oifname "{interface}" meta mark {DNS_MARK:#x} masquerade'])
    return _replace(MARKS_TABLE, chains)


def load(ruleset: str) -> None:
    nft = shutil.which("nft")
    if nft is None:
        raise NftError("exit nodes need nftables: no `nft` command on the PATH")
    try:
        result = subprocess.run([nft, "-f", "-"], input=ruleset, capture_output=True,
                                text=True, timeout=_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise NftError(f"nft did not answer within {_TIMEOUT_S:g} s") from exc
    if result.returncode != 0:
        raise NftError(f"nft refused {ruleset.splitlines()[0]}: {result.stderr.strip()}")


def delete(*names: str) -> None:
    load("".join(f"table inet {name}\ndelete table inet {name}\n" for name in names))
