"""Checks that the lab left nothing behind: no namespace with its prefix, no process."""

import time
from collections.abc import Sequence
from pathlib import Path

from whalescale.lab import Lab
from whalescale.lab.proc import run


def lab_namespaces(prefix: str) -> list[str]:
    listing = run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in listing.splitlines() if line.startswith(prefix)]


def process_gone(pid: int, timeout_s: float = 2.0) -> bool:
    """Whether `pid` is gone (or a zombie) within `timeout_s`: an orphan is reaped by
    whichever process adopts it, which may take a moment."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def assert_torn_down(lab: Lab, pids: Sequence[int] = ()) -> None:
    assert lab_namespaces(lab.prefix) == []
    assert not lab.tempdir.exists()
    for host in lab.hosts.values():
        assert not (Path("/etc/netns") / host.netns).exists()
    for pid in pids:
        assert process_gone(pid), f"pid {pid} outlived the lab"
