"""Every scenario file in scenarios/ on the namespace lab (the NixOS VM tests run the
same files: nix/tests/scenario.nix)."""

from __future__ import annotations

from pathlib import Path

import pytest

from whalescale.lab import Lab
from whalescale.lab.scenario import ScenarioError, load, run, scenario_files


def test_there_are_scenarios() -> None:
    names = {path.stem for path in scenario_files()}
    assert {"two-nodes", "nat-anchor", "reload-refused"} <= names


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in scenario_files()])
def test_scenario_file_loads(path: Path) -> None:
    scenario = load(path)
    assert scenario.name == path.stem
    assert scenario.checks, "a scenario without checks proves nothing"


def test_a_check_naming_a_missing_node_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[[network]]\nname = "internet"\n'
                   '[[host]]\nname = "anchor"\nnetwork = "internet"\n'
                   '[[check]]\nkind = "ping"\nfrom = "anchor"\nto = "ghost"\n')
    with pytest.raises(ScenarioError, match=r"bad\.toml: .*check\[0\]\.from: 'anchor' is not a "
                       r"whalescale node; check\[0\]\.to: 'ghost'"):
        load(bad)


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "typo.toml"
    bad.write_text('name = "typo"\n[[network]]\nname = "internet"\nnatt = "cone"\n')
    with pytest.raises(ScenarioError, match=r"typo\.toml: .*natt"):
        load(bad)


@pytest.mark.lab
@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in scenario_files()])
def test_scenario_on_the_lab(lab: Lab, path: Path) -> None:
    results = run(lab, load(path))
    failed = [str(r) for r in results if not r.passed]
    assert not failed, "\n".join(map(str, results))
