"""What `whalescale bench flood` sends and how it reports (the floods themselves are a
command, not part of the suite)."""

import ipaddress
import socket
import subprocess
import sys
import time

from whalescale.bench.flood import (
    RunQueueWaits,
    _checksum,
    _data,
    _initiations,
    _spoofed,
    render,
)
from whalescale.identity import Identity
from whalescale.session.cookie import CookieChecker
from whalescale.wire import messages


def test_initiations_carry_a_valid_or_a_wrong_mac1_as_asked():
    target = Identity.from_seed(b"\x05" * 32).x25519_public
    checker = CookieChecker(target, random_bytes=lambda n: bytes(n))
    good, bad = _initiations(target, True), _initiations(target, False)
    assert all(len(m) == messages.INITIATION_SIZE for m in good + bad)
    assert all(checker.mac1_ok(m, messages.INITIATION_MAC1_OFFSET) for m in good)
    assert not any(checker.mac1_ok(m, messages.INITIATION_MAC1_OFFSET) for m in bad)
    assert {m[0] for m in _data()} == {4}


def test_spoofed_packets_are_well_formed_ipv4_from_many_sources():
    packets = _spoofed([b"x" * 148], "10.1.2.3", 51820, "172.31.0.0")
    sources = set()
    for packet in packets:
        assert _checksum(packet[:20]) == 0  # the header checksums to zero
        assert socket.inet_ntoa(packet[16:20]) == "10.1.2.3"
        assert int.from_bytes(packet[22:24], "big") == 51820
        sources.add(ipaddress.ip_address(packet[12:16]))
    assert len(sources) > 1000
    assert all(s in ipaddress.ip_network("172.31.0.0/16") for s in sources)


def test_the_table_says_what_each_flood_cost():
    table = render([{"kind": "init-mac1", "flood_rate": 150000, "lost_pct": 0.5,
                     "pings": {"max_rtt_ms": 14.6, "p99_rtt_ms": 9.2}, "agent_cpu_pct": 80.4,
                     "rss_growth_mib": 0.4, "dh_per_s": 64.0, "newcomer_first_answer_s": None,
                     "worst_ping_waits_ms": {"target": 21.4, "pinger": 0.2}}])
    assert table.splitlines()[-1] == (
        "| init-mac1 | 150,000 | 0.5% | 15 ms | 9 ms | 80% | +0.4 MiB | 64 | - "
        "| target 21 ms / pinger 0 ms |")


def test_two_processes_on_one_core_are_seen_waiting_for_it():
    busy = [sys.executable, "-c", "import os, time\nos.sched_setaffinity(0, {0})\n"
            "end = time.monotonic() + 0.6\nwhile time.monotonic() < end: pass"]
    procs = [subprocess.Popen(busy) for _ in range(2)]
    alone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.8)"])
    waits = RunQueueWaits({"a": procs[0].pid, "b": procs[1].pid, "idle": alone.pid})
    waits.start()
    time.sleep(0.2)
    start = time.monotonic()
    time.sleep(0.3)
    end = time.monotonic()
    time.sleep(0.05)
    waits.stop()
    for proc in [*procs, alone]:
        proc.wait()
    seen = waits.between(start, end)
    # Two busy loops on one core: each waits about half of the 0.3 s.
    assert seen["a"] + seen["b"] > 200 and seen["idle"] < 20
