"""Shared fixtures: `lab` gives each test a fresh multi-node lab and always tears it down."""

from collections.abc import Iterator

import pytest

from whalescale.lab import Lab, lab_available


@pytest.fixture
def lab_skip_reason() -> None:
    """Skip a test that makes its own lab (e.g. in a subprocess) where none can run."""
    reason = lab_available()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def lab(lab_skip_reason: None) -> Iterator[Lab]:
    """A fresh `Lab` with its own namespace prefix; skips where the lab cannot run."""
    with Lab() as fresh:
        yield fresh
