"""The example inventory renders a mesh file that `whalescale check` accepts.

The role's own mesh task (tasks_from: mesh.yml, which validates with `whalescale check`)
runs in a local play; the hosts' public keys, which a real run reads from each host, come
from a second inventory source made here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from whalescale.config import load_mesh
from whalescale.identity import Identity

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "ansible" / "roles" / "whalescale"
BIN = Path(sys.executable).parent
HOSTS = ["vps", "homeserver", "laptop", "handheld", "nas"]

PLAY = """\
- name: Render the example mesh
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Render the mesh file
      ansible.builtin.include_role:
        name: {role}
        tasks_from: mesh.yml
"""


def test_example_inventory_renders_a_valid_mesh(tmp_path: Path) -> None:
    keys = {"all": {"hosts": {
        name: {"whalescale_public_key": Identity.generate().public_b64} for name in HOSTS
    }}}  # fmt: skip
    keys_inventory = tmp_path / "keys.yml"
    keys_inventory.write_text(yaml.safe_dump(keys))
    playbook = tmp_path / "mesh.yml"
    playbook.write_text(PLAY.format(role=ROLE))
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "inventory/example", "-i", str(keys_inventory),
         "-i", "localhost,", str(playbook),
         "-e", f"ansible_python_interpreter={sys.executable}",
         "-e", f"whalescale_config_dir={tmp_path}",
         "-e", f"whalescale_executable={BIN / 'whalescale'}",
         "-e", "whalescale_service_manager=none"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    mesh = (tmp_path / "mesh.toml").read_text()
    check = subprocess.run([str(BIN / "whalescale"), "check", str(tmp_path / "mesh.toml")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr + mesh
    assert "5 nodes (2 anchors), 1 WireGuard peers" in check.stdout
    assert 'interfaces = ["wlan0"]\nbackup_interfaces = ["usb0"]' in mesh
    nodes = {node.name: node for node in load_mesh(tmp_path / "mesh.toml").nodes}
    home = nodes["homeserver"]
    assert [str(net) for net in home.routes] == ["192.168.1.0/24"]
    assert [str(rule) for rule in home.firewall] == ["allow from admins tcp port 22",
                                                     "deny from * tcp port 22"]
    assert (nodes["vps"].exit, nodes["laptop"].exit_node) == (True, "vps")
    assert nodes["handheld-1"].groups == ("kids",)
