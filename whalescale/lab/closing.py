"""What every lab object that owns namespaces or processes shares: `close()` on the way
out of a `with` block, whether it ends normally, by an exception or by Ctrl-C."""

from __future__ import annotations

from typing import Self


class Closing:
    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
