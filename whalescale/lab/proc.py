"""Commands and background processes of the lab.

`run` executes a command to completion and turns failure into `LabError` carrying stderr.
`Proc` wraps one background process started in its own session (`setsid`), so that the
whole process group (the program and anything it forks) can be stopped by its id. A `Proc`
is reaped only by `stop`: until then its pid stays a zombie at worst, so signalling the
group can never hit an unrelated process that reused the number.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from whalescale.lab.errors import LabError

# How often `wait_for_log` and `stop` look again; short enough to keep tests quick.
POLL_INTERVAL_S = 0.05


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 30,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` to completion with text output; raise `LabError` on failure when `check`."""
    try:
        result = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, input=input
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)}: no exit within {timeout} s") from exc
    except OSError as exc:
        raise LabError(f"{' '.join(argv)}: {exc}") from exc
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


class Proc:
    """A background process group started by the lab, with its output in `log_path`."""

    def __init__(
        self, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        full_env = {**os.environ, **env} if env is not None else None
        with open(log_path, "ab") as log:
            # start_new_session: the child leads its own process group (setsid), so a
            # Ctrl-C at the terminal does not reach it and `stop` can signal the group.
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                start_new_session=True,
            )
        self.pid = self._popen.pid

    def __repr__(self) -> str:
        return f"Proc(pid={self.pid}, argv={self.argv!r})"

    def _exited(self) -> bool:
        """Whether the leader has exited, without reaping it (WNOWAIT keeps the pid ours)."""
        if self._popen.returncode is not None:
            return True
        return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

    def alive(self) -> bool:
        return not self._exited()

    def _signal_group(self, signum: signal.Signals) -> None:
        # ProcessLookupError: the whole group is gone already.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)

    def _wait_exited(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._exited():
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL_S)
        return True

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the group, SIGKILL it after `timeout`; return the leader's exit code.

        Idempotent: a second call returns the same code without signalling anything.
        """
        if self._popen.returncode is not None:
            return self._popen.returncode
        self._signal_group(signal.SIGTERM)
        if not self._wait_exited(timeout):
            self._signal_group(signal.SIGKILL)
            self._wait_exited(timeout)
        # Children may outlive a leader that obeyed SIGTERM; the unreaped leader still
        # holds the group id, so this reaches only processes of this group.
        self._signal_group(signal.SIGKILL)
        try:
            return self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None  # unkillable (e.g. stuck in the kernel); nothing more we can do

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float) -> bool:
        """Poll the log until the regex `pattern` matches; False after `timeout` seconds."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            if regex.search(self.log()):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL_S)


# ----- what /proc says of a process (the benches' CPU and memory figures) ---------------

def cpu_seconds(stat: str, ticks_per_s: int) -> float:
    """utime + stime, in seconds, of one /proc/PID/stat line.

    The command name (field 2) is in parentheses and may hold spaces or parentheses of
    its own, so fields are counted from the last ')'.
    """
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / ticks_per_s


def vm_rss_bytes(status: str) -> int:
    """VmRSS of a /proc/PID/status text, in bytes."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"VmRSS in unexpected unit {unit!r}")
            return int(value) * 1024
    raise ValueError("no VmRSS line (a kernel thread, or the process has exited)")


def proc_file(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text()


def rss_mib(pid: int) -> float:
    return vm_rss_bytes(proc_file(pid, "status")) / 2**20
