"""How long a flow through a tunnel goes unanswered: a UDP echo on one end and a prober
on the other, which sends one datagram every `EVERY_S` and prints, as JSON, how many were
answered and the longest time without an answer (issue 13's roaming figure). A one-way
flow, which nothing answers, is measured where it arrives: a sink counts the longest time
without a datagram from a stream.

Run inside lab namespaces: `python -m whalescale.lab.gaps echo ADDR PORT` prints "ready"
and echoes; `python -m whalescale.lab.gaps probe ADDR PORT SECONDS` prints "started",
then the JSON line. `sink ADDR PORT SECONDS` prints "ready", then the JSON line SECONDS
later; `stream ADDR PORT SECONDS` prints "started" and sends.
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


def _receive_until(sock: socket.socket, deadline: float, start: float,
                   into: list[float]) -> None:
    """Append each datagram's arrival (seconds since `start`) until `deadline`."""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            sock.recvfrom(64)
        except TimeoutError:
            return
        into.append(time.monotonic() - start)


def probe(addr: str, port: int, seconds: float) -> dict[str, float]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        start = time.monotonic()
        print("started", flush=True)
        sent = 0
        answers: list[float] = []
        while time.monotonic() - start < seconds:
            sock.sendto(str(sent).encode(), (addr, port))
            sent += 1
            deadline = time.monotonic() + EVERY_S
            _receive_until(sock, deadline, start, answers)
            time.sleep(max(0.0, deadline - time.monotonic()))
        end = time.monotonic() - start
    return {"sent": sent, "answered": len(answers), "longest_gap_s": _longest_gap(answers, end)}


def _longest_gap(times: list[float], end: float) -> float:
    return max(b - a for a, b in zip([0.0, *times], [*times, end], strict=True))


def sink(addr: str, port: int, seconds: float) -> dict[str, float]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((addr, port))
        start = time.monotonic()
        print("ready", flush=True)
        arrivals: list[float] = []
        _receive_until(sock, start + seconds, start, arrivals)
    if not arrivals:
        return {"received": 0, "longest_gap_s": seconds}
    # from the first datagram: the stream starts after the sink
    first = arrivals[0]
    return {"received": len(arrivals),
            "longest_gap_s": _longest_gap([t - first for t in arrivals[1:]], seconds - first)}


def stream(addr: str, port: int, seconds: float) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        start = time.monotonic()
        print("started", flush=True)
        sent = 0
        while time.monotonic() - start < seconds:
            sock.sendto(str(sent).encode(), (addr, port))
            sent += 1
            time.sleep(max(0.0, start + sent * EVERY_S - time.monotonic()))


def _start(host: Host, what: str, ready: str, addr: str, port: int, *seconds: float) -> Proc:
    proc = host.spawn(sys.executable, "-m", __name__, what, addr, str(port),
                      *(str(s) for s in seconds))
    if not proc.wait_for_log(ready, 10):
        raise LabError(f"the {what} in {host.name} did not start: {proc.log()}")
    return proc


def start_echo(host: Host, addr: str, port: int) -> Proc:
    return _start(host, "echo", "ready", addr, port)


def start_probe(host: Host, addr: str, port: int, seconds: float) -> Proc:
    return _start(host, "probe", "started", addr, port, seconds)


def start_sink(host: Host, addr: str, port: int, seconds: float) -> Proc:
    return _start(host, "sink", "ready", addr, port, seconds)


def start_stream(host: Host, addr: str, port: int, seconds: float) -> Proc:
    return _start(host, "stream", "started", addr, port, seconds)


def result(proc: Proc, timeout: float = 30.0) -> dict[str, float]:
    """What a prober (`start_probe`) or a sink (`start_sink`) reports once it is done."""
    if not proc.wait_for_log(RESULT.pattern, timeout):
        raise LabError(f"the prober gave no result: {proc.log()}")
    return json.loads(RESULT.findall(proc.log())[-1])


if __name__ == "__main__":
    what, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if what == "echo":
        echo(addr, port)
    elif what == "stream":
        stream(addr, port, float(sys.argv[4]))
    else:
        measure = probe if what == "probe" else sink
        print(json.dumps(measure(addr, port, float(sys.argv[4]))), flush=True)
