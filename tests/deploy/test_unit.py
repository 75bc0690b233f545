"""deploy/whalescale.service: systemd accepts it, and its command lines run as written.

No systemd runs as PID 1 here, so the unit is checked twice: `systemd-analyze
verify` reads it as systemd would, and its ExecStartPre/ExecStart/ExecReload
lines run in a lab namespace with that host's own /etc/whalescale.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from whalescale.lab.mesh import LabMesh

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "whalescale.service"
INSTALLED = "/usr/local/bin/whalescale"
WHALESCALE = Path(sys.executable).parent / "whalescale"


def unit_commands() -> dict[str, str]:
    commands = {}
    for line in UNIT.read_text().splitlines():
        key, _, value = line.partition("=")
        if key in ("ExecStartPre", "ExecStart", "ExecReload"):
            commands[key] = value
    return commands


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify_is_clean(tmp_path):
    # verify insists the executables exist: point them at this checkout's
    unit = tmp_path / "whalescale.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED, str(WHALESCALE)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # unknown keys only warn: a clean unit prints nothing about itself
    assert "whalescale.service" not in result.stderr + result.stdout


def test_hardening_is_what_the_design_says():
    text = UNIT.read_text()
    for line in ("CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE",
                 "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_BIND_SERVICE",
                 "DynamicUser=yes", "User=whalescale", "DevicePolicy=closed",
                 "DeviceAllow=/dev/net/tun rw",
                 "ProtectSystem=strict", "PrivateTmp=yes", "StateDirectory=whalescale",
                 "ConfigurationDirectory=whalescale", "NoNewPrivileges=yes",
                 "LoadCredential=private.key:/etc/whalescale/private.key",
                 "Restart=on-failure"):
        assert f"\n{line}\n" in text, line
    assert "ExecReload=" in text


@pytest.mark.lab
def test_the_units_command_lines_run_in_a_lab_host(lab):
    hosts = lab.star(["anchor", "peer"])
    mesh = LabMesh(lab)
    anchor = mesh.add_node(hosts["anchor"], anchor=True)
    peer = mesh.add_node(hosts["peer"])
    mesh.write_mesh()
    # `ip netns exec` bind-mounts /etc/netns/NS/whalescale over /etc/whalescale, which
    # must exist as a mount point on the machine (an empty directory).
    Path("/etc/whalescale").mkdir(exist_ok=True)
    etc = anchor.host.etc_dir() / "whalescale"
    etc.mkdir()
    shutil.copy(mesh.mesh_path, etc / "mesh.toml")
    credentials = lab.tempdir / "credentials"  # what LoadCredential= gives the service
    credentials.mkdir(mode=0o700)
    shutil.copy(anchor.key_path, credentials / "private.key")
    state = lab.tempdir / "var-lib-whalescale"

    def argv(key: str) -> list[str]:
        line = (unit_commands()[key].replace(INSTALLED, str(WHALESCALE))
                .replace("%d", str(credentials)).replace("/var/lib/whalescale", str(state)))
        return shlex.split(line)

    check = anchor.host.run(*argv("ExecStartPre"), check=False)
    assert check.returncode == 0, check.stderr
    anchor.proc = anchor.host.spawn(*argv("ExecStart"), env={"PYTHONUNBUFFERED": "1"})
    mesh.wait_up("anchor")
    mesh.start("peer")
    mesh.wait_up("peer")
    assert peer.host.ping(anchor.tunnel_addr, count=3, timeout=2.0)
    reload = anchor.host.run(*argv("ExecReload"), check=False)
    assert reload.returncode == 0, reload.stderr
    assert "reload applied" in reload.stdout
    # ...and it read the host's own /etc/whalescale/mesh.toml
    assert "/etc/whalescale/mesh.toml" in " ".join(argv("ExecStart"))
