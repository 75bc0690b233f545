"""The multipath core does no I/O (the simulation's CLI aside, it is pure too)."""

import ast
from pathlib import Path

import pytest

FORBIDDEN = {"socket", "trio", "time", "os", "asyncio", "select", "subprocess", "pyroute2"}
ROOT = Path(__file__).resolve().parents[2] / "whalescale" / "multipath"


@pytest.mark.parametrize("path", sorted(ROOT.glob("*.py")), ids=lambda p: p.name)
def test_multipath_module_imports_no_io(path):
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN
