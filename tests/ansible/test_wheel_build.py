"""The role's build (tasks/wheel.yml), as it runs on the controller when no whalescale_wheel
is given, is reproducible: the same checkout gives the same bytes, which is what keeps a
second run's copy to the hosts unchanged.

The session's `wheel` is this build too; the lab playbook test hands it to its hosts (its
control host reaches no index for the build backend), so the build itself is checked here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def test_the_roles_build_gives_the_same_bytes_again(
    wheel: Path, build_wheel: Callable[[Path], Path], tmp_path: Path,
) -> None:
    again = build_wheel(tmp_path)
    assert again.name == wheel.name
    assert again.read_bytes() == wheel.read_bytes()
