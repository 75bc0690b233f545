"""The systemd hosts' root filesystem cache: named by its recipe, reused when present."""

from __future__ import annotations

from pathlib import Path

import pytest

from whalescale.lab import rootfs


def test_the_cache_key_follows_the_recipe_not_its_order() -> None:
    key = rootfs.recipe_key()
    assert len(key) == 16 and int(key, 16) >= 0
    assert rootfs.recipe_key(tuple(reversed(rootfs.PACKAGES))) == key
    assert rootfs.recipe_key((*rootfs.PACKAGES, "curl")) != key
    assert rootfs.recipe_key(version=rootfs.ROOTFS_VERSION + 1) != key


def test_a_cached_tree_is_used_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(rootfs.CACHE_ENV, str(tmp_path))
    tree = tmp_path / f"{rootfs.SUITE}-{rootfs.recipe_key()}"
    tree.mkdir()
    # No debootstrap runs (it would take a minute and a mirror): the tree is there.
    assert rootfs.ensure_rootfs() == tree
    assert sorted(p.name for p in tmp_path.iterdir()) == [tree.name]
