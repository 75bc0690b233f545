"""The version of whalescale: pyproject.toml's, the one source of it."""

from __future__ import annotations

import functools
from pathlib import Path

# Beside the package in a source tree; absent from an installed wheel.
_PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@functools.cache
def version() -> str:
    """The installed distribution's version; else, run from a checkout, pyproject's."""
    import importlib.metadata  # here: only --version, status and metrics ask, not start-up
    import tomllib

    try:
        return importlib.metadata.version("whalescale")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return tomllib.loads(_PYPROJECT.read_text())["project"]["version"]
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        # A local version label (PEP 440): never mistaken for a release.
        return "0+unknown"
