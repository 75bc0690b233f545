"""The role's unit template, rendered with the role's defaults, is deploy/whalescale.service.

Rendered by the role's own task file (tasks_from: unit.yml) in a local play, so the test
sees exactly what a host gets, the credential path of the key included.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "ansible" / "roles" / "whalescale"
BIN = Path(sys.executable).parent

PLAY = """\
- name: Render the whalescale unit with the role's defaults
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Render the unit
      ansible.builtin.include_role:
        name: {role}
        tasks_from: unit.yml
"""


def test_unit_template_renders_to_the_shipped_unit(tmp_path: Path) -> None:
    playbook = tmp_path / "unit.yml"
    playbook.write_text(PLAY.format(role=ROLE))
    out_dir = tmp_path / "systemd"
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook),
         "-e", f"ansible_python_interpreter={sys.executable}",
         "-e", f"whalescale_systemd_unit_dir={out_dir}",
         # Only the file is wanted: no service manager, so the handlers do nothing.
         "-e", "whalescale_service_manager=none"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rendered = (out_dir / "whalescale.service").read_bytes()
    assert rendered == (REPO / "deploy" / "whalescale.service").read_bytes()


@pytest.mark.parametrize("name", ["whalescale-tun.conf", "whalescale.sysusers",
                                  "50-whalescale.rules"])
def test_the_roles_files_are_the_shipped_ones(name: str) -> None:
    """/dev/net/tun made usable by the unit's user, that user, and the polkit rule that
    lets it register names with systemd-resolved: the role installs deploy's files."""
    assert (ROLE / "files" / name).read_bytes() == (REPO / "deploy" / name).read_bytes()
