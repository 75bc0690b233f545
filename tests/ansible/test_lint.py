"""ansible-lint passes on the playbook, the roles and the example inventory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_LINT = Path(sys.executable).parent / "ansible-lint"


def test_ansible_lint_passes_with_the_production_profile() -> None:
    result = subprocess.run(
        [str(ANSIBLE_LINT), "-c", "ansible/.ansible-lint", "--nocolor"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Profile 'production' was required, and it passed" in result.stdout + result.stderr
