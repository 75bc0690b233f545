"""The metric families one agent status makes (agent/metrics.py), read back through
prometheus-client's own exposition and parser, as a scraper sees them."""

from __future__ import annotations

import math

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from tests.agent.status_sample import LONG_NAME, sample_status
from whalescale.agent.metrics import families


class _Fixed:
    def __init__(self, status: dict) -> None:
        self.status = status

    def collect(self):
        return families(self.status)


def scrape(status: dict) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} as a scrape of this status would read."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(status))
    text = generate_latest(registry).decode()
    out: dict[str, dict] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_each_peer_is_up_or_not_with_its_handshake_age_and_path_kind():
    metrics = scrape(sample_status())
    up = metrics["whalescale_peer_up"]
    assert up[(("peer", "anchor1"),)] == 1 and up[(("peer", "delta"),)] == 0
    assert metrics["whalescale_peer_last_handshake_age_seconds"][(("peer", "anchor1"),)] == 3.2
    assert (("peer", "delta"),) not in metrics["whalescale_peer_last_handshake_age_seconds"]
    kinds = {dict(labels)["peer"]: dict(labels)["kind"]
             for labels in metrics["whalescale_peer_path"]}
    assert kinds == {"anchor1": "direct", LONG_NAME: "ipv6", "charlie": "lan"}  # delta: none
    assert metrics["whalescale_peer_rx_packets_total"][(("peer", "charlie"),)] == 100


def test_a_multipath_peer_has_each_paths_rtt_loss_and_mtu_and_its_reorder_buffer():
    metrics = scrape(sample_status())
    path = (("path", "0"), ("peer", "charlie"))
    assert metrics["whalescale_path_up"] == {path: 1}
    assert metrics["whalescale_path_rtt_seconds"][path] == 0.0125
    assert metrics["whalescale_path_min_rtt_seconds"][path] == 0.011
    assert metrics["whalescale_path_loss_ratio"][path] == 0.0
    assert metrics["whalescale_path_mtu_bytes"][path] == 1440
    assert metrics["whalescale_path_tx_bytes_total"][path] == 1_000_000
    assert metrics["whalescale_reorder_held"] == {(("peer", "charlie"),): 1}
    assert metrics["whalescale_reorder_released_total"] == {(("peer", "charlie"),): 5}
    assert "whalescale_reorder_late_drops_total" in metrics


def test_a_path_without_an_rtt_sample_reads_nan_not_zero():
    status = sample_status()
    charlie = next(p for p in status["peers"] if p["name"] == "charlie")
    mp = charlie["multipath"]  # the sample's shared dict: replaced, never changed in place
    charlie["multipath"] = mp | {"paths": [mp["paths"][0] | {"srtt_ms": None}]}
    rtt = scrape(status)["whalescale_path_rtt_seconds"]
    assert math.isnan(rtt[(("path", "0"), ("peer", "charlie"))])


def test_anchors_nat_handshakes_cookies_and_build_info():
    metrics = scrape(sample_status())
    assert metrics["whalescale_anchors"][()] == 2
    assert metrics["whalescale_anchors_reachable"][()] == 1
    assert metrics["whalescale_nat_type"] == {(("type", "cone"),): 1}
    assert "whalescale_nat_port_mapping" not in metrics  # the router maps nothing
    assert metrics["whalescale_handshakes_total"] == {
        (("outcome", "completed"),): 3, (("outcome", "timed_out"),): 0}
    assert metrics["whalescale_cookie_replies_total"] == {
        (("direction", "accepted"),): 0, (("direction", "sent"),): 0}
    assert metrics["whalescale_build_info"] == {(("version", "0.1.0"),): 1}
    assert "whalescale_relay_channels" not in metrics  # not an anchor


def test_an_anchor_counts_the_relay_channels_it_carries_and_a_mapping_its_protocol():
    status = sample_status()
    status["nat"] |= {"relay_channels": 2, "port_mapping": "198.51.100.7:40000",
                      "port_mapping_protocol": "pcp"}
    metrics = scrape(status)
    assert metrics["whalescale_relay_channels"][()] == 2
    assert metrics["whalescale_nat_port_mapping"] == {(("protocol", "pcp"),): 1}


def test_labels_are_names_and_ids_never_addresses():
    labels = {key for samples in scrape(sample_status()).values() for labelset in samples
              for key, _ in labelset}
    assert labels <= {"peer", "path", "kind", "type", "protocol", "outcome", "direction",
                      "reason", "version", "rule"}


def test_firewall_drops_are_counted_by_rule_index_default_or_malformed():
    metrics = scrape(sample_status())
    assert metrics["whalescale_firewall_drops_total"] == {
        (("rule", "0"),): 0, (("rule", "1"),): 7, (("rule", "default"),): 0,
        (("rule", "malformed"),): 0}
    assert metrics["whalescale_firewall_flows"][()] == 3
