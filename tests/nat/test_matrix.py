"""The NAT connectivity matrix (issue 7): nebula 1.6.1, then whalescale, on one topology.

Steps: build the NAT lab once for the module; run Debian's nebula on every node (anchors
as lighthouses and relays), measure every pair, stop it; run whalescale the same way;
print both matrices side by side (`pytest -s`) and keep the table in the lab's temporary
directory (kept after the run with WHALESCALE_LAB_KEEP=1).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from whalescale.lab import Lab, lab_available
from whalescale.lab.natlab import NatLab
from whalescale.lab.natmatrix import (
    EXPECTED_WHALESCALE,
    PAIRS,
    Matrix,
    render_side_by_side,
    run_matrix,
)

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(lab_available() is not None, reason=str(lab_available())),
]


@pytest.fixture(scope="module")
def matrices() -> Iterator[tuple[Matrix, Matrix, Path]]:
    """(whalescale, nebula, the lab's directory with every agent's log), measured one
    after the other on one topology."""
    with Lab() as lab, NatLab(lab) as natlab:
        nebula = run_matrix(natlab, "nebula")  # stopped by its pids before ours starts
        ours = run_matrix(natlab, "whalescale")
        table = render_side_by_side(ours, nebula)
        (lab.tempdir / "nat-matrix.md").write_text(table + "\n")
        print(f"\n{table}\n(also in {lab.tempdir / 'nat-matrix.md'})")
        yield ours, nebula, lab.tempdir


def test_nebula_connects_every_pair_with_the_public_node(
    matrices: tuple[Matrix, Matrix, Path],
) -> None:
    # The reference run proves the topology routes: a public node is reachable by all.
    _, nebula, _ = matrices
    with_public = [pair for pair in PAIRS if "public" in pair]
    assert all(nebula.cells[pair].connected for pair in with_public), nebula.cells


def test_whalescale_matrix_is_what_the_issue_expects(
    matrices: tuple[Matrix, Matrix, Path],
) -> None:
    ours, _, logs = matrices
    wrong = {pair for pair, path in ours.paths().items() if path is not EXPECTED_WHALESCALE[pair]}
    # what the agents of a wrong cell said about NAT traversal, for whoever reads a failure
    said = "\n".join(f"{log.name}: {line}" for log in sorted(logs.glob("*.log"))
                     if any(log.name.startswith(f"{node}-") for pair in wrong for node in pair)
                     for line in log.read_text(errors="replace").splitlines()
                     if " nat: " in line or "session with" in line)
    assert all(cell.connected for cell in ours.cells.values()), (ours.cells, said)
    assert ours.paths() == EXPECTED_WHALESCALE, said
