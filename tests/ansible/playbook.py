"""What the playbook tests share: the lab inventory's connection settings, running site.yml
from a control host, and reading its recap.

Two tests deploy site.yml to lab hosts over real SSH: tests/ansible/test_playbook.py onto
namespace hosts (the role's start-stop-daemon path) and tests/systemd/ onto systemd hosts
(the unit). Both run ansible-playbook from a `control` host, since the machine's own
namespace has no route into the lab.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

from whalescale.lab import Lab
from whalescale.lab.netns import Host

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PORT = 51820
# The mesh both tests deploy: inventory names and tunnel addresses; which are anchors.
NODES = {"anchor1": "100.96.0.1", "peer1": "100.96.0.2", "peer2": "100.96.0.3"}
ANCHORS = ["anchor1"]
_RECAP = re.compile(r"^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                    re.MULTILINE)


def control_path(lab: Lab) -> str:
    """Where ssh keeps each host's master connection (%h: the host's lab address)."""
    return str(lab.tempdir / "ssh-%h")


def common_vars(lab: Lab, client_key: Path, wheel: Path, wheelhouse: Path) -> dict[str, object]:
    """The inventory's `all` variables: SSH as root with the lab's key, the release wheel."""
    return {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(client_key),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no "
                                   "-o UserKnownHostsFile=/dev/null",
        # One connection per host for the whole run; closed at teardown (close_masters).
        "ansible_ssh_args": "-o ControlMaster=auto -o ControlPersist=120s "
                            f"-o ControlPath={control_path(lab)}",
        "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_become": False,
        # Built by the role's tasks before the lab (the `wheel` fixture), and given: the
        # control host, like the others, reaches no index for the build backend.
        "whalescale_wheel": str(wheel),
        "whalescale_pip_extra_args": f"--no-index --find-links {wheelhouse}",
        "whalescale_mesh_name": "lab",
        "whalescale_mesh_port": PORT,
    }  # fmt: skip


def write_inventory(lab: Lab, addrs: dict[str, str], all_vars: dict[str, object],
                    own_vars: Callable[[str], dict[str, object]] = lambda name: {}) -> Path:
    """The lab inventory of NODES: SSH to each host's lab address in `addrs`, which is also
    its static endpoint (the lab's hosts all reach each other), plus `own_vars(name)`."""

    def host_vars(name: str) -> dict[str, object]:
        return {"ansible_host": addrs[name], "whalescale_address": NODES[name],
                "whalescale_endpoints": [f"{addrs[name]}:{PORT}"], **own_vars(name)}

    inventory = {"all": {
        "vars": all_vars,
        "children": {
            "anchors": {"hosts": {name: host_vars(name) for name in ANCHORS}},
            "peers": {"hosts": {name: host_vars(name) for name in NODES if name not in ANCHORS}},
        },
    }}  # fmt: skip
    path = lab.tempdir / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def close_masters(lab: Lab, control: Host, addrs: Iterable[str]) -> None:
    """End the ssh master connections the runs left in the control namespace."""
    for addr in addrs:
        control.run("ssh", "-O", "exit", "-o", f"ControlPath={control_path(lab)}",
                    f"root@{addr}", check=False)


def run_playbook(control: Host, inventory: Path,
                 nodes: Iterable[str]) -> tuple[str, dict[str, int]]:
    """Run site.yml from the control host; its output and each host's changed count."""
    result = control.run(
        "env", "-C", str(REPO), f"ANSIBLE_CONFIG={REPO / 'ansible' / 'ansible.cfg'}",
        "ANSIBLE_NOCOLOR=1", "ANSIBLE_FORCE_COLOR=0",
        str(BIN / "ansible-playbook"), "-i", str(inventory), "site.yml",
        check=False, timeout=240,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    recap = {m[1]: int(m[2]) for m in _RECAP.finditer(result.stdout)}
    assert set(recap) == set(nodes), output
    return output, recap


def pings(src: Host, addr: str, timeout_s: float = 15) -> bool:
    """Whether `addr` answers `src` within `timeout_s` (a handshake may come first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if src.ping(addr, count=1, timeout=1.0):
            return True
    return False
