"""A status as the agent's control socket reports it, with what broke the old tables:
a long peer name, IPv6 endpoints rich read as markup or emoji, a multipath peer."""

from __future__ import annotations

from typing import Any

LONG_NAME = "bravo-la-datacenter-rack-7-very-long-hostname"
IPV6_ENDPOINT = "[2001:db8:ffff:1234::3]:51820"  # ":1234:" is an emoji code to rich
SHORT_IPV6 = "[fd00::1]:51820"  # "[fd00::1]" is a markup tag to rich


def peer(name: str, endpoint: str | None, path: str | None, **fields: Any) -> dict[str, Any]:
    return {"name": name, "kind": "whalescale", "anchor": False, "endpoint": endpoint,
            "path": path, "session": path is not None, "reachable": path is not None,
            "last_handshake_s_ago": 3.2 if path else None,
            "last_received_s_ago": 1.0 if path else None, "rx_bytes": 123456,
            "tx_bytes": 654321, "rx_packets": 100, "tx_packets": 200, "record_seq": 4,
            "multipath": None} | fields


MULTIPATH = {
    "scheduler": "wrr", "active": True, "mtu": 1428,
    "paths": [{"id": 0, "local": "[fd00::2]:51820", "remote": SHORT_IPV6, "state": "healthy",
               "backup": False, "weight": 2_500_000, "srtt_ms": 12.5, "min_rtt_ms": 11.0,
               "loss": 0.0, "mtu": 1440, "tx_packets": 10, "tx_bytes": 1_000_000,
               "rx_packets": 2, "rx_bytes": 2_000}],
    "reorder": {"held": 1, "released": 5, "gaps_skipped": 0, "late_drops": 0, "duplicates": 0,
                "max_depth": 1,
                "added_delay_mean_ms": 0.1, "added_delay_max_ms": 0.2},
}


def sample_status() -> dict[str, Any]:
    return {
        "node": "alpha", "port": 51820, "anchor": False, "version": "0.1.0",
        "fingerprint": "abcd-efgh",
        "interface": "ws0",
        "anchors": {"health": "only one anchor reachable", "reachable": ["anchor1"],
                    "total": 2},
        "peers": [peer("anchor1", "192.0.2.1:51820", "direct", anchor=True),
                  peer(LONG_NAME, IPV6_ENDPOINT, "ipv6"),
                  peer("charlie", SHORT_IPV6, "lan", multipath=MULTIPATH),
                  peer("delta", IPV6_ENDPOINT, None)],  # never reached
        "warnings": ["only one anchor reachable: run at least two anchors"],
        "gossip": {}, "handshakes": {"completed": 3}, "cookie_replies": {},
        "published": [IPV6_ENDPOINT, "198.51.100.7:51820"],
        "addresses": ["10.0.0.5/24", "2001:db8:ffff:1234::5/64"],
        "nat": {"nat_type": "cone", "observed": "198.51.100.7:51820", "port_preserved": True,
                "anchors_answered": 1, "port_mapping": None, "port_mapping_protocol": None,
                "candidates": [], "anchors_reachable": ["anchor1"],
                "peers": {LONG_NAME: {"punch": "punching", "relay": None}},
                "relay_channels": None, "counters": {}},
        "drops": {"replay": 2},
        "firewall": {"active": True, "default": "allow",
                     "rules": [{"index": 0, "rule": "allow from laptops tcp port 22", "drops": 0},
                               {"index": 1, "rule": "deny from kids any", "drops": 7}],
                     "default_drops": 0, "malformed_drops": 0, "flows": 3,
                     "flows_evicted": 0},
        "exit": {"via": None, "kill_switch": False, "offer": False, "table": None, "dns": []},
    }
