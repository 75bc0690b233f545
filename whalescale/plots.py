"""matplotlib, an optional dependency (the `plots` extra): only `whalescale bench multipath`
and the simulations' `--plot` draw anything, so a node does not install it."""

from __future__ import annotations

import importlib.util
from typing import Any

INSTALL_HINT = "pip install 'whalescale[plots]'"
MESSAGE = f"the plots need matplotlib, which is not installed: {INSTALL_HINT}"


class PlotsUnavailable(ImportError):
    """matplotlib is missing; str() says how to install it."""


def missing() -> str | None:
    """None when matplotlib can be imported, else the message saying how to install it.
    For commands that plot only at the end of a long run, to refuse before it starts."""
    return MESSAGE if importlib.util.find_spec("matplotlib") is None else None


def pyplot() -> Any:
    """matplotlib.pyplot with the non-interactive Agg backend; PlotsUnavailable when
    matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise PlotsUnavailable(MESSAGE) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
