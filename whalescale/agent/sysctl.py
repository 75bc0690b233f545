"""The host's kernel settings the agent depends on, read, never written.

Forwarding (a subnet router, a standby, an exit) and reverse path filtering (a node
that uses an exit) are the host's policy: the Ansible role and the NixOS module set
them; the agent reads them to warn in its log and status. An unreadable value (no
/proc/sys, no IPv6) reads as unknown, never as off: no false alarm.
"""

from __future__ import annotations

from pathlib import Path

FORWARDING_SYSCTLS = {
    "net.ipv4.ip_forward": Path("/proc/sys/net/ipv4/ip_forward"),
    "net.ipv6.conf.all.forwarding": Path("/proc/sys/net/ipv6/conf/all/forwarding"),
}

def forwarding_off() -> list[str]:
    """The forwarding sysctls that are off (an exit cannot forward then)."""
    return [name for name, path in FORWARDING_SYSCTLS.items() if _sysctl(path) == "0"]


def strict_rp_filter_without_marks() -> bool:
    """Strict reverse path filtering that cannot see our marks: answers to our own
    datagrams would be checked against the exit's table and dropped."""
    conf = Path("/proc/sys/net/ipv4/conf")
    # an interface filters by the larger of its own value and `all`'s: any 1 may apply
    strict = any(_sysctl(path) == "1" for path in conf.glob("*/rp_filter"))
    return strict and _sysctl(conf / "all" / "src_valid_mark") != "1"


def _sysctl(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
