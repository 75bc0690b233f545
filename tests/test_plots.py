"""matplotlib is the optional `plots` extra: without it, plotting says how to install it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from whalescale import plots
from whalescale.mesh import simulate as mesh_simulate
from whalescale.multipath import simulate as multipath_simulate


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules: `import matplotlib` raises ImportError, find_spec says None.
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def test_with_matplotlib_pyplot_is_there() -> None:
    pytest.importorskip("matplotlib")
    assert plots.missing() is None
    assert hasattr(plots.pyplot(), "subplots")


@pytest.mark.usefixtures("no_matplotlib")
def test_without_matplotlib_the_message_names_the_extra() -> None:
    assert plots.missing() == plots.MESSAGE
    assert "pip install 'whalescale[plots]'" in plots.MESSAGE
    with pytest.raises(plots.PlotsUnavailable, match=r"whalescale\[plots\]"):
        plots.pyplot()


@pytest.mark.usefixtures("no_matplotlib")
@pytest.mark.parametrize(
    ("main", "args"),
    [(mesh_simulate.main, ["--nodes", "3", "--duration", "1"]),
     (multipath_simulate.main, ["--scenario", "equal"])],
    ids=["mesh", "multipath"],
)
def test_simulations_refuse_plot_before_running_without_matplotlib(
    main, args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*args, "--plot", str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # nothing simulated
    assert "--plot: the plots need matplotlib" in err
    assert "pip install 'whalescale[plots]'" in err
