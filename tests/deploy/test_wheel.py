"""The release artifact: a wheel of the package alone that installs into a fresh virtualenv as
a working `whalescale`, versioned from pyproject.toml.

The wheel is the session's, built once by the Ansible role's tasks (tests/conftest.py). Its
install is fast and offline on purpose: it goes in with `--no-deps --no-index`, and the fresh
virtualenv borrows its dependencies from the running one through a .pth line (see
`fresh_venv`). The Ansible lab test (tests/ansible/test_playbook.py) installs the same wheel
with its real dependencies and runs agents from it.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Import names of the optional extras (plots, test): the agent must start without any of them.
EXTRAS = ["matplotlib", "pytest", "hypothesis", "ansible", "ansiblelint", "build"]
# Away from the checkout: a PYTHONPATH to it would show pip and Python its whalescale.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture
def fresh_venv(wheel: Path, tmp_path: Path) -> Path:
    """A new virtualenv with the wheel installed, and the running one's packages to import."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, timeout=120, env=ENV)
    # `--system-site-packages` would give the base interpreter's packages, not this
    # virtualenv's; a .pth line appends this one's site-packages after the fresh one's, so the
    # wheel's whalescale is found first and nothing is downloaded. Written after the install:
    # pip would take the checkout's editable whalescale there for the wheel, installed already.
    # (That one's own .pth is not run: only .pth files in a site directory are.)
    (purelib,) = venv.glob("lib/python3*/site-packages")
    (purelib / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv


def run(venv: Path, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A command of the virtualenv, away from the checkout."""
    return subprocess.run([str(venv / "bin" / args[0]), *map(str, args[1:])], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=60)


def test_the_wheel_holds_the_package_and_its_command_and_no_tests(
    wheel: Path, project_version: str,
) -> None:
    assert wheel.name == f"whalescale-{project_version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(f"whalescale-{project_version}.dist-info/entry_points.txt")
    assert {name.split("/")[0] for name in names} == {"whalescale",
                                                      f"whalescale-{project_version}.dist-info"}
    assert "whalescale = whalescale.cli:main" in entry_points.decode()


def test_the_installed_wheel_runs_its_commands(
    fresh_venv: Path, project_version: str, tmp_path: Path,
) -> None:
    version = run(fresh_venv, "whalescale", "--version", cwd=tmp_path)
    assert version.stdout == f"whalescale {project_version}\n", version.stderr

    # The command runs the wheel's package, not this checkout's.
    where = run(fresh_venv, "python", "-c", "import whalescale; print(whalescale.__file__)",
                cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(fresh_venv), where.stdout + where.stderr

    # A mesh file made and checked by the installed command, as the README's first steps do.
    mesh = tmp_path / "mesh.toml"
    for args in (["keygen", tmp_path / "anchor.key"],
                 ["init", mesh, "--node", "anchor", "--key", tmp_path / "anchor.key",
                  "--endpoint", "192.0.2.10:51820", "--anchor"]):
        result = run(fresh_venv, "whalescale", *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    check = run(fresh_venv, "whalescale", "check", mesh, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "1 nodes (1 anchors)" in check.stdout


def test_what_the_agent_imports_needs_no_extra(fresh_venv: Path, tmp_path: Path) -> None:
    # The modules `whalescale up` imports before it starts the agent (cli.cmd_up).
    script = ("import sys, trio, whalescale.cli, whalescale.agent.agent, whalescale.config, "
              f"whalescale.node.specs; print(sorted(set({EXTRAS!r}) & set(sys.modules)))")
    result = run(fresh_venv, "python", "-c", script, cwd=tmp_path)
    assert result.stdout == "[]\n", result.stdout + result.stderr
