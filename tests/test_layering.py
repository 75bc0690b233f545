"""The protocol core does no I/O: it never imports sockets, trio, clocks, os or random
(randomness and time are passed in). Simulations may seed their own random."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "whalescale"
CORE_PACKAGES = ["session", "wire", "multipath"]
PURE_FILES = [
    "tun/segment.py",  # packet surgery for the TUN, no I/O of its own
    "mesh/records.py", "mesh/gossip.py", "mesh/gossip_messages.py", "mesh/anchors.py",
    "mesh/controller.py",
    "nat/bootstrap.py", "nat/nattype.py", "nat/punch.py", "nat/punch_messages.py", "nat/relay.py",
    "nat/natpmp.py", "nat/pcp.py", "nat/portmap.py", "nat/traversal.py", "nat/lan.py",
]
FORBIDDEN = {"socket", "trio", "time", "os", "asyncio", "select", "subprocess", "pyroute2",
             "random"}
SIMULATIONS = {"simulate.py"}


def core_files() -> list[Path]:
    files = [p for pkg in CORE_PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    return sorted(files + [ROOT / f for f in PURE_FILES])


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_no_io(path):
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    forbidden = FORBIDDEN - {"random"} if path.name in SIMULATIONS else FORBIDDEN
    assert not imported & forbidden, f"{path.name} imports {imported & forbidden}"
