"""What went wrong in a mesh file, and where.

Every check appends a Problem instead of raising, so one run of the loader
reports every mistake in the file; the loader raises one ConfigError at the end.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Problem:
    """One mistake. line and col are 1-based; 0 means the file as a whole (unreadable).

    key_path names the value like "node[2].public_key"; array indices count from 0,
    like the entries' order in the file.
    """

    file: str
    line: int
    col: int
    key_path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        what = f"{self.key_path}: {self.message}" if self.key_path else self.message
        return f"{where}: {what}"


class ConfigError(Exception):
    """A mesh file that cannot be used; str() gives one line per problem."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems)
        self.problems = sorted(problems, key=lambda p: (p.line, p.col, p.key_path))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)
