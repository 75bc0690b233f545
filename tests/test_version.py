"""`whalescale --version`: pyproject.toml's version, installed or from a checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_version_is_pyprojects(project_version: str) -> None:
    result = subprocess.run([sys.executable, "-m", "whalescale", "--version"],
                            capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout == f"whalescale {project_version}\n"


def test_a_checkout_without_an_installed_distribution_reads_pyproject(
    project_version: str,
) -> None:
    # -I: no site-packages (so no installed whalescale) and no PYTHONPATH; the checkout alone.
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r}); "
              "from whalescale.version import version; print(version())")
    result = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True,
                            text=True, timeout=60, check=True)
    assert result.stdout == f"{project_version}\n"
