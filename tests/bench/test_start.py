"""`whalescale bench start`: its readers of /proc (pure parsing) and its import costs
(fresh interpreters, no lab)."""

import itertools

import pytest

from whalescale.lab.proc import cpu_seconds, vm_rss_bytes

# A real line's shape; the command name holds a space and a parenthesis of its own.
STAT = ("4242 (python3 (x) y) S 1 4242 4242 0 -1 4194560 5143 0 0 0 "
        "37 12 0 0 20 0 3 0 123456 250000000 9000 18446744073709551615")


def test_cpu_seconds_adds_utime_and_stime():
    assert cpu_seconds(STAT, 100) == pytest.approx(0.49)


def test_cpu_seconds_of_this_process():
    with open("/proc/self/stat") as f:
        assert cpu_seconds(f.read(), 100) >= 0


def test_vm_rss_bytes():
    status = "Name:\tpython3\nVmPeak:\t  50000 kB\nVmRSS:\t   31744 kB\nThreads:\t3\n"
    assert vm_rss_bytes(status) == 31744 * 1024


def test_vm_rss_bytes_without_the_line():
    with pytest.raises(ValueError, match="no VmRSS"):
        vm_rss_bytes("Name:\tkthreadd\n")


def test_import_costs_climb_step_by_step_to_the_agent():
    from whalescale.bench.start import IMPORT_STEPS, import_costs

    rows = import_costs(repeats=1)
    assert [row["step"] for row in rows] == [label for label, _ in IMPORT_STEPS]
    rss = [row["rss_bytes"] for row in rows]
    assert rss[0] > 4 * 2**20  # an interpreter, not an empty process
    # each step imports what the one before did and more: never less resident
    assert all(later >= earlier - 2**18 for earlier, later in itertools.pairwise(rss))
    assert rss[2] > rss[1] + 2**20 and rss[-1] > rss[-2] + 2**20  # trio; our own modules
