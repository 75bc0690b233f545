"""`whalescale status` tables: what a person reads about each multipath path."""

from __future__ import annotations

from rich.console import Console

from whalescale.agent.show import _print_paths


def path(pid: int, remote: str, backup: bool) -> dict:
    return {"id": pid, "local": "10.0.0.1:51820", "remote": remote, "state": "healthy",
            "backup": backup, "weight": 2_500_000, "srtt_ms": 12.5, "loss": 0.0, "mtu": 1440,
            "tx_bytes": 1_000_000, "rx_bytes": 2_000}


def test_a_backup_path_says_so_beside_its_state():
    console = Console(record=True, width=200)
    mp = {"scheduler": "wrr", "mtu": 1428,
          "paths": [path(0, "10.0.0.2:51820", False), path(1, "10.0.1.2:51820", True)],
          "reorder": {"released": 5, "gaps_skipped": 0, "late_drops": 0, "max_depth": 1,
                      "added_delay_mean_ms": 0.1, "added_delay_max_ms": 0.2}}
    _print_paths(console, "bravo", mp)
    rows = [line for line in console.export_text().splitlines() if ":51820 ->" in line]
    assert "healthy (backup)" in rows[1] and "backup" not in rows[0]
    assert "20.0 Mbit/s" in rows[0] and "12.5 ms" in rows[0]
