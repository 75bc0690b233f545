"""A valid mesh file with real keys, and helpers to break it one edit at a time.

Line numbers in tests refer to VALID as printed here (line 1 is "[mesh]").
"""

from __future__ import annotations

from whalescale.config import ConfigError, parse_mesh
from whalescale.identity import Identity, b64

ANCHOR = Identity.generate()
LAPTOP = Identity.generate()
ROUTER = Identity.generate()  # stands in for a vanilla WireGuard box: only its X25519 half

VALID = f"""\
[mesh]
name = "home"
port = 51820
keepalive_s = 25
mtu = 1420

[[node]]
name = "anchor-1"
public_key = "{b64(ANCHOR.public)}"
address = "100.96.0.1"
endpoints = ["192.0.2.10:51820", "[2001:db8::1]:51820"]
anchor = true
interfaces = ["eth0", "wlan0"]

[[node]]
name = "laptop"
public_key = "{b64(LAPTOP.public)}"
address = ["100.96.0.2", "fd7a:115c:a1e0::2"]
port = 51821
endpoints = ["192.0.2.11"]
relay = true

[[wireguard]]
name = "old-router"
public_key = "{b64(ROUTER.x25519_public)}"
address = "100.96.0.20"
allowed_ips = ["192.168.50.0/24"]
endpoint = "192.0.2.20:51820"
keepalive_s = 15
"""


def edit(old: str, new: str, text: str = VALID) -> str:
    """Replace the one occurrence of `old`; a test that edits nothing would prove nothing."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def problems(text: str) -> list[tuple[int, int, str, str]]:
    """(line, col, key path, message) of every problem, in file order."""
    try:
        parse_mesh(text, "mesh.toml")
    except ConfigError as exc:
        return [(p.line, p.col, p.key_path, p.message) for p in exc.problems]
    raise AssertionError("the file was accepted")
