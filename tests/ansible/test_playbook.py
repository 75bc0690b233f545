"""`ansible-playbook -i INVENTORY site.yml` deploys a working mesh to real SSH hosts.

Theory of operation: every lab host runs its own sshd inside its namespace, so Ansible meets
real SSH targets; a fourth host, `control`, runs ansible-playbook (the machine's own
namespace has no route into the lab). What a host must own is made per host:

- /etc/whalescale: `ip netns exec` binds /etc/netns/<ns>/whalescale over it, for sshd and
  everything its sessions start (the role's files, the agent's reads).
- /var/lib/whalescale (the unit's state directory, kept at its default): `ip netns exec`
  gives sshd a mount namespace of its own, and sshd's start-up command binds a per-host
  directory over the path there, invisible to the machine and to the other hosts.
- the installation (the wheel, the virtualenv), the command, the unit, the pidfile and the
  agent's log: lab inventory values under the lab's temporary directory, one directory per
  host, never the machine's /opt, /usr/local/bin or /etc/systemd.

The hosts get the release artifact: this checkout's wheel (built once per session, as the role
builds it), installed with its real dependencies, and nothing else of the checkout.

The lab has no systemd as PID 1, so the role takes its start-stop-daemon path: the agents
are daemons the lab did not spawn, and this file stops them by their pidfiles.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ansible.playbook import (
    NODES,
    PORT,
    close_masters,
    common_vars,
    pings,
    run_playbook,
    write_inventory,
)
from whalescale.lab import Lab
from whalescale.lab.netns import Host

pytestmark = pytest.mark.lab

# The installed command, away from the checkout (a PYTHONPATH to it would shadow the wheel's).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
# Mount points that `ip netns exec` and sshd's start-up bind per-host directories over.
MOUNT_POINTS = [Path("/etc/whalescale"), Path("/var/lib/whalescale")]
SSHD_CONFIG = """\
ListenAddress {addr}
Port 22
HostKey {dir}/host_key
AuthorizedKeysFile {dir}/authorized_keys
PidFile {dir}/sshd.pid
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
# The lab's temporary directory sits under world-writable /tmp.
StrictModes no
Subsystem sftp internal-sftp
"""


def _host_dir(lab: Lab, name: str) -> Path:
    path = lab.tempdir / "hosts" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _start_sshd(lab: Lab, host: Host, client_pub: str) -> None:
    """sshd on the host's lab address, port 22, with its own key, config and state dir."""
    ssh_dir = _host_dir(lab, host.name) / "sshd"
    ssh_dir.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(ssh_dir / "host_key")], check=True)
    (ssh_dir / "authorized_keys").write_text(client_pub)
    config = ssh_dir / "sshd_config"
    config.write_text(SSHD_CONFIG.format(addr=host.addr(), dir=ssh_dir))
    (host.etc_dir() / "whalescale").mkdir()
    state_dir = _host_dir(lab, host.name) / "state"
    state_dir.mkdir()
    proc = host.spawn("sh", "-c", f"mount --bind {state_dir} /var/lib/whalescale && "
                      f"exec /usr/sbin/sshd -D -e -f {config}")
    if not proc.wait_for_log(r"Server listening on", 10):
        raise TimeoutError(f"sshd in {host.name} did not start:\n{proc.log()}")


def _inventory(lab: Lab, hosts: dict[str, Host], client_key: Path, wheel: Path,
               wheelhouse: Path) -> Path:
    """The lab inventory: SSH to each host's lab address, per-host install paths."""

    def own_vars(name: str) -> dict[str, object]:
        own = _host_dir(lab, name)
        return {
            "whalescale_install_dir": str(own / "opt"),
            "whalescale_executable": str(own / "bin" / "whalescale"),
            "whalescale_systemd_unit_dir": str(own / "systemd"),
            "whalescale_pidfile": str(own / "whalescale.pid"),
            "whalescale_log_file": str(own / "whalescale.log"),
        }

    all_vars = {
        **common_vars(lab, client_key, wheel, wheelhouse),
        # Forced, not detected: on a machine with systemd the role must still not touch it.
        "whalescale_service_manager": "start-stop-daemon",
        "whalescale_anchor_nftables_file": "/etc/whalescale/whalescale.nft",
        "whalescale_anchor_nftables_conf": "",
    }
    return write_inventory(lab, {name: hosts[name].addr() for name in NODES}, all_vars, own_vars)


def _agent_pid(lab: Lab, name: str) -> int | None:
    """The pid in the host's pidfile, if it is a live whalescale agent (not a reused pid)."""
    pidfile = _host_dir(lab, name) / "whalescale.pid"
    try:
        pid = int(pidfile.read_text().strip())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ValueError):
        return None
    # stat: "pid (comm) state ..."; a zombie has exited already.
    comm, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
    return pid if comm == "whalescale" and state != "Z" else None


def _stop_agents(lab: Lab) -> None:
    """Stop the agents the role started (the lab stops only what it spawned itself)."""
    pids = [pid for name in NODES if (pid := _agent_pid(lab, name)) is not None]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_agent_pid(lab, n) for n in NODES):
        time.sleep(0.05)
    for name in NODES:
        if (pid := _agent_pid(lab, name)) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def ssh_lab(lab: Lab, wheel: Path,
            wheelhouse: Path) -> Iterator[tuple[Lab, dict[str, Host], Path]]:
    """Three mesh hosts with sshd and a control host; agents stopped before the lab goes."""
    for path in MOUNT_POINTS:
        path.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    hosts = lab.star([*NODES, "control"])
    client_key = lab.tempdir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(client_key)],
                   check=True)
    try:
        for name in NODES:
            _start_sshd(lab, hosts[name], client_key.with_suffix(".pub").read_text())
        yield lab, hosts, _inventory(lab, hosts, client_key, wheel, wheelhouse)
    finally:
        _stop_agents(lab)
        close_masters(lab, hosts["control"], (hosts[n].addr() for n in NODES))


def test_site_playbook_deploys_a_working_mesh_and_is_idempotent(
    ssh_lab: tuple[Lab, dict[str, Host], Path], wheel: Path, project_version: str,
) -> None:
    lab, hosts, inventory = ssh_lab
    control = hosts["control"]

    # First run: install, keys, mesh file, unit, agents.
    output, recap = run_playbook(control, inventory, NODES)
    assert all(changed > 0 for changed in recap.values()), output

    # Each host has the release artifact: the wheel in its installation directory, and the
    # command a link into the virtualenv made from it, which says the wheel's version.
    for name in NODES:
        own = _host_dir(lab, name)
        assert (own / "opt" / wheel.name).read_bytes() == wheel.read_bytes()
        command = own / "bin" / "whalescale"
        assert command.resolve().is_relative_to(own / "opt" / "venv")
        version = subprocess.run([str(command), "--version"], capture_output=True, text=True,
                                 env=ENV, cwd=own)
        assert version.stdout == f"whalescale {project_version}\n", version.stderr

    # One mesh file, the same bytes on every host, that whalescale accepts.
    meshes = {name: (hosts[name].etc_dir() / "whalescale" / "mesh.toml").read_text()
              for name in NODES}
    assert len(set(meshes.values())) == 1, meshes
    mesh_path = hosts["anchor1"].etc_dir() / "whalescale" / "mesh.toml"
    check = subprocess.run([str(_host_dir(lab, "anchor1") / "bin" / "whalescale"), "check",
                            str(mesh_path)], capture_output=True, text=True, env=ENV)
    assert check.returncode == 0, check.stderr
    assert "3 nodes (1 anchors)" in check.stdout

    # Each host made its own key; no private key is anywhere in the mesh file.
    for name in NODES:
        key_file = hosts[name].etc_dir() / "whalescale" / "private.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert key_file.read_text().strip() not in meshes[name]

    # The anchor's port is open in a table of its own.
    table = hosts["anchor1"].run("nft", "list", "table", "inet", "whalescale").stdout
    assert f"udp dport {PORT} accept" in table

    # The agents run, under the role's start-stop-daemon, and reach each other.
    pids = {name: _agent_pid(lab, name) for name in NODES}
    assert all(pids.values()), pids
    for src in NODES:
        for dst, addr in NODES.items():
            if dst != src:
                assert pings(hosts[src], addr), f"{src} -> {dst} ({addr}) through the tunnel"

    # Second run: nothing to change, and the agents were left alone.
    output, recap = run_playbook(control, inventory, NODES)
    assert recap == dict.fromkeys(NODES, 0), output
    assert {name: _agent_pid(lab, name) for name in NODES} == pids
