"""Editing a hand-written mesh file: only the edited lines change, bad edits change nothing."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from tests.config.meshfile import ANCHOR, LAPTOP
from whalescale.config import ConfigError, load_mesh
from whalescale.config.edit import (
    EditError,
    NewNode,
    add_node,
    init_mesh,
    init_text,
    remove_node,
    set_value,
)
from whalescale.identity import Identity, b64

HAND_WRITTEN = f"""\
# Our home mesh.   Edited by hand; keep my notes!
[mesh]
name = "home"     # the family mesh
port = 51820
prefixes = ["100.96.0.0/24"]

# --- the VPS ---
[[node]]
name = "anchor-1"
public_key = "{b64(ANCHOR.public)}"
address = "100.96.0.1"   # first!
endpoints = ["192.0.2.10:51820"]
anchor = true

# --- the laptop, roams a lot ---
[[node]]
name = "laptop"
public_key = "{b64(LAPTOP.public)}"
address = "100.96.0.2"
relay = false    # not yet
"""


def changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.ndiff(before.splitlines(), after.splitlines())
            if line.startswith(("+ ", "- "))]


@pytest.fixture
def mesh(tmp_path: Path) -> Path:
    path = tmp_path / "mesh.toml"
    path.write_text(HAND_WRITTEN)
    load_mesh(path)
    return path


def test_add_node_appends_and_keeps_every_byte_before(mesh):
    phone = Identity.generate()
    addresses = add_node(mesh, NewNode("phone", phone.public_b64))
    assert addresses == ["100.96.0.3"]  # the next free address of the prefix
    after = mesh.read_text()
    assert after.startswith(HAND_WRITTEN)
    assert after[len(HAND_WRITTEN):] == (
        f'\n[[node]]\nname = "phone"\npublic_key = "{phone.public_b64}"\n'
        'address = "100.96.0.3"\n')
    assert [n.name for n in load_mesh(mesh).nodes] == ["anchor-1", "laptop", "phone"]


def test_set_changes_only_its_line_and_keeps_the_comment(mesh):
    set_value(mesh, "mesh.port", "51900")
    set_value(mesh, "node.anchor-1.address", '"100.96.0.9"')
    assert changed_lines(HAND_WRITTEN, mesh.read_text()) == [
        "- port = 51820", "+ port = 51900",
        '- address = "100.96.0.1"   # first!', '+ address = "100.96.0.9"   # first!']
    assert load_mesh(mesh).port == 51900


def test_routes_and_access_are_set_like_any_key(mesh):
    set_value(mesh, "node.anchor-1.routes", '["192.168.1.0/24"]')
    set_value(mesh, "node.anchor-1.firewall",
              '[{ action = "deny", from = ["laptop"], proto = "tcp", ports = [22] }]')
    set_value(mesh, "node.anchor-1.exit", "true")
    set_value(mesh, "node.laptop.exit_node", "anchor-1")
    set_value(mesh, "mesh.suffix", "home.arpa")
    # each new key goes after its table's last key, before the comment of the next table
    text = mesh.read_text()
    assert text.replace('anchor = true\nroutes = ["192.168.1.0/24"]\nfirewall = '
                        '[{ action = "deny", from = ["laptop"], proto = "tcp", ports = [22] }]\n'
                        'exit = true\n', "anchor = true\n").replace(
        'relay = false    # not yet\nexit_node = "anchor-1"\n', "relay = false    # not yet\n"
    ).replace('prefixes = ["100.96.0.0/24"]\nsuffix = "home.arpa"\n',
              'prefixes = ["100.96.0.0/24"]\n') == HAND_WRITTEN
    anchor, laptop = load_mesh(mesh).nodes
    assert [str(net) for net in anchor.routes] == ["192.168.1.0/24"]
    assert [str(rule) for rule in anchor.firewall] == ["deny from laptop tcp port 22"]
    assert laptop.exit_node == "anchor-1"
    with pytest.raises(ConfigError, match=r"overlaps 192\.168\.1\.0/24 of anchor-1"):
        set_value(mesh, "node.laptop.routes", '["192.168.0.0/16"]')


def test_remove_node_removes_its_block_only(mesh):
    assert remove_node(mesh, "laptop") == "node"
    after = mesh.read_text()
    assert after == HAND_WRITTEN[: HAND_WRITTEN.index('[[node]]\nname = "laptop"')]


@pytest.mark.parametrize("edit", [
    lambda p: set_value(p, "mesh.port", "99999"),
    lambda p: set_value(p, "mesh.colour", "blue"),
    lambda p: add_node(p, NewNode("laptop", Identity.generate().public_b64)),
    lambda p: add_node(p, NewNode("dup-key", b64(LAPTOP.public))),
])
def test_an_edit_that_breaks_the_mesh_is_refused_and_nothing_changes(mesh, edit):
    with pytest.raises(ConfigError):
        edit(mesh)
    assert mesh.read_text() == HAND_WRITTEN


def test_unknown_names_and_keys_are_refused(mesh):
    with pytest.raises(EditError, match=r"no \[\[node\]\] or \[\[wireguard\]\] named"):
        remove_node(mesh, "ghost")
    with pytest.raises(EditError, match=r"expected mesh\.KEY"):
        set_value(mesh, "port", "1")
    assert mesh.read_text() == HAND_WRITTEN


def test_init_writes_a_commented_file_holding_its_first_node(tmp_path):
    path = tmp_path / "mesh.toml"
    first = NewNode("anchor-1", ANCHOR.public_b64, endpoints=["192.0.2.10:51820"], anchor=True)
    assert init_mesh(path, "home", first) == ["100.96.0.1", "fd77:7773::1"]
    with pytest.raises(FileExistsError):
        init_mesh(path, "home", first)
    (node,) = load_mesh(path).nodes  # the file checks as written
    assert node.anchor and [str(a) for a in node.addresses] == ["100.96.0.1", "fd77:7773::1"]
    assert path.read_text().startswith(init_text("home", str(path)))


def test_init_refuses_a_first_node_the_loader_refuses_and_writes_nothing(tmp_path):
    path = tmp_path / "mesh.toml"
    with pytest.raises(ConfigError):
        init_mesh(path, "home", NewNode("Not A Name", ANCHOR.public_b64))
    assert not path.exists()
