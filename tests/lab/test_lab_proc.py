"""Background processes in lab hosts: output captured, stopped as a whole group."""

import re
from pathlib import Path

import pytest

from whalescale.lab import Lab, lab_available

from .gone import process_gone

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(lab_available() is not None, reason=str(lab_available())),
]


def test_spawned_process_runs_inside_its_host_and_logs(lab: Lab) -> None:
    alice = lab.star(["alice"])["alice"]
    proc = alice.spawn("sh", "-c", "ip -4 -o addr show; echo ready; exec sleep 60")
    assert proc.wait_for_log("ready", timeout=5)
    assert alice.addr() in proc.log()
    assert proc.alive()

    assert proc.stop() == -15  # SIGTERM
    assert not proc.alive()
    assert proc.stop() == -15  # a second stop only reports


def test_stop_escalates_to_sigkill_and_reaches_children(lab: Lab) -> None:
    bob = lab.host("bob")
    # The shell and its child ignore SIGTERM, so only SIGKILL to the group ends them.
    proc = bob.spawn("sh", "-c", 'trap "" TERM; sleep 60 & echo "child $!"; wait')
    assert proc.wait_for_log(r"child \d+", timeout=5)
    match = re.search(r"child (\d+)", proc.log())
    assert match is not None
    child_pid = int(match.group(1))

    assert proc.stop(timeout=0.5) == -9  # SIGKILL
    assert process_gone(child_pid)


def test_spawn_takes_environment_and_log_path(lab: Lab, tmp_path: Path) -> None:
    carol = lab.host("carol")
    log_path = tmp_path / "carol.log"
    proc = carol.spawn(
        "sh", "-c", 'echo "greeting=$GREETING"', log_path=log_path, env={"GREETING": "hello"}
    )
    assert proc.wait_for_log("greeting=hello", timeout=5)
    assert proc.log_path == log_path
    assert proc.stop() == 0
    assert not proc.wait_for_log("never printed", timeout=0.1)
