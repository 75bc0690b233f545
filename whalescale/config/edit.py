"""Edits of a mesh file that keep the user's comments and layout (tomlkit).

Every edit parses the file, changes the one table or value asked for, checks
the whole result with the loader and only then replaces the file atomically
(temporary file, fsync, rename). A change that would make the mesh invalid
is refused with the loader's positioned problems and the file stays as it
was.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from pathlib import Path

import attrs
import tomlkit
from tomlkit.exceptions import ParseError
from tomlkit.items import AoT, Table

from .load import parse_document, parse_mesh

TEMPLATE = """\
# whalescale mesh file: the same file on every node of the mesh.
# Check it with `whalescale check FILE`; edit it by hand or with `whalescale mesh ...`.
# Private keys never go here: each node keeps its own (`whalescale keygen`).

[mesh]
name = "{name}"
# UDP port every node listens on unless its entry says otherwise.
port = 51820
# Seconds between keepalives to each peer (keeps NAT mappings open); 0 = off.
keepalive_s = 25
# Tunnel MTU, 1292..9000.
mtu = 1420
# Tunnel prefixes: every tunnel address lies in one; they are routed into the tunnel.
prefixes = ["100.96.0.0/16", "fd77:7773::/64"]

# Add one [[node]] per whalescale node, e.g. with
#   whalescale mesh add-node {file} --name laptop --key /etc/whalescale/private.key
#
# [[node]]
# name = "anchor-1"                     # [a-z0-9-], unique
# public_key = "<base64 Ed25519>"       # `whalescale pubkey KEYFILE`
# address = ["100.96.0.1", "fd77:7773::1"]  # tunnel addresses
# endpoints = ["192.0.2.10:51820"]      # where it can be reached, if anywhere stable
# anchor = true                         # a stable, reachable node others find first
#
# A vanilla WireGuard peer (single path, its own X25519 key):
# [[wireguard]]
# name = "old-router"
# public_key = "<base64 X25519>"        # its `wg pubkey`
# address = "100.96.0.20"
# endpoint = "192.0.2.20:51820"
"""


class EditError(ValueError):
    """An edit that cannot be made; the file is unchanged."""


def init_text(name: str, file: str) -> str:
    return TEMPLATE.format(name=name, file=file)


def write_new(path: Path, text: str) -> None:
    """Create `path`; never overwrite (a mesh file is precious)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _replace(path: Path, text: str) -> None:
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: Path) -> tomlkit.TOMLDocument:
    return parse_document(path.read_text(), str(path))


def _checked_text(path: Path, doc: tomlkit.TOMLDocument) -> str:
    """The document as text, run through the loader (raises ConfigError)."""
    text = tomlkit.dumps(doc)
    if not text.endswith("\n"):  # tomlkit drops it when a key is added at the very end
        text += "\n"
    parse_mesh(text, str(path))
    return text


def _commit(path: Path, doc: tomlkit.TOMLDocument) -> None:
    _replace(path, _checked_text(path, doc))  # a ConfigError leaves the file untouched


def _entries(doc: tomlkit.TOMLDocument, kind: str) -> AoT | list[Table]:
    return doc.get(kind, [])


def _find(doc: tomlkit.TOMLDocument, name: str) -> tuple[str, int, Table]:
    for kind in ("node", "wireguard"):
        for index, table in enumerate(_entries(doc, kind)):
            if table.get("name") == name:
                return kind, index, table
    raise EditError(f"no [[node]] or [[wireguard]] named {name!r}")


def next_free_address(doc: tomlkit.TOMLDocument, version: int
                      ) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The lowest host address of the mesh's prefix of that IP version not yet used."""
    prefixes = [ipaddress.ip_network(p) for p in doc.get("mesh", {}).get("prefixes", [])]
    used = set()
    for kind in ("node", "wireguard"):
        for table in _entries(doc, kind):
            addresses = table.get("address", [])
            for a in [addresses] if isinstance(addresses, str) else addresses:
                used.add(ipaddress.ip_address(str(a)))
    for prefix in prefixes:
        if prefix.version == version:
            return next((a for a in prefix.hosts() if a not in used), None)
    return None


@attrs.frozen
class NewNode:
    """A [[node]] to add, as `mesh add-node` and `init` take it."""

    name: str
    public_key: str
    addresses: list[str] = attrs.field(factory=list)  # none: the next free of each prefix
    endpoints: list[str] = attrs.field(factory=list)
    anchor: bool = False
    port: int | None = None
    interfaces: list[str] = attrs.field(factory=list)


def _append_node(doc: tomlkit.TOMLDocument, node: NewNode) -> list[str]:
    addresses = node.addresses
    if not addresses:
        addresses = [str(a) for v in (4, 6) if (a := next_free_address(doc, v)) is not None]
        if not addresses:
            raise EditError("give --address: the mesh has no prefixes to take one from")
    table = tomlkit.table()
    table.trivia.indent = "\n"  # a blank line before the new [[node]]
    table["name"] = node.name
    table["public_key"] = node.public_key
    table["address"] = addresses[0] if len(addresses) == 1 else addresses
    if node.endpoints:
        table["endpoints"] = node.endpoints
    if node.anchor:
        table["anchor"] = True
    if node.port is not None:
        table["port"] = node.port
    if node.interfaces:
        table["interfaces"] = node.interfaces
    if "node" not in doc:
        doc["node"] = tomlkit.aot()
    doc["node"].append(table)
    return addresses


def add_node(path: Path, node: NewNode) -> list[str]:
    """Append a [[node]]; returns its tunnel addresses (allocated from the prefixes when
    none are given)."""
    doc = _load(path)
    addresses = _append_node(doc, node)
    _commit(path, doc)
    return addresses


def init_mesh(path: Path, mesh_name: str, first: NewNode) -> list[str]:
    """Create a commented mesh file holding its first node, so that it checks (a mesh
    needs a node); never overwrites. Returns the node's tunnel addresses."""
    doc = parse_document(init_text(mesh_name, str(path)), str(path))
    addresses = _append_node(doc, first)
    write_new(path, _checked_text(path, doc))
    return addresses


def remove_node(path: Path, name: str) -> str:
    """Remove the [[node]] or [[wireguard]] named `name`; returns which kind it was."""
    doc = _load(path)
    kind, index, _ = _find(doc, name)
    del doc[kind][index]
    if not doc[kind]:
        del doc[kind]
    _commit(path, doc)
    return kind


def set_value(path: Path, key: str, value: str) -> None:
    """Set `mesh.KEY`, `node.NAME.KEY` or `wireguard.NAME.KEY` to a TOML value
    (`51821`, `true`, `["a", "b"]`); anything that is not TOML is taken as a string."""
    doc = _load(path)
    parts = key.split(".")
    if len(parts) == 2 and parts[0] == "mesh":
        table, field = doc.setdefault("mesh", tomlkit.table()), parts[1]
    elif len(parts) == 3 and parts[0] in ("node", "wireguard"):
        kind, _, table = _find(doc, parts[1])
        if kind != parts[0]:
            raise EditError(f"{parts[1]!r} is a [[{kind}]], not a [[{parts[0]}]]")
        field = parts[2]
    else:
        raise EditError(f"{key!r}: expected mesh.KEY, node.NAME.KEY or wireguard.NAME.KEY")
    body = table.value.body
    end = len(body)
    while end and body[end - 1][0] is None:
        end -= 1
    if field in table or end == len(body):
        table[field] = _toml_value(value)
    else:
        # After the table's last key, not after what trails it: the blank line and the
        # comment that introduce the next table stay with that table. tomlkit has no
        # public insert; `_insert_at` is in every release pyproject.toml allows.
        table.value._insert_at(end, field, _toml_value(value))
    _commit(path, doc)


def _toml_value(text: str) -> object:
    try:
        # The newline ends the value's line: without it tomlkit writes the next line on it.
        return tomlkit.parse(f"v = {text}\n")["v"]
    except ParseError:
        return tomlkit.item(text)
