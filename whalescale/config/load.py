"""Read a mesh file: TOML syntax, then the schema, then checks across entries.

Theory of operation: the standard library's tomllib parses the text into plain
values (tomlkit, which keeps comments for edits, costs the agent 3 MiB it does not
need; a file tomllib refuses goes to tomlkit, whose syntax errors say where);
SourceMap finds where each key and value is written. Each table is read against a
table of fields (converter, required or default); every mistake becomes a Problem with
its position and the loader carries on, so one run reports them all. Entries
with mistakes still take part in the checks across entries (duplicate names,
keys, addresses) with whatever fields did convert. Deprecated keys are accepted
and ignored; each is logged as a warning (logger "whalescale.config") with its
position, once the file is otherwise valid.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import tomllib
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path as FilePath
from typing import TYPE_CHECKING, Any

import attrs

from whalescale.config import fields
from whalescale.config.errors import ConfigError, Problem
from whalescale.config.positions import BARE_KEY, Path, Position, SourceMap
from whalescale.config.schema import Endpoint, Mesh, Network, Node, WireGuardPeer
from whalescale.identity import x25519_public_from_ed25519

if TYPE_CHECKING:
    import tomlkit
    import tomlkit.exceptions

DEFAULT_PORT = 51820
DEFAULT_KEEPALIVE_S = 25
DEFAULT_MTU = 1420

_SECRET_KEY = re.compile(r"private|secret", re.IGNORECASE)
_PARSE_ERROR_POSITION = re.compile(r" at line \d+ col \d+$")
_REQUIRED = object()

log = logging.getLogger("whalescale.config")


@attrs.frozen
class _Field:
    convert: fields.Converter[Any]
    default: object = _REQUIRED


_MESH_FIELDS = {
    "name": _Field(fields.name),
    "port": _Field(fields.port, DEFAULT_PORT),
    "keepalive_s": _Field(fields.integer(0, 65535), DEFAULT_KEEPALIVE_S),
    # 1280 is the IPv6 minimum link MTU (RFC 8200 §5), and a multipath session carries
    # a 12-byte trailer in the same plaintext; 9000 covers jumbo frames.
    "mtu": _Field(fields.integer(1292, 9000), DEFAULT_MTU),
    # Tunnel prefixes: every tunnel address must lie inside one; routed into the tunnel.
    "prefixes": _Field(fields.list_of(fields.network, or_single=True), ()),
    # Node names resolve as NAME.SUFFIX on every node (default: the mesh's name).
    "suffix": _Field(fields.dns_suffix, None),
}
_networks = fields.list_of(fields.network, or_single=True)
_NODE_FIELDS = {
    "name": _Field(fields.name),
    "public_key": _Field(fields.node_key),
    "address": _Field(fields.non_empty(fields.list_of(fields.tunnel_address, or_single=True))),
    "endpoints": _Field(fields.list_of(fields.endpoint), ()),
    "anchor": _Field(fields.boolean, False),
    "port": _Field(fields.port, None),
    "interfaces": _Field(fields.list_of(fields.interface), ()),
    # Used only while no other path to a peer works (a metered LTE link); still watched.
    "backup_interfaces": _Field(fields.list_of(fields.interface), ()),
    # Prometheus metrics of this node's agent, off unless set ("127.0.0.1:9586").
    "metrics": _Field(fields.listen_address, None),
    # Routes and access (README "Routes, exit nodes, firewall, names").
    "routes": _Field(_networks, ()),
    "standby_routes": _Field(_networks, ()),
    "accept_routes": _Field(fields.boolean, True),
    "exit": _Field(fields.boolean, False),
    "exit_node": _Field(fields.name, None),
    "kill_switch": _Field(fields.boolean, False),
    "groups": _Field(fields.list_of(fields.name, or_single=True), ()),
    "firewall": _Field(fields.list_of(fields.rule), ()),
    "firewall_default": _Field(fields.one_of("allow", "deny"), "allow"),
}
_WIREGUARD_FIELDS = {
    "name": _Field(fields.name),
    "public_key": _Field(fields.wireguard_key),
    "address": _Field(fields.non_empty(fields.list_of(fields.tunnel_address, or_single=True))),
    "allowed_ips": _Field(fields.list_of(fields.network, or_single=True), ()),
    "endpoint": _Field(fields.endpoint, None),
    "keepalive_s": _Field(fields.integer(0, 65535), None),
}
_TOP_LEVEL = ("mesh", "node", "wireguard")
MAX_MESH_FILE_BYTES = 1024 * 1024
# Keys still accepted (of the right type) but ignored, with why: a warning, not a problem.
_DEPRECATED_NODE_FIELDS = {
    "relay": (_Field(fields.boolean, False),
              "relaying is automatic through the anchors; remove the key"),
}


def load_mesh(path: str | FilePath) -> Mesh:
    filename = str(path)
    try:
        with FilePath(path).open("rb") as file:
            raw = file.read(MAX_MESH_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError([Problem(filename, 0, 0, "", f"cannot read: {exc.strerror}")]) from exc
    if len(raw) > MAX_MESH_FILE_BYTES:
        raise ConfigError([Problem(filename, 0, 0, "", f"larger than {MAX_MESH_FILE_BYTES} "
                                   "bytes: far more than any mesh file needs")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start].decode("utf-8")
        line = before.count("\n") + 1
        col = len(before) - before.rfind("\n")
        problem = Problem(filename, line, col, "", "not UTF-8 text, expected a TOML file")
        raise ConfigError([problem]) from exc
    return parse_mesh(text, filename)


def parse_document(text: str, filename: str) -> tomlkit.TOMLDocument:
    """The TOML document, with its comments (for edits); syntax errors as ConfigError."""
    import tomlkit
    import tomlkit.exceptions

    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError as exc:
        raise ConfigError([_syntax_problem(exc, SourceMap(text), filename)]) from exc
    except RecursionError as exc:  # arrays or tables nested hundreds deep
        raise ConfigError([_too_deep(filename)]) from exc


def parse_mesh(text: str, filename: str) -> Mesh:
    try:
        document = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError):
        try:  # what is wrong, and where, in tomlkit's words (tests/config hold them)
            document = parse_document(text, filename).unwrap()
        except RecursionError as exc:
            raise ConfigError([_too_deep(filename)]) from exc
    reader = _Reader(filename, SourceMap(text))
    mesh = reader.mesh(document)
    if mesh is None:
        raise ConfigError(reader.problems)
    for warning in reader.warnings:
        log.warning("%s", warning)
    return mesh


def _too_deep(filename: str) -> Problem:
    return Problem(filename, 0, 0, "", "nested too deeply to read (no mesh file nests "
                   "more than a few levels)")


def _syntax_problem(
    error: tomlkit.exceptions.TOMLKitError, source: SourceMap, filename: str
) -> Problem:
    import tomlkit.exceptions

    message = _PARSE_ERROR_POSITION.sub("", str(error))
    reported = None
    if isinstance(error, tomlkit.exceptions.ParseError):
        reported = Position(error.line, error.col + 1)  # tomlkit counts columns from 0
    # tomlkit reports a key or table defined twice late (at the next header) or
    # nowhere; the scanner stops at syntax errors, so a repeat it found before
    # tomlkit's position is what tomlkit is complaining about.
    candidates = [p for p in (reported, source.first_repeat) if p is not None]
    where = min(candidates, default=Position(1, 1))
    return Problem(filename, where.line, where.col, "", f"TOML syntax: {message}")


def _render(path: Path) -> str:
    """("node", 2, "public_key") -> "node[2].public_key"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if BARE_KEY.fullmatch(part) else f'"{part}"'
            out += f".{key}" if out else key
    return out


class _Reader:
    def __init__(self, filename: str, source: SourceMap) -> None:
        self.filename = filename
        self.source = source
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []  # with the same positions; they refuse nothing

    def problem(self, path: Path, message: str, *, at_key: bool = False) -> None:
        where = self.source.key(path) if at_key else self.source.value(path)
        self.problems.append(Problem(self.filename, where.line, where.col, _render(path), message))

    def warning(self, path: Path, message: str) -> None:
        where = self.source.key(path)
        self.warnings.append(Problem(self.filename, where.line, where.col, _render(path), message))

    def mesh(self, document: dict[str, Any]) -> Mesh | None:
        """The Mesh, or None after recording every problem."""
        self.secrets(document, ())
        self.unknown_keys(document, (), _TOP_LEVEL)
        settings = self.table(document.get("mesh"), ("mesh",), _MESH_FIELDS, "[mesh]")
        port = settings.get("port", DEFAULT_PORT)
        keepalive_s = settings.get("keepalive_s", DEFAULT_KEEPALIVE_S)
        node_tables = self.array_of_tables(document, "node")
        if not node_tables and isinstance(document.get("node", []), list):
            self.problem(("node",), "a mesh needs at least one [[node]], found none")
        nodes = [self.table(t, ("node", i), _NODE_FIELDS, deprecated=_DEPRECATED_NODE_FIELDS)
                 for i, t in enumerate(node_tables)]
        peers = [
            self.table(t, ("wireguard", i), _WIREGUARD_FIELDS)
            for i, t in enumerate(self.array_of_tables(document, "wireguard"))
        ]
        self.across_entries(document, nodes, peers)
        for i, node in enumerate(nodes):
            self.backup_interfaces(document, ("node", i), node)
        self.inside_prefixes(document, settings.get("prefixes", ()), nodes, peers)
        self.routes(document, settings.get("prefixes", ()), nodes, peers)
        self.access(document, nodes, peers)
        suffix = settings.get("suffix") or settings.get("name", "")
        if _shadows_tld(suffix):
            self.warning(("mesh", "suffix") if settings.get("suffix") else ("mesh", "name"),
                         f"names end in .{suffix}, which shadows the public top-level domain "
                         f".{suffix.rsplit('.', 1)[-1]}: set [mesh] suffix, e.g. "
                         f"suffix = \"{settings.get('name', 'mesh')}.internal\"")
        if self.problems:
            return None
        return Mesh(
            name=settings["name"],
            port=port,
            keepalive_s=keepalive_s,
            mtu=settings["mtu"],
            prefixes=settings["prefixes"],
            nodes=tuple(_node(n, port) for n in nodes),
            wireguard=tuple(_wireguard_peer(p, port, keepalive_s) for p in peers),
            suffix=suffix,
        )

    def secrets(self, value: object, path: Path) -> None:
        """Flag private keys wherever they are, before they get copied to every node."""
        if isinstance(value, dict):
            for key, item in value.items():
                if _SECRET_KEY.search(key):
                    self.problem(
                        (*path, key),
                        "private keys must not be in the mesh file, which every node gets;"
                        " a private key stays on its own host (use `whalescale keygen`"
                        " and `--key`)",
                        at_key=True,
                    )
                else:
                    self.secrets(item, (*path, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.secrets(item, (*path, index))

    def unknown_keys(self, table: Mapping[str, object], path: Path, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        for key, value in table.items():
            if key not in allowed and not _SECRET_KEY.search(key):
                what = "table" if isinstance(value, dict) else "key"
                self.problem(
                    (*path, key),
                    f"unknown {what} {key!r}, expected one of: {', '.join(allowed)}",
                    at_key=True,
                )

    def array_of_tables(self, document: dict[str, Any], key: str) -> list[object]:
        value = document.get(key, [])
        if not isinstance(value, list):
            self.problem(
                (key,), f"expected an array of tables [[{key}]], got {fields.toml_type(value)}"
            )
            return []
        return value

    def table(
        self,
        value: object,
        path: Path,
        schema: Mapping[str, _Field],
        header: str = "",
        deprecated: Mapping[str, tuple[_Field, str]] | None = None,
    ) -> dict[str, Any]:
        """The converted fields of one table; missing or bad ones are reported and left out.
        A `deprecated` key is still checked (its type) but left out, with a warning."""
        if value is None and header:
            self.problem(path, f"missing {header} table")
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"expected a table, got {fields.toml_type(value)}")
            return {}
        deprecated = deprecated or {}
        # Deprecated keys are not unknown, but not offered in "expected one of" either.
        self.unknown_keys({k: v for k, v in value.items() if k not in deprecated}, path, schema)
        for key, (field, why) in deprecated.items():
            if key not in value:
                continue
            try:
                field.convert(value[key])
            except fields.Invalid as exc:
                for sub, message in exc.where:
                    self.problem((*path, key, *sub), message)
            else:
                self.warning((*path, key), f"deprecated key {key!r} is ignored: {why}")
        out: dict[str, Any] = {}
        for key, field in schema.items():
            if key not in value:
                if field.default is _REQUIRED:
                    self.problem((*path, key), f"missing required key {key!r}")
                else:
                    out[key] = field.default
                continue
            try:
                out[key] = field.convert(value[key])
            except fields.Invalid as exc:
                for sub, message in exc.where:
                    self.problem((*path, key, *sub), message)
        return out

    def across_entries(
        self, document: dict[str, Any], nodes: list[dict[str, Any]], peers: list[dict[str, Any]]
    ) -> None:
        entries = [(("node", i), n) for i, n in enumerate(nodes)]
        entries += [(("wireguard", i), p) for i, p in enumerate(peers)]
        self.unique(
            "name",
            ((e["name"], (*path, "name"), repr(e["name"])) for path, e in entries if "name" in e),
        )
        # Compare Noise statics: two Ed25519 keys can map to one X25519 key, and a
        # WireGuard peer must not reuse a node's key.
        self.unique(
            "public key",
            (
                (_noise_static(path, e["public_key"]), (*path, "public_key"), "")
                for path, e in entries
                if "public_key" in e
            ),
        )
        self.unique(
            "tunnel address",
            (
                (address, _element_path(document, (*path, "address"), j), str(address))
                for path, e in entries
                for j, address in enumerate(e.get("address", ()))
            ),
        )

    def backup_interfaces(self, document: dict[str, Any], path: Path,
                          node: dict[str, Any]) -> None:
        if node.get("backup_interfaces") and not node.get("interfaces"):
            self.problem((*path, "backup_interfaces"),
                         "backup interfaces need `interfaces` too, expected the interfaces "
                         "used while they work (e.g. interfaces = [\"wlan0\"])")
        both = set(node.get("interfaces", ())) & set(node.get("backup_interfaces", ()))
        for j, name in enumerate(node.get("backup_interfaces", ())):
            if name in both:
                self.problem(_element_path(document, (*path, "backup_interfaces"), j),
                             f"interface {name!r} is also in `interfaces`, expected it in "
                             f"one of the two (a backup is used only when the others fail)")

    def inside_prefixes(self, document: dict[str, Any], prefixes: tuple[Network, ...],
                        nodes: list[dict[str, Any]], peers: list[dict[str, Any]]) -> None:
        if not prefixes:
            return
        shown = ", ".join(map(str, prefixes))
        entries = [(("node", i), n) for i, n in enumerate(nodes)]
        entries += [(("wireguard", i), p) for i, p in enumerate(peers)]
        for path, entry in entries:
            for j, address in enumerate(entry.get("address", ())):
                if not any(address in prefix for prefix in prefixes
                           if prefix.version == address.version):
                    self.problem(_element_path(document, (*path, "address"), j),
                                 f"tunnel address {address} is outside the mesh prefixes "
                                 f"({shown}), expected an address inside one of them")

    def routes(self, document: dict[str, Any], prefixes: tuple[Network, ...],
               nodes: list[dict[str, Any]], peers: list[dict[str, Any]]) -> None:
        """Networks behind nodes: none overlaps the tunnel or another's, except the same
        network as one node's `routes` and other nodes' `standby_routes`."""
        taken: list[tuple[Network, str]] = [(p, "the mesh prefix") for p in prefixes]
        taken += [(ipaddress.ip_network(a), f"{n['name']}'s tunnel address")
                  for n in nodes + peers if "name" in n for a in n.get("address", ())]
        taken += [(net, f"WireGuard peer {p['name']}'s allowed_ips")
                  for p in peers if "name" in p for net in p.get("allowed_ips", ())]
        primaries: dict[Network, str] = {}
        for key in ("routes", "standby_routes"):
            for i, node in enumerate(nodes):
                owner = node.get("name", f"node[{i}]")
                for j, net in enumerate(node.get(key, ())):
                    where = _element_path(document, ("node", i, key), j)
                    clash = next((what for other, what in taken if net.overlaps(other)), None)
                    if clash is not None:
                        self.problem(where, f"route {net} overlaps {clash}, expected a network "
                                     "outside the tunnel's addresses")
                    elif key == "routes":
                        other = next((o for o in primaries if net.overlaps(o)), None)
                        if other is not None:
                            self.problem(where, f"route {net} overlaps {other} of "
                                         f"{primaries[other]}; two nodes may carry one network "
                                         "only as `routes` on one and `standby_routes` on the "
                                         "other")
                        else:
                            primaries[net] = owner
                    elif primaries.get(net) in (None, owner):
                        self.problem(where, f"standby route {net} has no primary, expected "
                                     "another node to list exactly this network in `routes`")

    def access(self, document: dict[str, Any], nodes: list[dict[str, Any]],
               peers: list[dict[str, Any]]) -> None:
        """Exit nodes, groups and firewall sources name what exists (a rule's source may be
        a vanilla WireGuard peer: the firewall knows a packet's sender by its address)."""
        names = {n["name"]: n for n in nodes if "name" in n}
        peer_names = {p["name"] for p in peers if "name" in p}
        groups = {g for n in nodes for g in n.get("groups", ())}
        known = sorted(names.keys() | peer_names) + sorted(groups - names.keys() - peer_names)
        for i, node in enumerate(nodes):
            exit_node = node.get("exit_node")
            if exit_node is not None:
                target = names.get(exit_node)
                if target is None or target is node or not target.get("exit"):
                    offering = ", ".join(n for n, t in names.items() if t.get("exit")
                                         and t is not node) or "none"
                    self.problem(("node", i, "exit_node"),
                                 f"{exit_node!r} is not another node with exit = true "
                                 f"(those offering: {offering})")
            for j, group in enumerate(node.get("groups", ())):
                if group in names or group in peer_names:
                    self.problem(_element_path(document, ("node", i, "groups"), j),
                                 f"group {group!r} has the name of a "
                                 f"{'node' if group in names else 'WireGuard peer'}, expected "
                                 "a name no node or peer uses (a rule's `from` names either)")
            for r, rule in enumerate(node.get("firewall", ())):
                for k, source in enumerate(rule.sources):
                    if source not in names and source not in peer_names \
                            and source not in groups:
                        self.problem(_element_path(document, ("node", i, "firewall", r, "from"),
                                                   k),
                                     f"{source!r} is no node, WireGuard peer or group, expected "
                                     "one of: " + ", ".join(known))

    def unique(self, what: str, items: Iterable[tuple[Hashable, Path, str]]) -> None:
        """Report each repeat of a value; items are (value, where, how to show it)."""
        first: dict[Hashable, Path] = {}
        for value, path, shown in items:
            if value not in first:
                first[value] = path
                continue
            earlier = first[value]
            line = self.source.value(earlier).line
            label = f"{what} {shown}" if shown else what
            self.problem(
                path, f"duplicate {label}, already used by {_render(earlier)} (line {line})"
            )


def _noise_static(entry: Path, public_key: bytes) -> bytes:
    return x25519_public_from_ed25519(public_key) if entry[0] == "node" else public_key


def _element_path(document: dict[str, Any], path: Path, index: int) -> Path:
    """The path of element `index` of a list value, or of the value itself if written bare."""
    value: Any = document
    for part in path:
        value = value[part]
    return (*path, index) if isinstance(value, list) else path


def _endpoint(host_port: tuple[str, int | None], default_port: int) -> Endpoint:
    host, port = host_port
    return Endpoint(host, default_port if port is None else port)


# Suffixes a mesh must not take silently: names under them would shadow real ones.
# The generic and most used TLDs, and any two letters (a country code, or may become one).
_PUBLIC_TLDS = frozenset((
    "com", "net", "org", "info", "biz", "name", "pro", "mobi", "app", "dev", "page", "io",
    "ai", "co", "me", "tv", "cloud", "online", "site", "shop", "store", "tech", "xyz", "live",
    "blog", "email", "link", "network", "systems", "services", "zone"))


def _shadows_tld(suffix: str) -> bool:
    tld = suffix.rsplit(".", 1)[-1]
    return tld in _PUBLIC_TLDS or (len(tld) == 2 and tld.isalpha())


def _node(fields_: dict[str, Any], mesh_port: int) -> Node:
    port = mesh_port if fields_["port"] is None else fields_["port"]
    return Node(
        name=fields_["name"],
        public_key=fields_["public_key"],
        addresses=fields_["address"],
        # a static endpoint without a port is where this node listens
        endpoints=tuple(_endpoint(e, port) for e in fields_["endpoints"]),
        anchor=fields_["anchor"],
        port=port,
        interfaces=fields_["interfaces"],
        backup_interfaces=fields_["backup_interfaces"],
        metrics=Endpoint(*fields_["metrics"]) if fields_["metrics"] else None,
        **{key: fields_[key] for key in _ACCESS_KEYS},
    )


_ACCESS_KEYS = ("routes", "standby_routes", "accept_routes", "exit", "exit_node",
                "kill_switch", "groups", "firewall", "firewall_default")


def _wireguard_peer(fields_: dict[str, Any], mesh_port: int, keepalive_s: int) -> WireGuardPeer:
    endpoint = fields_["endpoint"]
    return WireGuardPeer(
        name=fields_["name"],
        public_key=fields_["public_key"],
        addresses=fields_["address"],
        allowed_ips=fields_["allowed_ips"],
        endpoint=None if endpoint is None else _endpoint(endpoint, mesh_port),
        keepalive_s=keepalive_s if fields_["keepalive_s"] is None else fields_["keepalive_s"],
    )
