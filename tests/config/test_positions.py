"""The source map finds keys and values through the corners of TOML syntax."""

from __future__ import annotations

import pytest

from whalescale.config.positions import Path, Position, SourceMap

TRICKY = '''\
# [[node]] in a comment is no header
[mesh]
name = """
[[node]]
name = "inside a string"
"""
"quoted key" = 1
a . b.'c d' = 'x'
arr = [
  1,  # a comment with ] in it
  { x = 2, y = "}" },
]
esc = "\\"[[node]]"
raw = \'\'\'it's ''\'\'\'

[[node]]
name = 'n0'
[node.sub]
k = 1979-05-27 07:32:00Z

[[ node ]]
"name" = "n1"
inline = [ {name = "a"}, {name = "b"} ]
'''

# (path, line, col of the value)
VALUES: list[tuple[Path, int, int]] = [
    (("mesh",), 2, 1),
    (("mesh", "name"), 3, 8),
    (("mesh", "quoted key"), 7, 16),
    (("mesh", "a", "b", "c d"), 8, 15),
    (("mesh", "arr"), 9, 7),
    (("mesh", "arr", 0), 10, 3),
    (("mesh", "arr", 1), 11, 3),
    (("mesh", "arr", 1, "y"), 11, 16),
    (("mesh", "esc"), 13, 7),
    (("mesh", "raw"), 14, 7),
    (("node",), 16, 1),
    (("node", 0), 16, 1),
    (("node", 0, "name"), 17, 8),
    (("node", 0, "sub"), 18, 1),
    (("node", 0, "sub", "k"), 19, 5),
    (("node", 1), 21, 1),
    (("node", 1, "name"), 22, 10),
    (("node", 1, "inline", 1, "name"), 23, 34),
    # not in the file: the nearest enclosing thing that is
    (("node", 1, "public_key"), 21, 1),
    (("node", 0, "sub", "missing", 3), 18, 1),
    (("nowhere",), 1, 1),
]


@pytest.mark.parametrize(("path", "line", "col"), VALUES)
def test_value_positions(path: Path, line: int, col: int) -> None:
    assert SourceMap(TRICKY).value(path) == Position(line, col)


def test_key_positions_point_at_the_key() -> None:
    source = SourceMap(TRICKY)
    assert source.key(("mesh", "quoted key")) == Position(7, 1)
    assert source.key(("mesh", "a", "b", "c d")) == Position(8, 7)
    assert source.key(("mesh", "arr", 1, "y")) == Position(11, 12)
    # a table header has no key of its own: its header is the place
    assert source.key(("node", 1)) == Position(21, 1)


def test_unicode_escapes_in_quoted_keys() -> None:
    source = SourceMap('[t]\n"caf\\u00e9" = 1\n')
    assert source.value(("t", "café")) == Position(2, 15)


def test_columns_count_characters_not_bytes() -> None:
    assert SourceMap('a = { s = "ééé", t = 1 }\n').value(("a", "t")) == Position(1, 22)


def test_scanner_stops_quietly_at_syntax_it_does_not_follow() -> None:
    # not TOML at all: positions found before the confusion still stand
    source = SourceMap("[a]\nb = 1\n= = =\n[c]\n")
    assert source.value(("a", "b")) == Position(2, 5)
    assert source.value(("c",)) == Position(1, 1)
