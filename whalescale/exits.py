"""How a `whalescale` command ends: its exit statuses, and OS errors as one line.

Every subcommand runs under `guarded`: an OS error no command handled itself
becomes one line on stderr and its own exit status, never a traceback (issue 15).
The statuses (README, "Command line"):

    0   ok
    1   bad input: the mesh file, a key, a refused reload, an unanswered ping
    2   usage (argparse), or no agent answers on the control socket (reload,
        status, netcheck, ping; 2 since the first release, scripts rely on it)
    3   permission denied (e.g. `status` by a user who cannot open the socket)
    4   any other OS error (disk full, a timeout talking to the agent...)
    141 stdout was closed early (`whalescale check mesh.toml | head -1`)

A closed stdout is the reader's choice, not our failure: nothing is printed
(like `cat` or `git` killed by SIGPIPE) and the status is 141, what a shell
reports for a process killed by SIGPIPE, so a pipeline under `set -o pipefail`
treats us like any Unix tool and a script can still tell it from 1 (bad input).
Python ignores SIGPIPE and raises BrokenPipeError instead; the handling is the
one the Python documentation gives (signal module, "Note on SIGPIPE").
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

EXIT_OK = 0
EXIT_INVALID = 1  # bad input: the mesh file, a key
EXIT_NO_AGENT = 2  # nothing answers on the control socket (argparse's usage status too)
EXIT_PERMISSION = 3
EXIT_OS_ERROR = 4
EXIT_BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE, as a shell reports a tool SIGPIPE killed


def guarded(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """`main`, with the OS errors it lets out turned into one line and a status."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            status = main(argv)
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        except BrokenPipeError:
            return _stdout_closed()
        except PermissionError as exc:
            return fail(f"{_where(exc)}permission denied", EXIT_PERMISSION)
        except OSError as exc:
            return fail(f"{_where(exc)}{exc.strerror or exc}", EXIT_OS_ERROR)
        return status

    return run


def _stdout_closed() -> int:
    # Python's "Note on SIGPIPE": point stdout at /dev/null, so the flush at the
    # interpreter's exit has nowhere to fail and prints no second error.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


def _where(exc: OSError) -> str:
    return f"{exc.filename}: " if exc.filename else ""


def fail(message: str, status: int = EXIT_INVALID) -> int:
    """Say what went wrong on one line of stderr; the exit status to return."""
    print(f"whalescale: {message}", file=sys.stderr)
    return status
