"""The sdist, the release a machine without the Ansible controller installs from: besides
the package, every file of deploy/ that the README's manual install names, and the role."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_sdist_ships_what_the_manual_install_uses(tmp_path: Path) -> None:
    # setuptools' working files go to tmp_path, not into the checkout (as the role does)
    config = tmp_path / "setup.cfg"
    config.write_text(f"[egg_info]\negg_base = {tmp_path}\n")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path / "dist"), str(REPO)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "DIST_EXTRA_CONFIG": str(config)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sdist,) = (tmp_path / "dist").glob("whalescale-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    named = set(re.findall(r"\bdeploy/[\w.-]+", (REPO / "README.md").read_text()))
    shipped = {f"deploy/{p.name}" for p in (REPO / "deploy").iterdir()}
    assert named and named <= shipped  # the README names real files
    assert shipped <= names, sorted(shipped - names)
    assert {"site.yml", "ansible/roles/whalescale/tasks/main.yml",
            "ansible/roles/whalescale/files/50-whalescale.rules"} <= names
    assert not any(name.startswith("tests/") for name in names)
