"""What the NAT matrix reads from an agent's log (lab/natmatrix.py): when a pair went direct."""

from __future__ import annotations

import datetime

from whalescale.lab.natmatrix import agent_up, went_direct

AGENT = "INFO whalescale.agent:"
LOG = f"""\
2026-12-03 13:00:00,900 {AGENT} node a (SHA256:x) up on ws0, mtu 1420, udp port 51820
2026-12-03 13:00:01,100 {AGENT} handshake with b at [100::3]:0: initiating (x)
2026-12-03 13:00:01,250 {AGENT} session with b established via [100::3]:0 (as initiator)
2026-12-03 13:00:01,300 {AGENT} session with c established via 203.0.113.9:51820 (as responder)
2026-12-03 13:00:02,500 {AGENT} peer b now at 203.0.113.2:51820 (was [100::3]:0)
"""


def stamp(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_a_relayed_session_goes_direct_when_it_moves_to_a_real_endpoint():
    assert went_direct(LOG, "b") == stamp("2026-12-03 13:00:02,500")
    assert went_direct(LOG, "c") == stamp("2026-12-03 13:00:01,300")
    assert went_direct(LOG, "d") is None
    assert went_direct(LOG.splitlines()[1] + "\n", "b") is None  # the relay alone


def test_when_the_agent_was_up():
    assert agent_up(LOG) == stamp("2026-12-03 13:00:00,900")
    assert agent_up(LOG.split("\n", 1)[1]) is None
