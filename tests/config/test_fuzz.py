"""Whatever the text, loading either gives a Mesh or raises ConfigError with sane positions."""

from __future__ import annotations

import copy
import re
from typing import Any

import tomlkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.config.meshfile import ANCHOR, LAPTOP, ROUTER, VALID
from whalescale.config import ConfigError, Mesh, Problem, parse_mesh
from whalescale.config.positions import BARE_KEY
from whalescale.identity import b64

SCHEMA_KEYS = [
    "name", "public_key", "address", "endpoints", "anchor", "port", "interfaces", "relay",
    "allowed_ips", "endpoint", "keepalive_s", "mtu", "private_key",
]  # fmt: skip
NEAR_MISSES = [
    b64(ANCHOR.public), b64(LAPTOP.public), b64(ROUTER.x25519_public), b64(bytes(32)), "QUJD",
    "100.96.0.1", "100.96.0.2", "fd00::1", "10.0.0.0/8", "10.0.0.1/8", "192.0.2.1:51820",
    "[2001:db8::1]:1", "[::1]", "[1.2.3.4]:5", "host:1", "1.2.3.4:", "1.2.3.4:99999",
    "eth0", "a/b", "anchor-1", "-x", "", "home.example.org:51820", "a..b:1", "1.2.3:4",
    "x-.org", "[host.example]:1",
]  # fmt: skip

scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(NEAR_MISSES),
    st.dates(),
)
keys = st.one_of(st.sampled_from(SCHEMA_KEYS), st.text(min_size=1, max_size=10))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=12,
)
tables = st.dictionaries(keys, values, max_size=6)
documents = st.fixed_dictionaries(
    {},
    optional={
        "mesh": tables,
        "node": st.lists(tables, max_size=3) | values,
        "wireguard": st.lists(tables, max_size=2),
        "extra": values,
    },
)


def load(text: str) -> list[Problem]:
    """Load text, which must either work or fail with problems that point inside it."""
    try:
        assert isinstance(parse_mesh(text, "fuzz.toml"), Mesh)
    except ConfigError as exc:
        assert exc.problems
        lines = text.split("\n")
        for problem in exc.problems:
            assert 1 <= problem.line <= len(lines) + 1, problem
            assert problem.col >= 1, problem
            assert str(problem).startswith("fuzz.toml:")
        return exc.problems
    return []


@given(st.text())
def test_any_text(text: str) -> None:
    load(text)


@given(st.lists(st.sampled_from([*VALID.splitlines(keepends=True), "[", "]", '"', "=", "\n"])))
def test_shuffled_lines_of_a_mesh_file(lines: list[str]) -> None:
    load("".join(lines))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_toml_document(document: dict[str, Any]) -> None:
    load(tomlkit.dumps(document))


VALID_DOCUMENT = tomlkit.parse(VALID).unwrap()
ENTRIES = [("mesh",), ("node", 0), ("node", 1), ("wireguard", 0)]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ENTRIES), st.sampled_from(SCHEMA_KEYS), values)
def test_a_changed_value_is_reported_on_its_own_line(
    entry: tuple[str | int, ...], key: str, value: object
) -> None:
    document = copy.deepcopy(VALID_DOCUMENT)
    table: Any = document
    for part in entry:
        table = table[part]
    table[key] = value
    text = tomlkit.dumps(document)
    prefix = "".join(f"[{p}]" if isinstance(p, int) else p for p in entry) + f".{key}"
    lines = text.split("\n")
    for problem in load(text):
        if problem.key_path == prefix or problem.key_path.startswith((f"{prefix}.", f"{prefix}[")):
            # the innermost key of the path is written on the reported line (bare keys only:
            # tomlkit may quote others differently from the key path)
            innermost = re.sub(r"\[\d+\]", "", problem.key_path).rsplit(".", 1)[-1]
            if BARE_KEY.fullmatch(innermost):
                assert innermost in lines[problem.line - 1], (problem, text)
