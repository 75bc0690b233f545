"""The agent starts without what it does not need to bring the tunnel up (issue "Cheap
start"): prometheus-client only with metrics on, numpy only once TUN offload hands over a
super-packet, rich and matplotlib only in the commands that draw."""

import subprocess
import sys

HEAVY = ("prometheus_client", "matplotlib", "numpy", "rich")


def test_importing_the_agent_leaves_heavy_packages_out():
    code = ("import sys, whalescale.cli, whalescale.agent.agent; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"
