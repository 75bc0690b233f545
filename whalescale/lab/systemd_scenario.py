"""Scenario files on systemd hosts: the counterpart that runs here of each NixOS VM test.

nix/tests/scenario.nix makes one VM test of each file in scenarios/; those need a Nix store
and KVM, which this machine lacks. This module runs the same file with every whalescale
node a systemd host (systemd_host.py) running the shipped unit, so each VM test has a
counterpart of the same name that runs (tests/systemd/test_scenarios.py). What the VM test
does, done here:

- the NixOS module installs the package, the unit, the tmpfiles.d line, the mesh file and
  the key -> `install` writes the same into the container's root before it boots: the
  agent's virtualenv (made from the release wheel) bound read-only at /opt/whalescale/venv,
  deploy/whalescale.service enabled, deploy/whalescale-tun.conf, /etc/whalescale;
- `wait_for_unit("whalescale.service")` -> `SystemdHost.wait_active`;
- a ping check -> the same check as on the namespace lab (the container shares its host's
  network namespace);
- a reload check -> the new mesh over /etc/whalescale/mesh.toml, `whalescale reload`, and
  the journal, not a log file, must say `reload <expect>`.

Gateways and the internet stay namespace hosts: their NAT is nftables in their namespace.
"""

from __future__ import annotations

import shutil
import time
from functools import partial
from pathlib import Path

from .lab import Lab
from .mesh import MeshNode
from .scenario import (
    RELOAD_LOG_TIMEOUT_S,
    CheckResult,
    ReloadCheck,
    Scenario,
    build,
    mesh_of,
    reload_result,
    run_check,
)
from .systemd_host import SystemdHost, boot

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = "whalescale.service"
VENV = "/opt/whalescale/venv"  # where the agent's virtualenv is bound inside
MESH = "whalescale/mesh.toml"  # under /etc, as the unit reads it
# The unit runs /usr/local/bin/whalescale. The virtualenv was made on the machine, so its
# scripts name the machine's path to it: the module is run by the venv's Python instead.
COMMAND = f'#!/bin/sh\nexec {VENV}/bin/python -m whalescale "$@"\n'


def install(root: Path, mesh_path: Path, node: MeshNode) -> None:
    """What the NixOS module puts on a node, written into its root before the boot."""
    etc = root / "etc"
    (etc / "whalescale").mkdir(mode=0o755)
    shutil.copyfile(mesh_path, etc / MESH)
    key = etc / "whalescale" / "private.key"
    shutil.copyfile(node.key_path, key)
    key.chmod(0o600)
    command = root / "usr" / "local" / "bin" / "whalescale"
    command.write_text(COMMAND)
    command.chmod(0o755)
    (etc / "tmpfiles.d").mkdir(exist_ok=True)
    shutil.copyfile(DEPLOY / "whalescale-tun.conf", etc / "tmpfiles.d" / "whalescale-tun.conf")
    units = etc / "systemd" / "system"
    shutil.copyfile(DEPLOY / UNIT, units / UNIT)
    (units / "multi-user.target.wants" / UNIT).symlink_to(f"/etc/systemd/system/{UNIT}")


def _reload(host: SystemdHost, check: ReloadCheck) -> CheckResult:
    (host.root / "etc" / MESH).write_text(check.mesh)
    result = host.run("whalescale", "reload", "--state-dir", "/var/lib/whalescale",
                      check=False)

    def logged() -> bool:
        deadline = time.monotonic() + RELOAD_LOG_TIMEOUT_S
        while f"reload {check.expect}" not in host.journal(UNIT):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    return reload_result(check, result, logged)


def run(lab: Lab, scenario: Scenario, venv: Path) -> list[CheckResult]:
    """Build `scenario` on `lab` with systemd hosts for its nodes, each running the unit
    from `venv` (a virtualenv of the release wheel); run every check in order."""
    hosts = build(lab, scenario)
    mesh = mesh_of(lab, scenario, hosts)
    nodes = {name: boot(lab, node.host, binds=[(venv, VENV)],
                        prepare=partial(install, mesh_path=mesh.mesh_path, node=node))
             for name, node in mesh.nodes.items()}
    for node in nodes.values():
        node.wait_active(UNIT)
    return [_reload(nodes[check.on], check) if isinstance(check, ReloadCheck)
            else run_check(mesh, check) for check in scenario.checks]
