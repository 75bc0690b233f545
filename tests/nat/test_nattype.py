"""NAT type inference: one table row per situation a probing node can be in."""

from __future__ import annotations

import pytest

from whalescale.nat.bootstrap import Observation
from whalescale.nat.nattype import NatReport, NatType, infer

LOCAL = ("192.168.1.10", 51820)
PUBLIC_LOCAL = ("198.51.100.50", 51820)
A1 = ("198.51.100.1", 51820)
A1_OTHER_PORT = ("198.51.100.1", 4000)
A2 = ("203.0.113.7", 51820)
A3 = ("192.0.2.200", 51820)
NAT = "192.0.2.33"


def obs(target, observed, local=LOCAL):
    return Observation(local, target, observed, 0.02)


CASES = [
    # (name, local, observations, expected)
    ("nothing observed", LOCAL, [], NatReport(NatType.UNKNOWN)),
    ("public: one target suffices", PUBLIC_LOCAL, [obs(A1, PUBLIC_LOCAL, PUBLIC_LOCAL)],
     NatReport(NatType.PUBLIC, PUBLIC_LOCAL, None, 1)),
    ("public: every target agrees", PUBLIC_LOCAL,
     [obs(A1, PUBLIC_LOCAL, PUBLIC_LOCAL), obs(A2, PUBLIC_LOCAL, PUBLIC_LOCAL)],
     NatReport(NatType.PUBLIC, PUBLIC_LOCAL, None, 2)),
    ("one target only: cannot tell the mapping", LOCAL, [obs(A1, (NAT, 40001))],
     NatReport(NatType.UNKNOWN, targets=1)),
    ("two ports of one IP are one target IP", LOCAL,
     [obs(A1, (NAT, 40001)), obs(A1_OTHER_PORT, (NAT, 40001))],
     NatReport(NatType.UNKNOWN, targets=2)),
    ("cone, port translated", LOCAL, [obs(A1, (NAT, 40001)), obs(A2, (NAT, 40001))],
     NatReport(NatType.CONE, (NAT, 40001), False, 2)),
    ("cone, port preserved", LOCAL, [obs(A1, (NAT, 51820)), obs(A2, (NAT, 51820))],
     NatReport(NatType.CONE, (NAT, 51820), True, 2)),
    ("symmetric: ports differ", LOCAL, [obs(A1, (NAT, 40001)), obs(A2, (NAT, 40002))],
     NatReport(NatType.SYMMETRIC, None, False, 2)),
    ("symmetric: pool hands out different IPs", LOCAL,
     [obs(A1, (NAT, 51820)), obs(A2, ("192.0.2.34", 51820))],
     NatReport(NatType.SYMMETRIC, None, True, 2)),
    ("symmetric as soon as one of three differs", LOCAL,
     [obs(A1, (NAT, 40001)), obs(A2, (NAT, 40001)), obs(A3, (NAT, 40007))],
     NatReport(NatType.SYMMETRIC, None, False, 3)),
    ("mixed public and translated: inconsistent", PUBLIC_LOCAL,
     [obs(A1, PUBLIC_LOCAL, PUBLIC_LOCAL), obs(A2, (NAT, 40001), PUBLIC_LOCAL)],
     NatReport(NatType.UNKNOWN, targets=2)),
    ("the latest observation of a target wins (NAT rebooted)", LOCAL,
     [obs(A1, (NAT, 40001)), obs(A2, (NAT, 40001)), obs(A1, (NAT, 40900)),
      obs(A2, (NAT, 40900))],
     NatReport(NatType.CONE, (NAT, 40900), False, 2)),
    ("another socket's observations do not count", LOCAL,
     [obs(A1, (NAT, 40001)), obs(A2, (NAT, 40002), ("10.0.0.2", 51820))],
     NatReport(NatType.UNKNOWN, targets=1)),
    ("ipv6 without translation is public", ("2001:db8::5", 51820),
     [obs(A1, ("2001:db8::5", 51820), ("2001:db8::5", 51820))],
     NatReport(NatType.PUBLIC, ("2001:db8::5", 51820), None, 1)),
]


@pytest.mark.parametrize("local, observations, expected", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_infer(local, observations, expected):
    assert infer(observations, local) == expected
