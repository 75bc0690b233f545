"""Every scenario file in scenarios/ on systemd hosts running the shipped unit: the
counterpart, of the same name, of each NixOS VM test (nix/tests/scenario.nix), which cannot
run on this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from whalescale.lab import Lab
from whalescale.lab.scenario import load, scenario_files
from whalescale.lab.systemd_scenario import run

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in scenario_files()])
def test_scenario_on_systemd_hosts(lab: Lab, agent_venv: Path, path: Path) -> None:
    results = run(lab, load(path), agent_venv)
    failed = [str(r) for r in results if not r.passed]
    assert not failed, "\n".join(map(str, results))
