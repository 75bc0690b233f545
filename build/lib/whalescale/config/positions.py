"""Where each key and value of a TOML document sits in its source text.

tomlkit keeps no positions, so this is a second, small pass over text that
tomlkit has already accepted. It follows the TOML grammar only as far as
needed to find things: table headers, keys (bare, quoted, dotted), and the
start of every value, including array elements and inline-table entries.
Values are skipped, not decoded. Paths are tuples like ("node", 2, "port"),
with [[array]] tables numbered from 0 in file order.

If the scanner meets something it does not expect (a grammar corner tomlkit
accepts and this does not follow), it stops: lookups then fall back to the
nearest enclosing table found so far, and finally to 1:1. A slightly vaguer
position is better than a crash while reporting another error.
"""

from __future__ import annotations

import bisect
import contextlib
import re

import attrs

Path = tuple[str | int, ...]

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {
    "b": "\b",
    "t": "\t",
    "n": "\n",
    "f": "\f",
    "r": "\r",
    "e": "\x1b",
    '"': '"',
    "\\": "\\",
}
_HEX_ESCAPE_DIGITS = {"x": 2, "u": 4, "U": 8}
_SCALAR_END = ",]}#\r\n"


@attrs.frozen(order=True)
class Position:
    line: int
    col: int


class _Stop(Exception):
    """The text left the part of the grammar this scanner follows."""


class SourceMap:
    """Positions of a parsed document's tables, keys and values."""

    def __init__(self, text: str) -> None:
        self._line_starts = [0] + [m.end() for m in re.finditer(r"\n", text)]
        self._values: dict[Path, int] = {}
        self._keys: dict[Path, int] = {}
        self._aot_counts: dict[Path, int] = {}
        self._headers: set[Path] = set()
        self._first_repeat: int | None = None
        self._text = text
        self._i = 0
        with contextlib.suppress(_Stop):
            self._document()

    def value(self, path: Path) -> Position:
        """Where the value at `path` starts ('[' of its header for a table), else its parent."""
        for end in range(len(path), 0, -1):
            offset = self._values.get(path[:end])
            if offset is not None:
                return self._position(offset)
        return Position(1, 1)

    @property
    def first_repeat(self) -> Position | None:
        """Where a key or table is first defined a second time (tomlkit does not say)."""
        return None if self._first_repeat is None else self._position(self._first_repeat)

    def key(self, path: Path) -> Position:
        """Where the key naming `path` is written, else where its value is."""
        offset = self._keys.get(path)
        return self.value(path) if offset is None else self._position(offset)

    def _defined(self, path: Path, offset: int) -> None:
        if (path in self._keys or path in self._headers) and self._first_repeat is None:
            self._first_repeat = offset

    def _position(self, offset: int) -> Position:
        line = bisect.bisect_right(self._line_starts, offset)
        return Position(line, offset - self._line_starts[line - 1] + 1)

    # -- the scanner: self._i walks self._text ------------------------------

    def _peek(self, n: int = 1) -> str:
        return self._text[self._i : self._i + n]

    def _expect(self, s: str) -> None:
        if self._peek(len(s)) != s:
            raise _Stop
        self._i += len(s)

    def _skip_blank(self, newlines: bool) -> None:
        """Skip spaces and tabs; with `newlines`, also line breaks and comments."""
        while (c := self._peek()) and (c in " \t" or (newlines and c in "\r\n#")):
            if c == "#":
                self._skip_to_line_end()
            else:
                self._i += 1

    def _skip_to_line_end(self) -> None:
        end = self._text.find("\n", self._i)
        self._i = len(self._text) if end < 0 else end

    def _document(self) -> None:
        table: Path = ()
        while True:
            self._skip_blank(newlines=True)
            if not self._peek():
                return
            if self._peek() == "[":
                table = self._header()
            else:
                self._keyval(table)
            self._skip_blank(newlines=False)
            if self._peek() == "#":
                self._skip_to_line_end()
            if self._peek() not in ("", "\r", "\n"):
                raise _Stop

    def _header(self) -> Path:
        start = self._i
        is_array = self._peek(2) == "[["
        self._i += 2 if is_array else 1
        self._skip_blank(newlines=False)
        keys = [k for k, _ in self._key()]
        self._skip_blank(newlines=False)
        self._expect("]]" if is_array else "]")
        # An earlier [[a]] makes a later [a.b] or [[a.b]] belong to a's last element.
        path: Path = ()
        for key in keys[:-1]:
            path = (*path, key)
            if path in self._aot_counts:
                path = (*path, self._aot_counts[path] - 1)
            self._values.setdefault(path, start)
        path = (*path, keys[-1])
        self._values.setdefault(path, start)
        self._defined(path, start)
        if not is_array:
            self._headers.add(path)
        else:
            count = self._aot_counts.get(path, 0)
            self._aot_counts[path] = count + 1
            path = (*path, count)
            self._values[path] = start
        return path

    def _keyval(self, table: Path) -> None:
        parts = self._key()
        self._defined((*table, *(key for key, _ in parts)), parts[0][1])
        path = table
        for key, offset in parts:
            path = (*path, key)
            self._keys.setdefault(path, offset)
            self._values.setdefault(path, offset)  # dotted-key tables start at their key
        self._skip_blank(newlines=False)
        self._expect("=")
        self._skip_blank(newlines=False)
        self._value(path)

    def _key(self) -> list[tuple[str, int]]:
        parts = []
        while True:
            self._skip_blank(newlines=False)
            start = self._i
            if self._peek() == '"':
                parts.append((self._basic_string(), start))
            elif self._peek() == "'":
                parts.append((self._literal_string(), start))
            elif match := BARE_KEY.match(self._text, self._i):
                parts.append((match.group(), start))
                self._i = match.end()
            else:
                raise _Stop
            self._skip_blank(newlines=False)
            if self._peek() != ".":
                return parts
            self._i += 1

    def _value(self, path: Path) -> None:
        self._values[path] = self._i
        if self._peek(3) in ('"""', "'''"):
            self._multiline_string(self._peek(3))
        elif self._peek() == '"':
            self._basic_string()
        elif self._peek() == "'":
            self._literal_string()
        elif self._peek() == "[":
            self._array(path)
        elif self._peek() == "{":
            self._inline_table(path)
        else:
            start = self._i
            while (c := self._peek()) and c not in _SCALAR_END:
                self._i += 1
            if self._i == start:
                raise _Stop

    def _array(self, path: Path) -> None:
        self._i += 1
        index = 0
        while True:
            self._skip_blank(newlines=True)
            if self._peek() == "]":
                self._i += 1
                return
            self._value((*path, index))
            index += 1
            self._skip_blank(newlines=True)
            if self._peek() == ",":
                self._i += 1
            else:
                self._expect("]")
                return

    def _inline_table(self, path: Path) -> None:
        self._i += 1
        while True:
            self._skip_blank(newlines=True)
            if self._peek() == "}":
                self._i += 1
                return
            self._keyval(path)
            self._skip_blank(newlines=True)
            if self._peek() == ",":
                self._i += 1
            else:
                self._expect("}")
                return

    def _basic_string(self) -> str:
        """Skip a one-line "..." string and return its decoded text (keys need it)."""
        self._i += 1
        out = []
        while (c := self._peek()) != '"':
            if c in ("", "\n"):
                raise _Stop
            self._i += 1
            if c == "\\":
                out.append(self._escape())
            else:
                out.append(c)
        self._i += 1
        return "".join(out)

    def _escape(self) -> str:
        c = self._peek()
        self._i += 1
        if c in _ESCAPES:
            return _ESCAPES[c]
        digits = _HEX_ESCAPE_DIGITS.get(c)
        if digits is None:
            raise _Stop
        code = self._peek(digits)
        self._i += digits
        try:
            return chr(int(code, 16))
        except ValueError as exc:
            raise _Stop from exc

    def _literal_string(self) -> str:
        end = self._text.find("'", self._i + 1)
        if end < 0 or "\n" in self._text[self._i : end]:
            raise _Stop
        text = self._text[self._i + 1 : end]
        self._i = end + 1
        return text

    def _multiline_string(self, quotes: str) -> None:
        self._i += 3
        while self._peek(3) != quotes:
            if not self._peek():
                raise _Stop
            # In """ strings a backslash escapes the next character, even a quote.
            self._i += 2 if quotes == '"""' and self._peek() == "\\" else 1
        self._i += 3
        # Up to two quotes may end the content right before the closing delimiter.
        for _ in range(2):
            if self._peek() == quotes[0]:
                self._i += 1
