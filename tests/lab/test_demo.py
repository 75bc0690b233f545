"""`whalescale lab demo` end to end, and Ctrl-C in the middle of it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.lab

DEMO = [sys.executable, "-m", "whalescale", "lab", "demo", "--seconds", "2"]


def namespaces_with(prefix: str) -> list[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in listing.splitlines() if line.startswith(prefix)]


def lab_prefix(output: str) -> str:
    match = re.search(r"lab (ws[0-9a-f]{6}-)", output)
    assert match, output
    return match.group(1)


@pytest.mark.usefixtures("lab_skip_reason")
def test_demo_reaches_every_pair_and_cleans_up():
    result = subprocess.run(DEMO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "COLUMNS": "120"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6/6 directed pairs reach each other" in result.stdout
    assert re.search(r"iperf3 TCP .* [\d.]+ Gbit/s", result.stdout)
    assert "teardown: 4 processes stopped, 4 namespaces" in result.stdout
    assert namespaces_with(lab_prefix(result.stdout)) == []


@pytest.mark.usefixtures("lab_skip_reason")
def test_ctrl_c_tears_everything_down():
    # A terminal's Ctrl-C signals the whole foreground process group: do the same.
    proc = subprocess.Popen(DEMO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "COLUMNS": "120"})
    output = ""
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while "agents up" not in output and time.monotonic() < deadline:
        output += proc.stdout.readline()
    os.killpg(proc.pid, signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    output += rest
    assert proc.returncode != 0
    assert "teardown: " in output and "teardown incomplete" not in output, output
    assert namespaces_with(lab_prefix(output)) == []
