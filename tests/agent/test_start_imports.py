"""The agent starts without what it does not need to bring the tunnel up (issue "Cheap
start"): prometheus-client only with metrics on, numpy only once TUN offload hands over a
super-packet, rich and matplotlib only in the commands that draw, tomlkit only to edit a
mesh file or to say where a broken one is broken."""

import subprocess
import sys
from pathlib import Path

HEAVY = ("prometheus_client", "matplotlib", "numpy", "rich", "tomlkit")


def test_importing_the_agent_leaves_heavy_packages_out():
    code = ("import sys, whalescale.cli, whalescale.agent.agent; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


_READ_MESH = """
import sys
from tests.config.meshfile import VALID
from whalescale.config import ConfigError, parse_mesh
parse_mesh(VALID, "mesh.toml")
print("tomlkit" in sys.modules)
try:
    parse_mesh(VALID + "[mesh\\n", "mesh.toml")
except ConfigError as exc:
    print(exc)
"""


def test_reading_a_mesh_file_leaves_tomlkit_out_and_a_broken_one_still_says_where():
    result = subprocess.run([sys.executable, "-c", _READ_MESH], capture_output=True,
                            text=True, check=True, cwd=Path(__file__).resolve().parents[2])
    loaded, error = result.stdout.split("\n", 1)
    assert loaded == "False"
    assert error.startswith("mesh.toml:") and "TOML syntax" in error, error
