"""Shared fixtures: `lab` gives each test a fresh multi-node lab and always tears it down."""

import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
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


# The date the role's build gives every file in the wheel (tasks/wheel.yml): the same source,
# the same bytes.
SOURCE_DATE_EPOCH = "315532800"


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout built into a wheel, once per session, as the Ansible role builds it."""
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
         "--wheel-dir", str(out), str(REPO)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH},
    )
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("whalescale-*.whl")
    return built
