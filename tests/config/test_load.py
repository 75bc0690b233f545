"""Loading mesh files: the valid file's records, then each kind of mistake with its position."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import pytest

from tests.config.meshfile import ANCHOR, LAPTOP, ROUTER, VALID, edit, problems
from whalescale.config import (
    ConfigError,
    Endpoint,
    Mesh,
    Node,
    Problem,
    WireGuardPeer,
    load_mesh,
    parse_mesh,
)
from whalescale.config.load import MAX_MESH_FILE_BYTES
from whalescale.identity import b64, x25519_public_from_ed25519

ip = ipaddress.ip_address

EXPECTED = Mesh(
    name="home",
    port=51820,
    keepalive_s=25,
    mtu=1420,
    prefixes=(),
    nodes=(
        Node(
            name="anchor-1",
            public_key=ANCHOR.public,
            addresses=(ip("100.96.0.1"),),
            endpoints=(Endpoint("192.0.2.10", 51820), Endpoint("2001:db8::1", 51820)),
            anchor=True,
            port=51820,
            interfaces=("eth0", "wlan0"),
        ),
        Node(
            name="laptop",
            public_key=LAPTOP.public,
            addresses=(ip("100.96.0.2"), ip("fd7a:115c:a1e0::2")),
            # no port in the endpoint: the node's own listen port
            endpoints=(Endpoint("192.0.2.11", 51821),),
            anchor=False,
            port=51821,
            interfaces=(),
        ),
    ),
    wireguard=(
        WireGuardPeer(
            name="old-router",
            public_key=ROUTER.x25519_public,
            addresses=(ip("100.96.0.20"),),
            allowed_ips=(ipaddress.ip_network("192.168.50.0/24"),),
            endpoint=Endpoint("192.0.2.20", 51820),
            keepalive_s=15,
        ),
    ),
    suffix="home",
)


def test_valid_file_gives_the_records(tmp_path: Path) -> None:
    path = tmp_path / "mesh.toml"
    path.write_text(VALID)
    assert load_mesh(path) == EXPECTED
    assert parse_mesh(VALID, "mesh.toml") == EXPECTED


def test_optional_settings_take_their_defaults() -> None:
    text = f"""\
[mesh]
name = "tiny"

[[node]]
name = "solo"
public_key = "{b64(ANCHOR.public)}"
address = "fd00::1"
endpoints = ["[fd00:1::1]"]

[[wireguard]]
name = "wg"
public_key = "{b64(ROUTER.x25519_public)}"
address = "fd00::2"
endpoint = "[fd00:1::2]"
"""
    mesh = parse_mesh(text, "mesh.toml")
    assert (mesh.port, mesh.keepalive_s, mesh.mtu) == (51820, 25, 1420)
    (node,) = mesh.nodes
    assert (node.port, node.anchor, node.interfaces) == (51820, False, ())
    assert node.endpoints == (Endpoint("fd00:1::1", 51820),)
    (peer,) = mesh.wireguard
    assert (peer.keepalive_s, peer.allowed_ips) == (25, ())
    assert peer.endpoint == Endpoint("fd00:1::2", 51820)


def test_mesh_lookups() -> None:
    anchor, laptop = EXPECTED.nodes
    assert EXPECTED.node_by_key(LAPTOP.public) is laptop
    assert EXPECTED.node_by_key(ROUTER.public) is None
    assert EXPECTED.anchors() == (anchor,)


def test_endpoint_text_brackets_ipv6() -> None:
    assert str(Endpoint("192.0.2.1", 51820)) == "192.0.2.1:51820"
    assert str(Endpoint("2001:db8::1", 51820)) == "[2001:db8::1]:51820"


def test_endpoints_may_be_host_names_which_are_kept_lower_case_for_the_agent() -> None:
    mesh = parse_mesh(edit('"192.0.2.10:51820"', '"Home.Example.ORG.:51820"'),
                      "mesh.toml")
    endpoint = mesh.nodes[0].endpoints[0]
    assert endpoint == Endpoint("home.example.org", 51820) and endpoint.named
    assert not mesh.nodes[0].endpoints[1].named
    # without a port, the node's own port, as for an address
    mesh = parse_mesh(edit('"192.0.2.10:51820"', '"anchor-1.lan"'), "mesh.toml")
    assert mesh.nodes[0].endpoints[0] == Endpoint("anchor-1.lan", 51820)


def test_a_metrics_address_must_be_an_address_not_a_name() -> None:
    text = edit('interfaces = ["eth0", "wlan0"]\n',
                'interfaces = ["eth0", "wlan0"]\nmetrics = "localhost:9586"\n')
    assert any("listen on an IP address" in p[3] for p in problems(text))


NOT_A_POINT = b64(bytes(32))  # all zeros: a small-order point, refused by libsodium

# (what breaks, old text, new text, line, col, key path, part of the message)
MISTAKES = [
    ("unknown key", "relay = true", "relay = true\nrelays = 1",
     22, 1, "node[1].relays", "unknown key 'relays', expected one of: name, public_key"),
    ("unknown table", "keepalive_s = 15\n", "keepalive_s = 15\n[extra]\n",
     30, 1, "extra", "unknown table 'extra', expected one of: mesh, node, wireguard"),
    ("string for integer", "port = 51821", 'port = "51821"',
     19, 8, "node[1].port", "expected an integer 1..65535, got a string"),
    ("integer for boolean", "anchor = true", "anchor = 1",
     12, 10, "node[0].anchor", "expected true or false, got an integer"),
    ("table for array", 'interfaces = ["eth0", "wlan0"]', 'interfaces = { a = "eth0" }',
     13, 14, "node[0].interfaces", "expected an array, got a table"),
    ("missing mesh name", 'name = "home"\n', "",
     1, 1, "mesh.name", "missing required key 'name'"),
    ("missing node key", f'public_key = "{b64(LAPTOP.public)}"\n', "",
     15, 1, "node[1].public_key", "missing required key 'public_key'"),
    ("missing wireguard address", 'address = "100.96.0.20"\n', "",
     23, 1, "wireguard[0].address", "missing required key 'address'"),
    ("mesh port out of range", "port = 51820", "port = 70000",
     3, 8, "mesh.port", "70000 is out of range, expected 1..65535"),
    ("node port zero", "port = 51821", "port = 0",
     19, 8, "node[1].port", "0 is out of range"),
    ("mtu too small", "mtu = 1420", "mtu = 576",
     5, 7, "mesh.mtu", "576 is out of range, expected 1292..9000"),
    ("negative keepalive", "keepalive_s = 15", "keepalive_s = -1",
     29, 15, "wireguard[0].keepalive_s", "out of range, expected 0..65535"),
    ("bad base64", b64(ANCHOR.public), "not base64!",
     9, 14, "node[0].public_key", "public key is not valid base64"),
    ("short key", b64(ROUTER.x25519_public), b64(bytes(16)),
     25, 14, "wireguard[0].public_key", "decodes to 16 bytes, expected 32"),
    ("not an Ed25519 point", b64(LAPTOP.public), NOT_A_POINT,
     17, 14, "node[1].public_key", "not a valid Ed25519 public key"),
    ("duplicate node name", '"laptop"', '"anchor-1"',
     16, 8, "node[1].name", "duplicate name 'anchor-1', already used by node[0].name (line 8)"),
    ("WireGuard peer named like a node", '"old-router"', '"laptop"',
     24, 8, "wireguard[0].name", "duplicate name 'laptop', already used by node[1].name"),
    ("duplicate node key", b64(LAPTOP.public), b64(ANCHOR.public),
     17, 14, "node[1].public_key", "duplicate public key, already used by node[0].public_key"),
    ("WireGuard peer with a node's Noise key", b64(ROUTER.x25519_public),
     b64(x25519_public_from_ed25519(ANCHOR.public)),
     25, 14, "wireguard[0].public_key", "duplicate public key, already used by node[0]"),
    ("duplicate address across tables", '"100.96.0.20"', '"100.96.0.2"',
     26, 11, "wireguard[0].address",
     "duplicate tunnel address 100.96.0.2, already used by node[1].address[0] (line 18)"),
    ("duplicate address in a list", '"fd7a:115c:a1e0::2"', '"100.96.0.1"',
     18, 26, "node[1].address[1]", "duplicate tunnel address 100.96.0.1"),
    ("bad IP address", '"100.96.0.1"', '"100.96.0.300"',
     10, 11, "node[0].address", "'100.96.0.300' is not an IPv4 or IPv6 address"),
    ("address with prefix", '"100.96.0.1"', '"100.96.0.1/32"',
     10, 11, "node[0].address", "has a prefix length, expected a host address like '100.96.0.1'"),
    ("no addresses", '"100.96.0.20"', "[]",
     26, 11, "wireguard[0].address", "is empty, expected at least one"),
    ("neither address nor name", '"192.0.2.10:51820"', '"vpn_example.com:51820"',
     11, 14, "node[0].endpoints[0]", "is neither an IP address nor a host name"),
    ("mistyped address", '"192.0.2.10:51820"', '"192.0.2.256:51820"',
     11, 14, "node[0].endpoints[0]", "is neither an IP address nor a host name"),
    ("IPv6 endpoint without brackets", '"[2001:db8::1]:51820"', '"2001:db8::1"',
     11, 34, "node[0].endpoints[1]", "an IPv6 endpoint needs brackets"),
    ("endpoint port out of range", '"192.0.2.20:51820"', '"192.0.2.20:70000"',
     28, 12, "wireguard[0].endpoint", "has port 70000, expected 1..65535"),
    ("network with host bits", '"192.168.50.0/24"', '"192.168.50.1/24"',
     27, 16, "wireguard[0].allowed_ips[0]", "did you mean '192.168.50.0/24'"),
    ("bad name", '"anchor-1"', '"Anchor_1"',
     8, 8, "node[0].name", "'Anchor_1' is not a valid name, expected 1-63 lowercase letters"),
    ("bad interface", '"wlan0"', '"wlan/0"',
     13, 23, "node[0].interfaces[1]", "'wlan/0' is not an interface name"),
    ("TOML syntax", "mtu = 1420", "mtu = = 1420",
     5, 7, "", "TOML syntax: Unexpected character: '='"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new", "line", "col", "key_path", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in MISTAKES],
)
def test_each_mistake_is_reported_where_it_is(
    old: str, new: str, line: int, col: int, key_path: str, message: str
) -> None:
    ((got_line, got_col, got_path, got_message),) = problems(edit(old, new))
    assert (got_line, got_col, got_path) == (line, col, key_path)
    assert message in got_message


def test_missing_mesh_table() -> None:
    text = VALID[VALID.index("[[node]]") :]
    assert problems(text) == [(1, 1, "mesh", "missing [mesh] table")]


def test_a_mesh_needs_nodes() -> None:
    text = '[mesh]\nname = "empty"\n'
    assert problems(text) == [(1, 1, "node", "a mesh needs at least one [[node]], found none")]
    assert problems("node = []\n" + text)[0][:3] == (1, 8, "node")


def test_nodes_must_be_an_array_of_tables() -> None:
    text = '[mesh]\nname = "m"\n[node]\nname = "anchor-1"\n'
    assert problems(text) == [
        (3, 1, "node", "expected an array of tables [[node]], got a table"),
    ]


def test_every_mistake_is_reported_at_once() -> None:
    text = VALID
    for old, new in [
        ("mtu = 1420", "mtu = 70000"),
        ('"laptop"', '"anchor-1"'),
        ("anchor = true", "anchor = 1\ncolour = 'blue'"),
        ('"100.96.0.20"', '"100.96.0.1"'),
        ('"[2001:db8::1]:51820"', '"example_org"'),
    ]:
        text = edit(old, new, text)
    assert [p[:3] for p in problems(text)] == [
        (5, 7, "mesh.mtu"),
        (11, 34, "node[0].endpoints[1]"),
        (12, 10, "node[0].anchor"),
        (13, 1, "node[0].colour"),
        (17, 8, "node[1].name"),
        (27, 11, "wireguard[0].address"),
    ]


def test_problems_print_one_line_each() -> None:
    text = edit("port = 51821", "port = 0", edit("mtu = 1420", "mtu = 1"))
    with pytest.raises(ConfigError) as caught:
        parse_mesh(text, "mesh.toml")
    assert str(caught.value).splitlines() == [
        "mesh.toml:5:7: mesh.mtu: 1 is out of range, expected 1292..9000",
        "mesh.toml:19:8: node[1].port: 0 is out of range, expected 1..65535",
    ]


SECRET = b64(LAPTOP.signing_key.encode())


@pytest.mark.parametrize(
    ("old", "new", "line", "col", "key_path"),
    [
        ("relay = true", f'relay = true\nprivate_key = "{SECRET}"', 22, 1, "node[1].private_key"),
        ("mtu = 1420", f'mtu = 1420\nPrivateKey = "{SECRET}"', 6, 1, "mesh.PrivateKey"),
        ("[mesh]", f'[secrets]\nlaptop = "{SECRET}"\n[mesh]', 1, 1, "secrets"),
        ("keepalive_s = 15", f'keepalive_s = 15\nkeys = {{ secret = "{SECRET}" }}', 30, 10,
         "wireguard[0].keys.secret"),
    ],
)  # fmt: skip
def test_private_keys_are_refused_without_echoing_them(
    old: str, new: str, line: int, col: int, key_path: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_mesh(edit(old, new), "mesh.toml")
    private = [p for p in caught.value.problems if "private keys" in p.message]
    assert [(p.line, p.col, p.key_path) for p in private] == [(line, col, key_path)]
    assert "stay" in private[0].message or "stays" in private[0].message
    assert "whalescale keygen" in private[0].message
    assert "--key" in private[0].message
    assert SECRET not in str(caught.value)


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_mesh(missing)
    assert caught.value.problems == [
        Problem(str(missing), 0, 0, "", "cannot read: No such file or directory")
    ]
    assert str(caught.value) == f"{missing}: cannot read: No such file or directory"


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "mesh.toml"
    path.write_bytes(b'[mesh]\nname = "h\xe9me"\n')
    with pytest.raises(ConfigError) as caught:
        load_mesh(path)
    assert [(p.line, p.col) for p in caught.value.problems] == [(2, 10)]


@pytest.mark.parametrize(
    ("old", "new", "line", "col"),
    [
        ("relay = true", "relay = true\nrelay = false", 22, 1),
        ("[[wireguard]]", "[mesh]\n[[wireguard]]", 23, 1),
    ],
)
def test_keys_and_tables_defined_twice(old: str, new: str, line: int, col: int) -> None:
    ((got_line, got_col, key_path, message),) = problems(edit(old, new))
    assert (got_line, got_col, key_path) == (line, col, "")
    assert message.startswith("TOML")


def test_prefixes_are_read_and_hold_every_tunnel_address() -> None:
    text = edit("mtu = 1420\n", 'mtu = 1420\nprefixes = ["100.96.0.0/16", "fd7a:115c:a1e0::/48"]\n')
    mesh = parse_mesh(text, "mesh.toml")
    assert mesh.prefixes == (ipaddress.ip_network("100.96.0.0/16"),
                             ipaddress.ip_network("fd7a:115c:a1e0::/48"))


def test_tunnel_address_outside_the_prefixes_is_an_error_at_the_address() -> None:
    text = edit("mtu = 1420\n", 'mtu = 1420\nprefixes = ["100.96.0.0/24"]\n')
    text = edit('address = "100.96.0.20"', 'address = "100.97.0.20"', text)
    found = problems(text)
    # the laptop's IPv6 address is outside too: there is no IPv6 prefix
    assert [(line, col, key) for line, col, key, _ in found] == [
        (19, 26, "node[1].address[1]"), (27, 11, "wireguard[0].address")]
    assert "outside the mesh prefixes (100.96.0.0/24)" in found[1][3]


def test_backup_interfaces_are_read_apart_from_the_interfaces() -> None:
    text = edit('interfaces = ["eth0", "wlan0"]',
                'interfaces = ["wlan0"]\nbackup_interfaces = ["wwan0"]')
    node = parse_mesh(text, "mesh.toml").nodes[0]
    assert (node.interfaces, node.backup_interfaces) == (("wlan0",), ("wwan0",))
    assert parse_mesh(VALID, "mesh.toml").nodes[0].backup_interfaces == ()


def test_an_interface_both_used_and_backup_is_an_error_at_the_backup_entry() -> None:
    text = edit('interfaces = ["eth0", "wlan0"]',
                'interfaces = ["eth0", "wlan0"]\nbackup_interfaces = ["wwan0", "wlan0"]')
    ((line, col, key, message),) = problems(text)
    assert (line, col, key) == (14, 31, "node[0].backup_interfaces[1]")
    assert "'wlan0' is also in `interfaces`" in message


def test_backup_interfaces_without_interfaces_is_an_error() -> None:
    text = edit('interfaces = ["eth0", "wlan0"]', 'backup_interfaces = ["wwan0"]')
    ((line, _, key, message),) = problems(text)
    assert (line, key) == (13, "node[0].backup_interfaces")
    assert "need `interfaces` too" in message


# --- deprecated keys: accepted, ignored, warned about with their position ---------------------


def test_relay_key_is_accepted_with_a_deprecation_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "mesh.toml"
    path.write_text(VALID)  # the laptop has `relay = true`, line 21
    with caplog.at_level(logging.WARNING, logger="whalescale.config"):
        assert load_mesh(path) == EXPECTED
    (record,) = [r for r in caplog.records if r.name == "whalescale.config"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "\n" not in message
    assert message.startswith(f"{path}:21:1: node[1].relay: deprecated key 'relay' is ignored")
    assert "anchors" in message


def test_relay_false_warns_too_and_a_file_without_it_does_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="whalescale.config"):
        parse_mesh(edit("relay = true", "relay = false"), "mesh.toml")
        assert [r.getMessage()[:27] for r in caplog.records] == ["mesh.toml:21:1: node[1].rel"]
        caplog.clear()
        parse_mesh(edit("relay = true\n", ""), "mesh.toml")
        assert caplog.records == []


def test_relay_of_the_wrong_type_is_still_a_problem_and_not_offered_as_a_key() -> None:
    assert problems(edit("relay = true", "relay = 1")) == [
        (21, 9, "node[1].relay", "expected true or false, got an integer")]
    ((_, _, _, message),) = problems(edit("relay = true", "relay = true\nrelays = 1"))
    assert "relay," not in message and not message.endswith("relay")


def test_a_file_nested_hundreds_deep_is_refused_in_one_line(tmp_path):
    path = tmp_path / "mesh.toml"
    path.write_text(VALID + "deep = " + "[" * 600 + "]" * 600 + "\n")
    with pytest.raises(ConfigError) as refused:
        load_mesh(path)
    assert str(refused.value) == f"{path}: nested too deeply to read (no mesh file nests " \
        "more than a few levels)"


def test_a_file_over_a_mebibyte_is_refused_before_parsing(tmp_path):
    path = tmp_path / "mesh.toml"
    path.write_text(VALID + "# " + "x" * MAX_MESH_FILE_BYTES + "\n")
    with pytest.raises(ConfigError, match="larger than 1048576 bytes"):
        load_mesh(path)
    path.write_text(VALID + "# " + "x" * 1000 + "\n")
    assert load_mesh(path).name == "home"  # a long comment is fine below the limit
