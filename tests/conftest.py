"""Shared fixtures: `lab` gives each test a fresh multi-node lab and always tears it down."""

from collections.abc import Iterator

import pytest

from whalescale.lab import Lab, lab_available


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A fresh `Lab` with its own namespace prefix; skips where the lab cannot run."""
    reason = lab_available()
    if reason is not None:
        pytest.skip(reason)
    with Lab() as fresh:
        yield fresh
