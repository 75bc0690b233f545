"""The protocol core does no I/O: it never imports sockets, trio, clocks or os."""

import ast
from pathlib import Path

import pytest

CORE = ["session", "wire"]
PURE_FILES = [
    "tun/segment.py",  # packet surgery for the TUN, no I/O of its own
    "mesh/records.py", "mesh/gossip.py", "mesh/gossip_messages.py", "mesh/anchors.py",
    "mesh/controller.py",
]
FORBIDDEN = {"socket", "trio", "time", "os", "asyncio", "select", "subprocess", "pyroute2"}
ROOT = Path(__file__).resolve().parent.parent / "whalescale"


@pytest.mark.parametrize("path", sorted([p for pkg in CORE for p in (ROOT / pkg).rglob("*.py")]
                                        + [ROOT / f for f in PURE_FILES]),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_no_io(path):
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{path.name} imports {imported & FORBIDDEN}"
