"""The root filesystem that systemd hosts boot from: Debian built once, cached outside the clone.

Rules this file keeps:
- The cache lives at `/var/cache/whalescale-lab/` (or `$WHALESCALE_ROOTFS_CACHE`), one
  directory per recipe, named for a hash of everything that goes into it (suite, mirror,
  packages, the set-up script, `ROOTFS_VERSION`). A changed recipe makes a new directory; an
  unchanged one is reused, so a fresh machine or a CI runner builds it once and then never.
- A build runs in a scratch directory beside the cache and is renamed into place only when
  complete, under an exclusive lock, so two test runs never build at once and none ever
  boots a half-built tree.
- Its root directory is mode 0755: under a 0700 root (what `mkdtemp` makes) every
  `DynamicUser=` service fails with 200/CHDIR.
- Hosts never write to it: they boot through an overlay (systemd_host.py).
- The tree holds everything the Ansible role would install, because a host has no network
  to a mirror: the role's package task must find nothing to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from whalescale.lab.errors import LabError
from whalescale.lab.proc import run

# Bump when what the build does changes in a way the recipe below does not show.
ROOTFS_VERSION = 1
CACHE_ENV = "WHALESCALE_ROOTFS_CACHE"
DEFAULT_CACHE = Path("/var/cache/whalescale-lab")
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    # A booting init with a system bus.
    "systemd", "systemd-sysv", "dbus",
    # The Ansible target: sshd, Python, and python3-apt for the apt and package_facts modules.
    "openssh-server", "python3", "python3-apt",
    # What the whalescale roles install or run: venv for the virtualenv, ip, nft.
    "python3-venv", "iproute2", "nftables",
    # ps, pgrep and kill for tests that look at the agent's process.
    "procps",
    # Where the agent registers the mesh's names, and the polkit that lets its user (polkitd
    # needs a logind; debootstrap does not pick libpam-systemd for it by itself).
    "systemd-resolved", "polkitd", "libpam-systemd",
)  # fmt: skip
# Run in the new tree (chroot) once debootstrap is done.
SETUP_SCRIPT = """\
set -eu
# Each host makes its own host keys at boot (systemd_host.py writes them before it starts).
rm -f /etc/ssh/ssh_host_*
cat > /etc/ssh/sshd_config.d/lab.conf <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
EOF
# Timers that would reach for a mirror; there is none in the lab.
systemctl mask apt-daily.timer apt-daily-upgrade.timer
# resolved stays running (the agent registers with it), but /etc/resolv.conf is a file of
# each host's own (systemd_host.py writes it), not resolved's link into /run.
rm -f /etc/resolv.conf
# A fresh machine id per boot (systemd makes one when the file is empty).
: > /etc/machine-id
apt-get clean
rm -rf /var/lib/apt/lists/*
"""
BUILD_TIMEOUT_S = 900
LOCK_TIMEOUT_S = BUILD_TIMEOUT_S + 60


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def recipe_key(packages: Sequence[str] = PACKAGES, version: int = ROOTFS_VERSION) -> str:
    """A hash of everything the tree is built from: a new one means a new tree."""
    recipe = {"version": version, "suite": SUITE, "mirror": MIRROR,
              "packages": sorted(packages), "setup": SETUP_SCRIPT}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def rootfs_path() -> Path:
    return cache_dir() / f"{SUITE}-{recipe_key()}"


def rootfs_unavailable() -> str | None:
    """Why no systemd host can run on this machine, or None when it can."""
    for tool, package in (("debootstrap", "debootstrap"), ("systemd-nspawn", "systemd-container")):
        if shutil.which(tool) is None:
            return f"no `{tool}` (install the Debian package {package}, as run.sh does)"
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path`, waiting for another build at most LOCK_TIMEOUT_S."""
    with path.open("a") as file:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LabError(f"{path} stayed locked for {LOCK_TIMEOUT_S} s: "
                                   "is another build stuck?") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def ensure_rootfs() -> Path:
    """The cached tree for this recipe, built first if it is missing (a minute or two)."""
    target = rootfs_path()
    if target.is_dir():
        return target
    cache = cache_dir()
    cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    with _locked(cache / ".lock"):
        if target.is_dir():  # another run built it while we waited
            return target
        scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
        try:
            scratch.chmod(0o755)
            run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                 SUITE, str(scratch), MIRROR], timeout=BUILD_TIMEOUT_S)
            run(["chroot", str(scratch), "/bin/sh", "-c", SETUP_SCRIPT], timeout=60)
            scratch.rename(target)
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)
    return target
