"""The rtnetlink client against the real kernel: what it sets, `ip` (iproute2) reads back,
and what `ip` sets, it reads."""

import json
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whalescale.lab import Lab
from whalescale.netlink import _attr, _attrs

# Run inside a lab host: `ip` for the other side, a veth pair wsnl0-wsnl1, `out` to print.
PRELUDE = """
import ipaddress, json, select, socket, subprocess
from whalescale.agent import addresses, nat
from whalescale.netlink import *

def ip(*args):
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout

ip("link", "add", "wsnl0", "type", "veth", "peer", "name", "wsnl1")
ip("link", "set", "wsnl1", "up")
index = socket.if_nametoindex("wsnl0")
out = {}
"""

SCRIPT = """
with Netlink(groups=RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR) as events, Netlink() as nl:
    nl.set_link(index, up=True, mtu=1380)
    nl.set_link(index, mtu=1390)  # the MTU alone: the link stays up
    nl.add_address(index, ipaddress.ip_interface("10.61.0.1/24"))
    nl.add_address(index, ipaddress.ip_interface("fd61::1/64"))
    out["event"] = bool(select.select([events], [], [], 2)[0]) and events.drain() > 0
    try:
        nl.add_address(index, ipaddress.ip_interface("10.61.0.1/24"))
    except NetlinkError as exc:
        out["duplicate"] = [exc.errno, exc.strerror]
    out["addresses"] = sorted(str(i) for at, i in nl.addresses(index) if not i.ip.is_link_local)
    out["local"] = [str(i) for i in addresses.local_interfaces(exclude="none")]
    name, flags = nl.links()[index]
    out["link_flags"] = [name, bool(flags & IFF_UP), bool(flags & IFF_RUNNING)]
    ip("link", "set", "wsnl1", "down")  # the far end: no carrier, still up here
    out["without_carrier"] = [str(i) for i in addresses.local_interfaces(exclude="none")]
    out["named_without_carrier"] = len(addresses.addresses_of(("wsnl0",)))
    ip("link", "set", "wsnl1", "up")
    out["named"] = [[n, str(i)] for n, i in addresses.addresses_of(("wsnl0",))]
    nl.replace_route(ipaddress.ip_network("10.62.0.0/16"), index, mtu=1300)
    nl.replace_route(ipaddress.ip_network("10.62.0.0/16"), index, mtu=1310)  # replaced
    nl.replace_route(ipaddress.ip_network("fd62::/64"), index, mtu=1290)
    ip("route", "add", "default", "via", "10.61.0.254")
    ip("route", "add", "10.63.0.0/16", "dev", "wsnl0")  # not ours: proto boot
    out["routes"] = sorted(
        [str(r.network), r.mtu, r.proto == RTPROT_STATIC]
        for family in (socket.AF_INET, socket.AF_INET6) for r in nl.routes(family)
        if r.oif == index and r.table == RT_TABLE_MAIN and r.network.prefixlen > 0
        and not r.network.is_link_local)
    out["gateway"] = nat.default_gateway()
    out["ip_routes"] = ip("-o", "route", "show", "dev", "wsnl0") + ip(
        "-o", "-6", "route", "show", "dev", "wsnl0")
    nl.delete_route(ipaddress.ip_network("10.62.0.0/16"), index)
    out["routes_after"] = ip("-o", "route", "show", "dev", "wsnl0")
    nl.delete_address(index, ipaddress.ip_interface("10.61.0.1/24"))
    try:
        nl.delete_route(ipaddress.ip_network("10.62.0.0/16"), index)
    except NetlinkError as exc:
        out["gone"] = exc.errno
out["addresses_after"] = ip("-o", "addr", "show", "dev", "wsnl0")
out["link"] = ip("-o", "link", "show", "dev", "wsnl0")
"""


def run_script(lab: Lab, script: str) -> dict:
    """`out` of PRELUDE + `script`, run in a fresh lab host."""
    host = lab.host("nl")
    return json.loads(host.run(sys.executable, "-c", PRELUDE + script + "\nprint(json.dumps(out))",
                               timeout=30).stdout)


@pytest.mark.lab
def test_what_it_sets_iproute2_reads_and_back(lab: Lab) -> None:
    out = run_script(lab, SCRIPT)
    assert out["event"] is True
    assert out["duplicate"][0] == 17 and "adding address 10.61.0.1/24" in out["duplicate"][1]
    assert out["addresses"] == ["10.61.0.1/24", "fd61::1/64"]
    assert out["local"] == ["10.61.0.1/24", "fd61::1/64"]
    assert out["link_flags"] == ["wsnl0", True, True]
    assert out["without_carrier"] == [] and out["named_without_carrier"] == 2
    assert out["named"] == [["wsnl0", "fd61::1/64"], ["wsnl0", "10.61.0.1/24"]]
    assert out["routes"] == [["10.61.0.0/24", None, False], ["10.62.0.0/16", 1310, True],
                             ["10.63.0.0/16", None, False], ["fd61::/64", None, False],
                             ["fd62::/64", 1290, True]]
    assert out["gateway"] == "10.61.0.254"
    assert "10.62.0.0/16 proto static scope link mtu 1310" in out["ip_routes"]
    assert "fd62::/64 proto static metric 1024 mtu 1290" in out["ip_routes"]
    assert "10.62.0.0/16" not in out["routes_after"] and "10.63.0.0/16" in out["routes_after"]
    assert "10.61.0.1/24" not in out["addresses_after"] and "fd61::1/64" in out["addresses_after"]
    assert out["gone"] == 3  # ESRCH: no such route
    assert "mtu 1390" in out["link"] and ",UP," in out["link"]


@given(st.binary(max_size=200))
def test_attribute_parser_takes_any_bytes(data: bytes) -> None:
    for kind, value in _attrs(data):
        assert 0 <= kind < 0x4000 and len(value) <= len(data)


@given(st.lists(st.tuples(st.integers(0, 0x3FFF), st.binary(max_size=40)), max_size=8))
def test_attributes_read_back_as_written(attrs: list[tuple[int, bytes]]) -> None:
    assert list(_attrs(b"".join(_attr(k, v) for k, v in attrs))) == attrs
