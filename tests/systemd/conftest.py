"""What the systemd-host tests share: skip where none can boot, and the agent's virtualenv."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from whalescale.lab import lab_available
from whalescale.lab.rootfs import rootfs_unavailable

# Debian's Python, the one the hosts have: the virtualenv's interpreter link names it.
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="session")
def systemd_skip_reason() -> None:
    reason = lab_available() or rootfs_unavailable()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def agent_venv(systemd_skip_reason: None, wheel: Path, wheelhouse: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv of the release wheel and its dependencies, made once per session with
    the Python the hosts have; systemd hosts get it bound read-only (systemd_scenario.py)."""
    venv = tmp_path_factory.mktemp("agent") / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True, timeout=120)
    result = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
         "--no-index", "--find-links", str(wheelhouse), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return venv
