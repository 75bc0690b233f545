"""Shared fixtures: `lab` gives each test a fresh multi-node lab and always tears it down."""

import os
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from whalescale.lab import Lab, lab_available


@pytest.fixture
def lab_skip_reason() -> None:
    """Skip a test that makes its own lab (e.g. in a subprocess) where none can run."""
    reason = lab_available()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def lab(lab_skip_reason: None) -> Iterator[Lab]:
    """A fresh `Lab` with its own namespace prefix; skips where the lab cannot run."""
    with Lab() as fresh:
        yield fresh


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def project_version() -> str:
    """pyproject.toml's version: the one the wheel, `--version` and the hosts must show."""
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


ROLE = REPO / "ansible" / "roles" / "whalescale"
BUILD_PLAY = """\
- name: Build the whalescale wheel as the role does on the controller
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


@pytest.fixture(scope="session")
def build_wheel() -> Callable[[Path], Path]:
    """Build this checkout's wheel with the Ansible role's own tasks into a directory."""

    def build(directory: Path) -> Path:
        out = directory / "wheel"
        playbook = directory / "build.yml"
        playbook.write_text(BUILD_PLAY.format(role=ROLE, out=out))
        result = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
             str(playbook), "-e", f"ansible_python_interpreter={sys.executable}"],
            capture_output=True, text=True, timeout=300, cwd=REPO,
            # The role's scratch directory goes here too, not into the machine's /tmp.
            env={**os.environ, "TMPDIR": str(directory)},
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        (built,) = out.iterdir()
        return built

    return build


@pytest.fixture(scope="session")
def wheel(build_wheel: Callable[[Path], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout's wheel, built once per session as the hosts get it."""
    return build_wheel(tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="session")
def wheelhouse(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheels of whalescale's dependencies (no extras), fetched once per session.

    The lab hosts have no index to reach, so they install from here (`--no-index
    --find-links`): offline, and the same real dependencies a machine gets. A virtualenv
    borrowing this one's packages would be faster, but would not prove the wheel's
    dependency list, and would let the agent import the test extras.
    """
    wheelhouse = tmp_path_factory.mktemp("wheelhouse")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "pip"), "wheel", "--quiet",
         "--disable-pip-version-check", "--wheel-dir", str(wheelhouse), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return wheelhouse
