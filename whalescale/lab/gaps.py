"""How long a flow through a tunnel goes unanswered: a UDP echo on one end and a prober
on the other, which sends one datagram every `EVERY_S` and prints, as JSON, how many were
answered and the longest time without an answer (issue 13's roaming figure).

Run inside lab namespaces: `python -m whalescale.lab.gaps echo ADDR PORT` prints "ready"
and echoes; `python -m whalescale.lab.gaps probe ADDR PORT SECONDS` prints "started",
then the JSON line.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
from typing import TYPE_CHECKING

from .errors import LabError

if TYPE_CHECKING:
    from .netns import Host
    from .proc import Proc

EVERY_S = 0.1
RESULT = re.compile(r"\{.*\}")


def echo(addr: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((addr, port))
        print("ready", flush=True)
        while True:
            data, source = sock.recvfrom(2048)
            sock.sendto(data, source)


def probe(addr: str, port: int, seconds: float) -> dict[str, float]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        start = time.monotonic()
        print("started", flush=True)
        sent, answers = 0, []
        while time.monotonic() - start < seconds:
            sock.sendto(str(sent).encode(), (addr, port))
            sent += 1
            deadline = time.monotonic() + EVERY_S
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    sock.recvfrom(64)
                    answers.append(time.monotonic() - start)
                except TimeoutError:
                    break
            time.sleep(max(0.0, deadline - time.monotonic()))
        end = time.monotonic() - start
    gaps = [b - a for a, b in zip([0.0, *answers], [*answers, end], strict=True)]
    return {"sent": sent, "answered": len(answers), "longest_gap_s": max(gaps)}


def start_echo(host: Host, addr: str, port: int) -> Proc:
    proc = host.spawn(sys.executable, "-m", __name__, "echo", addr, str(port))
    if not proc.wait_for_log("ready", 10):
        raise LabError(f"the echo in {host.name} did not start: {proc.log()}")
    return proc


def start_probe(host: Host, addr: str, port: int, seconds: float) -> Proc:
    proc = host.spawn(sys.executable, "-m", __name__, "probe", addr, str(port), str(seconds))
    if not proc.wait_for_log("started", 10):
        raise LabError(f"the prober in {host.name} did not start: {proc.log()}")
    return proc


def result(proc: Proc, timeout: float = 30.0) -> dict[str, float]:
    """What a prober started with `start_probe` reports once it is done."""
    if not proc.wait_for_log(RESULT.pattern, timeout):
        raise LabError(f"the prober gave no result: {proc.log()}")
    return json.loads(RESULT.findall(proc.log())[-1])


if __name__ == "__main__":
    if sys.argv[1] == "echo":
        echo(sys.argv[2], int(sys.argv[3]))
    else:
        print(json.dumps(probe(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))), flush=True)
