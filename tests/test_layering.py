"""The layers, written down and enforced: which package may import which (direction, not
only "no I/O in the core"), and that the protocol cores do no I/O.

From the bottom: wire/ (formats) < multipath/ < session/ (the WireGuard engine) <
nat/ and mesh/ (side by side, neither imports the other), and firewall/ (on config/
alone) < node/ (the cores wired together once) < agent/ (the trio shell). The shell
reaches the cores only through the node, bar the I/O adapters that live beside their
cores (ADAPTERS). bench/, lab/ and the CLI are tools on top and may use anything.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "whalescale"
ALLOWED: dict[str, set[str]] = {
    "__init__": {"deferred_imports"},
    "deferred_imports": set(),
    "wire": set(),
    "identity": set(),
    "netlink": set(),
    "version": set(),
    "tun": {"netlink"},
    "plots": set(),
    "config": {"identity"},
    "multipath": {"wire", "plots"},
    "session": {"wire", "multipath"},
    "nat": {"wire", "session"},
    "mesh": {"wire", "session", "identity", "plots"},
    "firewall": {"config"},
    "node": {"wire", "multipath", "session", "nat", "mesh", "config", "identity", "firewall"},
    "agent": {"node", "tun", "netlink", "config", "identity", "version"},
}
# I/O beside its core: the shell may import these modules of a core's package. And the
# port's datagram classes, which the kernel steering compiles (agent/steering.py).
ADAPTERS = {"mesh.cache", "nat.driver", "wire.port"}
TOOLS = {"bench", "lab", "cli", "exits", "__main__"}  # exits.py: how the CLI ends

CORE_PACKAGES = ["session", "wire", "multipath", "node", "firewall"]
PURE_FILES = [
    "tun/segment.py",  # packet surgery for the TUN, no I/O of its own
    "mesh/records.py", "mesh/gossip.py", "mesh/gossip_messages.py", "mesh/anchors.py",
    "mesh/controller.py",
    "nat/bootstrap.py", "nat/nattype.py", "nat/punch.py", "nat/punch_messages.py", "nat/relay.py",
    "nat/natpmp.py", "nat/pcp.py", "nat/portmap.py", "nat/traversal.py", "nat/lan.py",
]
FORBIDDEN = {"socket", "trio", "time", "os", "asyncio", "select", "subprocess",
             "random", "sqlite3", "threading"}
SIMULATIONS = {"simulate.py"}


def _package(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def whalescale_imports(path: Path) -> set[str]:
    """The modules of whalescale a file imports, as "package.module" ("package" alone for
    `from .. import package`)."""
    rel = path.relative_to(ROOT)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 0:
            if not (node.module or "").startswith("whalescale."):
                continue
            parts = node.module.split(".")[1:]
        else:
            base = list(rel.parts[:-1])
            parts = base[:len(base) - (node.level - 1)] + (node.module or "").split(".")
            parts = [p for p in parts if p]
        if not parts:
            continue
        if node.module is None or len(parts) == 1:
            found |= {".".join([*parts, a.name]) if parts else a.name for a in node.names}
        else:
            found.add(".".join(parts[:2]))
    return found


def all_files() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def wrong_arrows(package: str, imports: set[str]) -> set[str]:
    if package in TOOLS:
        return set()
    assert package in ALLOWED, f"{package}/ is in no layer: add it to ALLOWED"
    return {module for module in imports
            if module.split(".")[0] != package
            and module.split(".")[0] not in ALLOWED[package]
            and not (package == "agent" and module in ADAPTERS)}


@pytest.mark.parametrize("path", all_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layers(path):
    package = _package(path)
    wrong = wrong_arrows(package, whalescale_imports(path))
    assert not wrong, f"{package}/ may not import {sorted(wrong)}"


def test_the_rule_catches_what_it_forbids():
    """What this module checks must be able to fail: a test that cannot fail proves nothing."""
    assert wrong_arrows("session", {"nat.bootstrap", "wire.port"}) == {"nat.bootstrap"}
    assert wrong_arrows("nat", {"mesh.anchors"}) == {"mesh.anchors"}  # sideways
    assert wrong_arrows("agent", {"session.engine", "mesh.cache"}) == {"session.engine"}
    assert wrong_arrows("lab", {"session.engine"}) == set()
    # relative imports resolve to the package they name
    imports = whalescale_imports(ROOT / "session" / "engine.py")
    assert {"wire.port", "multipath.link", "session.peer"} <= imports


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
