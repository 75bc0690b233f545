"""Hosts, links and teardown of the namespace lab, narrated by role."""

import os
import signal
import time

import pytest

from whalescale.lab import Lab, LabError, lab_available

from .gone import assert_torn_down, lab_namespaces

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(lab_available() is not None, reason=str(lab_available())),
]


def test_star_hosts_reach_each_other_through_the_internet(lab: Lab) -> None:
    hosts = lab.star(["alice", "bob", "carol"], v6=True)
    for name, host in hosts.items():
        for other_name, other in hosts.items():
            if other is host:
                continue
            assert host.ping(other.addr()), f"{name} cannot reach {other_name} over IPv4"
            assert host.ping(other.addr6()), f"{name} cannot reach {other_name} over IPv6"


def test_hosts_start_without_forwarding_and_the_internet_forwards(lab: Lab) -> None:
    alice = lab.host("alice")
    inet = lab.internet()
    assert alice.run("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"
    assert inet.run("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
    assert lab.internet() is inet


def test_link_on_a_given_subnet_addresses_both_ends(lab: Lab) -> None:
    alice, gateway = lab.host("alice"), lab.host("gateway")
    lan = lab.link(gateway, alice, subnet="10.77.0.0/30")
    assert (lan.a_addr, lan.b_addr) == ("10.77.0.1", "10.77.0.2")
    assert lan.a_addr6 is None
    assert alice.ping(lan.peer_addr(alice))
    # The next automatic subnet must not reuse the one given above.
    assert not lab.link(gateway, alice).a_addr.startswith("10.77.")


def test_duplicate_or_bad_host_names_are_refused(lab: Lab) -> None:
    lab.host("alice")
    with pytest.raises(LabError, match="exists already"):
        lab.host("alice")
    with pytest.raises(LabError, match="must match"):
        lab.host("Alice Smith")


def test_a_rejected_ruleset_raises(lab: Lab) -> None:
    gateway = lab.host("gateway")
    # The one-line form of a nested ruleset is a syntax error in nft.
    with pytest.raises(LabError, match="nft ruleset rejected in gateway"):
        gateway.nft("table inet lab { chain input { type filter hook input priority 0; } }")
    gateway.nft(
        """
        table inet lab {
            chain input {
                type filter hook input priority 0; policy accept;
                iifname "wan" ct state new drop
            }
        }
        """
    )
    assert "ct state new drop" in gateway.run("nft", "list", "ruleset").stdout


def test_teardown_removes_namespaces_processes_and_files() -> None:
    lab = Lab()
    hosts = lab.star(["alice", "bob"])
    etc = hosts["alice"].etc_dir()
    (etc / "marker").write_text("alice's own /etc entry\n")
    sleeper = hosts["bob"].spawn("sleep", "60")
    assert len(lab_namespaces(lab.prefix)) == 3

    lab.close()
    assert_torn_down(lab, [sleeper.pid])
    assert not etc.exists()
    lab.close()  # idempotent


def test_an_exception_inside_the_block_still_tears_down() -> None:
    with pytest.raises(RuntimeError, match="scenario failed"), Lab() as lab:
        sleeper = lab.host("alice").spawn("sleep", "60")
        raise RuntimeError("scenario failed")
    assert_torn_down(lab, [sleeper.pid])


def test_ctrl_c_inside_the_block_still_tears_down() -> None:
    with pytest.raises(KeyboardInterrupt), Lab() as lab:
        sleeper = lab.host("alice").spawn("sleep", "60")
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the signal interrupts this at once
    assert_torn_down(lab, [sleeper.pid])


def test_two_labs_at_once_do_not_collide() -> None:
    with Lab() as first, Lab() as second:
        assert first.prefix != second.prefix
        first_hosts = first.star(["alice", "bob"])
        second_hosts = second.star(["alice", "bob"])
        # Both labs chose the same addresses; each lives in its own namespaces.
        assert first_hosts["bob"].addr() == second_hosts["bob"].addr()
        second.close()
        assert lab_namespaces(second.prefix) == []
        assert len(lab_namespaces(first.prefix)) == 3
        assert first_hosts["alice"].ping(first_hosts["bob"].addr())
    assert lab_namespaces(first.prefix) == []
