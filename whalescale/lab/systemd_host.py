"""Systemd hosts: a lab host whose namespace holds a container booted with a real systemd.

The machine's PID 1 is not systemd, so a unit, `systemctl reload`, the restart policy,
`DynamicUser=`, `LoadCredential=` and journald can only be met inside a container that boots
one. `boot` starts `systemd-nspawn -b` in a lab host's network namespace: the container
has the host's links and addresses, so the lab reaches it (its sshd included) like any
other host, and lab tools that enter the namespace (`Host.ping`, `Host.run("ip", ...)`) see
what the container sees.

Rules this file keeps:
- The root filesystem is the shared cache (rootfs.py) under an overlay whose upper and work
  directories lie in the lab's temporary directory: a host never writes to the cache.
- Each host has its own sshd host keys, root's authorized key, and its own /dev/net/tun node
  (a copy of the machine's, mode 0600 as on a machine without udev), so what a host does to
  its device never reaches the machine's.
- The nspawn process is a `Proc` of the host: the lab's teardown stops it (SIGTERM is an
  orderly poweroff), then unmounts the overlay, then deletes the namespace.
- `--register=no --keep-unit`: there is no systemd on the machine for nspawn to register
  with.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from whalescale.lab.errors import LabError
from whalescale.lab.lab import Lab
from whalescale.lab.netns import Host
from whalescale.lab.proc import Proc, run
from whalescale.lab.rootfs import ensure_rootfs

BOOT_TIMEOUT_S = 60
# The container's own PATH: nsenter keeps ours, which may name the machine's virtualenvs.
CONTAINER_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0")
TUN_DEVICE = Path("/dev/net/tun")


class SystemdHost:
    """A booted container in `host`'s namespace; `root` is its file system as the machine
    sees it (the overlay), `leader` its PID 1 as the machine numbers it."""

    def __init__(self, host: Host, root: Path, proc: Proc, leader: int) -> None:
        self.host = host
        self.name = host.name
        self.root = root
        self.proc = proc
        self.leader = leader

    def __repr__(self) -> str:
        return f"SystemdHost({self.name!r}, leader={self.leader})"

    def run(self, *argv: str, check: bool = True, timeout: float = 30,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container, as its root: its mounts, PIDs and network."""
        return run(["nsenter", "--target", str(self.leader), "--mount", "--uts", "--ipc",
                    "--net", "--pid", "--", "env", "-i", *CONTAINER_ENV, *argv],
                   check=check, timeout=timeout, input=input)

    def systemctl(self, *args: str, check: bool = True) -> str:
        return self.run("systemctl", *args, check=check).stdout.strip()

    def unit_property(self, unit: str, prop: str) -> str:
        return self.systemctl("show", "--property", prop, "--value", unit)

    def main_pid(self, unit: str) -> int:
        return int(self.unit_property(unit, "MainPID"))

    def journal(self, unit: str, *args: str) -> str:
        """The unit's journal, messages only (`journalctl -o cat`); `args` filter it."""
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", unit, *args).stdout

    def wait_active(self, unit: str, *, not_pid: int = 0, timeout_s: float = 20) -> int:
        """Wait until `unit` is active with a main process other than `not_pid`; its pid."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pid = self.main_pid(unit)
            if pid not in (0, not_pid) and self.unit_property(unit, "ActiveState") == "active":
                return pid
            time.sleep(0.2)
        raise LabError(f"{self.name}: {unit} not active within {timeout_s} s:\n"
                       + self.journal(unit, "-n", "30"))

    def state(self) -> str:
        """`systemctl is-system-running`: starting, running, degraded..."""
        return self.run("systemctl", "is-system-running", check=False).stdout.strip()


def _leader(nspawn_pid: int) -> int | None:
    """The container's PID 1: the descendant of nspawn that is PID 1 in its own namespace."""
    todo = [nspawn_pid]
    while todo:
        pid = todo.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        nspid = next((line.split()[1:] for line in status.splitlines()
                      if line.startswith("NSpid:")), [])
        if pid != nspawn_pid and len(nspid) > 1 and nspid[-1] == "1":
            return pid
        todo.extend(int(child) for child in children)
    return None


def _unmount(path: Path) -> None:
    if run(["umount", str(path)], check=False).returncode != 0:
        # Still busy (a process that outlived the container): detach it; it goes when idle.
        run(["umount", "--lazy", str(path)])


def _prepare_root(root: Path, name: str, authorized_keys: str) -> None:
    """This host's own files, written through the overlay before it boots."""
    (root / "etc" / "hostname").write_text(f"{name}\n")
    # Names resolve locally, and a query never leaves the lab (as Host.set_hosts does for a
    # namespace host): the machine's resolver is out of reach, and Ansible's fact gathering
    # waited 5 s on it for this host's own name.
    (root / "etc" / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {name}\n")
    resolv_conf = root / "etc" / "resolv.conf"
    resolv_conf.unlink(missing_ok=True)  # never write through a link: it may name the machine's
    resolv_conf.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    ssh = root / "root" / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    (ssh / "authorized_keys").write_text(authorized_keys)
    (ssh / "authorized_keys").chmod(0o600)
    # Host keys of its own (the cache has none): ssh-keygen -A writes the missing ones.
    run(["ssh-keygen", "-A", "-f", str(root)])


def _tun_node(path: Path) -> Path:
    """A device node of the machine's TUN device, mode 0600 as a machine without udev has it."""
    dev = os.stat(TUN_DEVICE).st_rdev
    os.mknod(path, 0o600 | stat.S_IFCHR, dev)
    path.chmod(0o600)
    return path


def boot(lab: Lab, host: Host, *, authorized_keys: str = "",
         binds: Sequence[Path | tuple[Path, str]] = (),
         prepare: Callable[[Path], None] | None = None) -> SystemdHost:
    """Boot a systemd container in `host`'s namespace; returns when systemd is up.

    `binds` are machine directories mounted read-only inside, at the same path or at the
    one given (e.g. the wheels a host installs from: it reaches no package index).
    `prepare` writes into the root before the boot (files, units to start at boot).
    """
    rootfs = ensure_rootfs()
    base = lab.tempdir / "systemd" / host.name
    upper, work, root = base / "upper", base / "work", base / "root"
    for path in (upper, work, root):
        path.mkdir(parents=True)
    upper.chmod(0o755)  # the overlay's root takes the upper directory's mode: see rootfs.py
    run(["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={rootfs},upperdir={upper},workdir={work}", str(root)])
    lab.on_close(f"unmounting {root}", lambda: _unmount(root))
    _prepare_root(root, host.name, authorized_keys)
    if prepare is not None:
        prepare(root)
    tun = _tun_node(base / "tun")
    argv = ["systemd-nspawn", "--directory", str(root), "--boot", "--register=no",
            # The machine name keys nspawn's state in /run: the namespace's, unique per lab.
            "--keep-unit", f"--machine={host.netns}", f"--hostname={host.name}",
            f"--network-namespace-path=/run/netns/{host.netns}",
            "--capability=CAP_NET_ADMIN", f"--bind={tun}:{TUN_DEVICE}", "--resolv-conf=off",
            *(f"--bind-ro={bind[0]}:{bind[1]}" if isinstance(bind, tuple) else f"--bind-ro={bind}"
              for bind in binds)]
    # /proc/sys/net writable, as on a real host (it is the lab namespace's own): the role
    # turns forwarding on for a subnet router; nspawn leaves it read-only otherwise.
    proc = Proc(argv, lab.tempdir / f"{host.name}-console.log",
                env={"SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"})
    host.procs.append(proc)
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    leader = None
    while leader is None:
        if not proc.alive() or time.monotonic() > deadline:
            raise LabError(f"{host.name}: the container did not start:\n{proc.log()[-2000:]}")
        leader = _leader(proc.pid)
        time.sleep(0.05)
    systemd_host = SystemdHost(host, root, proc, leader)
    while (state := systemd_host.state()) not in ("running", "degraded"):
        if not proc.alive() or time.monotonic() > deadline:
            raise LabError(f"{host.name}: systemd did not come up (state {state!r}):\n"
                           f"{proc.log()[-2000:]}")
        time.sleep(0.1)
    return systemd_host
