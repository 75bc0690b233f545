"""Exit nodes, the node's side (node/exit_node.py): the exit peer takes the default
networks in cryptokey routing, never the main table; the choice `--exit-node` makes."""

from __future__ import annotations

import ipaddress

import pytest

from tests.config.meshfile import LAPTOP, edit
from whalescale.config import parse_mesh
from whalescale.node.effects import ConfigureExit
from whalescale.node.exit_node import ExitChoiceError, choose_exit
from whalescale.node.node import Node

EXIT_OFFERED = edit("anchor = true\n", "anchor = true\nexit = true\n")
USING_EXIT = edit("relay = true\n", 'relay = true\nexit_node = "anchor-1"\n', EXIT_OFFERED)


def laptop(text: str) -> Node:
    return Node(parse_mesh(text, "mesh.toml"), LAPTOP, random_bytes=bytes)


def packet_to(address: str) -> bytes:
    """Just enough of an IP header for cryptokey routing to read its destination."""
    dst = ipaddress.ip_address(address)
    if dst.version == 4:
        return b"\x45" + bytes(15) + dst.packed
    return b"\x60" + bytes(23) + dst.packed


@pytest.mark.parametrize(("destination", "peer"), [
    ("10.9.0.1", "anchor-1"),  # anywhere: the exit
    ("2001:db8:5::1", "anchor-1"),
    ("100.96.0.1", "anchor-1"),  # the exit's own tunnel address
    ("100.96.0.20", "old-router"),  # another peer's address stays its own
    ("192.168.50.7", "old-router"),  # and so do its networks: the longest prefix wins
])
def test_the_exit_peer_takes_what_no_other_peer_owns(destination: str, peer: str) -> None:
    route = laptop(USING_EXIT).engine.route(packet_to(destination))
    assert route is not None and route.name == peer


def test_without_an_exit_the_internet_has_no_peer() -> None:
    assert laptop(EXIT_OFFERED).engine.route(packet_to("10.9.0.1")) is None


def test_the_default_networks_stay_out_of_the_main_table() -> None:
    node = laptop(USING_EXIT)
    routes = node.tun_config().routes
    assert "0.0.0.0/0" not in routes and "::/0" not in routes
    assert "192.168.50.0/24" in routes and "100.96.0.1/32" in routes


def test_the_shell_is_told_the_exit_its_mtu_and_what_a_crash_leaves() -> None:
    assert laptop(USING_EXIT).exit_config() == ConfigureExit(
        via="anchor-1", mtu=1420, kill_switch=False, offer=False)
    killing = edit('exit_node = "anchor-1"\n', 'exit_node = "anchor-1"\nkill_switch = true\n',
                   USING_EXIT)
    assert laptop(killing).exit_config().kill_switch is True
    # a kill switch without an exit blocks nothing
    assert laptop(edit("relay = true\n", "relay = true\nkill_switch = true\n")
                  ).exit_config() == ConfigureExit(None, 0, False, False)
    assert laptop(USING_EXIT).status(0.0)["exit"] == {"via": "anchor-1", "kill_switch": False,
                                                     "offer": False}


def test_exit_node_on_the_command_line_sets_the_choice_for_this_run() -> None:
    mesh = parse_mesh(EXIT_OFFERED, "mesh.toml")
    me = mesh.node_by_name("laptop")
    assert me is not None and me.exit_node is None
    chosen = choose_exit(mesh, me, "anchor-1")
    assert chosen.node_by_name("laptop").exit_node == "anchor-1"
    assert Node(chosen, LAPTOP, random_bytes=bytes).exit_config().via == "anchor-1"


def test_an_empty_exit_node_on_the_command_line_turns_the_files_choice_off() -> None:
    mesh = parse_mesh(USING_EXIT, "mesh.toml")
    me = mesh.node_by_name("laptop")
    assert me is not None and me.exit_node == "anchor-1"
    chosen = choose_exit(mesh, me, "")
    assert chosen.node_by_name("laptop").exit_node is None
    assert Node(chosen, LAPTOP, random_bytes=bytes).exit_config() == ConfigureExit(
        None, 0, False, False)


@pytest.mark.parametrize("name", ["nobody", "laptop", "old-router"])
def test_exit_node_must_name_another_node_offering_an_exit(name: str) -> None:
    mesh = parse_mesh(EXIT_OFFERED, "mesh.toml")
    with pytest.raises(ExitChoiceError, match=rf"--exit-node '{name}' is not another node "
                       r"with exit = true in the mesh file \(those offering: anchor-1\)"):
        choose_exit(mesh, mesh.node_by_name("laptop"), name)
