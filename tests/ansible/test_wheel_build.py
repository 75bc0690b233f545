"""The role's own build (tasks_from: wheel.yml), as it runs on the controller when no
whalescale_wheel is given: it makes the same bytes as any other build of this checkout, which
is what keeps a second run's copy to the hosts unchanged.

The lab playbook test gives its hosts a wheel instead (its control host reaches no index), so
the build is checked here, in a local play.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "ansible" / "roles" / "whalescale"
BIN = Path(sys.executable).parent

PLAY = """\
- name: Build the whalescale wheel as the role does
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Build the wheel
      ansible.builtin.include_role:
        name: {role}
        tasks_from: wheel.yml
    - name: Keep the wheel
      ansible.builtin.copy:
        src: "{{{{ _whalescale_built.files[0].path }}}}"
        dest: {out}/
        mode: "0644"
"""


def test_the_roles_build_gives_the_same_wheel_as_another_build(
    wheel: Path, tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    playbook = tmp_path / "build.yml"
    playbook.write_text(PLAY.format(role=ROLE, out=out))
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook),
         "-e", f"ansible_python_interpreter={sys.executable}"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        # The role's scratch directory goes here, not into the machine's /tmp.
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.iterdir()
    assert built.name == wheel.name
    assert built.read_bytes() == wheel.read_bytes()
