"""`whalescale bench start`: what an agent costs to start and to keep idle.

Each run builds a fresh three-node mesh (one anchor, two peers found by gossip) in
lab namespaces and starts the three agents together. For each agent it records the
CPU time (utime + stime) spent until it logs its "up" line, and its resident memory
(VmRSS) once the mesh has been idle for a while. The table gives min/median/max over
every agent of every run. CPU time is the process's own, so the machine's other load
changes it little; wall-clock time would not be.

`--imports` says where an agent's memory and start-up CPU go: each of the agent's
dependencies imported in a fresh interpreter, cumulatively in the agent's order, then
the agent's own modules (no lab, no root).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

from ..lab.lab import Lab, lab_available
from ..lab.mesh import LabMesh, MeshNode
from ..lab.proc import cpu_seconds, proc_file, vm_rss_bytes

_UP = re.compile(r" up on ws0")
_POLL_S = 0.01  # short: CPU spent after the "up" line and before we look is counted too
_UP_TIMEOUT_S = 30.0


def agent_pid(node: MeshNode) -> int:
    """The agent's pid: the lab's own, as `ip netns exec` execs the agent in place."""
    assert node.proc is not None
    comm = proc_file(node.proc.pid, "comm").strip()
    if not comm.startswith("python"):
        raise RuntimeError(f"pid {node.proc.pid} of agent {node.name} is {comm!r}, not python")
    return node.proc.pid


def _one_run(idle_s: float, python_path: str | None) -> tuple[list[float], list[int]]:
    """CPU seconds to "up" and idle RSS bytes of each agent of one fresh mesh."""
    ticks = os.sysconf("SC_CLK_TCK")
    with Lab() as lab:  # unique namespace prefix; teardown stops our agents by pid
        hosts = lab.star(["anchor1", "peer1", "peer2"])
        mesh = LabMesh(lab)
        for i, host in enumerate(hosts.values()):
            # Only the anchor has a static endpoint: the peers find each other by gossip.
            node = mesh.add_node(host, anchor=(i == 0), static_endpoint=(i == 0))
            node.python_path = python_path
        mesh.write_mesh()
        for name in mesh.nodes:
            mesh.start(name)
        cpu: dict[str, float] = {}
        deadline = time.monotonic() + _UP_TIMEOUT_S
        while len(cpu) < len(mesh.nodes):
            for name, node in mesh.nodes.items():
                assert node.proc is not None
                if name not in cpu and _UP.search(node.proc.log()):
                    cpu[name] = cpu_seconds(proc_file(agent_pid(node), "stat"), ticks)
                elif name not in cpu and not node.proc.alive():
                    raise RuntimeError(f"agent {name} exited:\n{node.proc.log()}")
            if time.monotonic() > deadline:
                missing = sorted(mesh.nodes.keys() - cpu.keys())
                raise TimeoutError(f"agents {missing} did not come up in {_UP_TIMEOUT_S} s")
            time.sleep(_POLL_S)
        time.sleep(idle_s)
        rss = [vm_rss_bytes(proc_file(agent_pid(node), "status"))
               for node in mesh.nodes.values()]
    return list(cpu.values()), rss


# What a fresh interpreter imports, step by step and cumulatively, on the way to the
# agent: the tunnel's chosen dependencies (mission.md), then our own modules.
IMPORT_STEPS = (
    ("the interpreter", ()),
    ("whalescale's package (defers ssl, idna, OpenSSL: deferred_imports.py)", ("whalescale",)),
    ("trio (with outcome, attrs, sortedcontainers)", ("trio",)),
    ("cryptography (AEAD, X25519)", ("cryptography.hazmat.primitives.ciphers.aead",
                                     "cryptography.hazmat.primitives.asymmetric.x25519")),
    ("noiseprotocol", ("noise.connection",)),
    ("PyNaCl", ("nacl.bindings", "nacl.signing")),
    ("sqlite3", ("sqlite3",)),
    ("whalescale's agent modules", ("whalescale.agent.agent",)),
)
_MEASURE = ("import importlib, os, re, sys\n"
            "for name in sys.argv[1:]: importlib.import_module(name)\n"
            "t = os.times()\n"
            "rss = re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
            "print(int(rss) * 1024, t.user + t.system)")


def import_costs(repeats: int = 3) -> list[dict[str, float | str]]:
    """Per step of IMPORT_STEPS: the RSS (bytes) and CPU seconds of a fresh interpreter
    that has imported it and every step before (medians of `repeats`)."""
    rows: list[dict[str, float | str]] = []
    modules: list[str] = []
    for label, step in IMPORT_STEPS:
        modules += step
        samples = [subprocess.run([sys.executable, "-c", _MEASURE, *modules], check=True,
                                  capture_output=True, text=True).stdout.split()
                   for _ in range(repeats)]
        rows.append({"step": label,
                     "rss_bytes": statistics.median(int(rss) for rss, _ in samples),
                     "cpu_s": statistics.median(float(cpu) for _, cpu in samples)})
    return rows


def run_import_costs(as_json: bool = False) -> int:
    rows = import_costs()
    if as_json:
        print(json.dumps(rows))
        return 0
    table = Table(title="what an agent imports: fresh interpreters, cumulative, medians of 3")
    for column in ("step", "RSS (MiB)", "added (MiB)", "CPU (s)"):
        table.add_column(column, justify="left" if column == "step" else "right")
    before = 0.0
    for row in rows:
        rss = float(row["rss_bytes"]) / 2**20
        table.add_row(str(row["step"]), f"{rss:.1f}", f"{rss - before:+.1f}",
                      f"{float(row['cpu_s']):.2f}")
        before = rss
    Console().print(table)
    return 0


def _summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def run_start_bench(runs: int = 5, idle_s: float = 5.0, as_json: bool = False,
                    python_path: str | None = None) -> int:
    """`python_path`: the agents' PYTHONPATH, to measure another tree's agent (run the
    bench from a directory without a `whalescale` package: `-m` puts the current
    directory first on the agents' path)."""
    console = Console()
    reason = lab_available()
    if reason:
        console.print(f"[red]whalescale bench start: cannot run: {reason}")
        return 2
    cpu: list[float] = []
    rss: list[int] = []
    for _ in range(runs):
        run_cpu, run_rss = _one_run(idle_s, python_path)
        cpu += run_cpu
        rss += run_rss
    cpu_s, rss_mb = _summary(cpu), _summary([r / 2**20 for r in rss])
    if as_json:
        print(json.dumps({"runs": runs, "agents": len(cpu), "idle_s": idle_s,
                          "cpu_to_up_s": cpu_s, "idle_rss_mib": rss_mb,
                          "samples": {"cpu_to_up_s": cpu, "idle_rss_bytes": rss}}))
        return 0
    table = Table(title=f"agent start, three-node mesh, {runs} runs x 3 agents "
                  f"(RSS after {idle_s:g} s idle)")
    table.add_column("measure")
    for column in ("min", "median", "max"):
        table.add_column(column, justify="right")
    table.add_row("CPU to 'up' (s)", *(f"{cpu_s[k]:.3f}" for k in ("min", "median", "max")))
    table.add_row("idle RSS (MiB)", *(f"{rss_mb[k]:.1f}" for k in ("min", "median", "max")))
    console.print(table)
    return 0
