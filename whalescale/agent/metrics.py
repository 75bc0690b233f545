"""Prometheus metrics, off unless the node's mesh entry names `metrics = "IP:port"`.

A collector reads the agent's counters at scrape time, so the hot path pays
nothing for metrics. prometheus-client serves them from its own thread; the
counters it reads are plain ints and Counters that only ever grow.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

if TYPE_CHECKING:
    from .agent import Agent


class AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def collect(self) -> Iterator[Metric]:
        agent = self._agent
        engine = agent.engine
        peers = list(engine.peers.values())
        yield GaugeMetricFamily("whalescale_peers", "Peers in the mesh file", value=len(peers))
        yield GaugeMetricFamily("whalescale_sessions", "Peers with a current session",
                                value=sum(p.current is not None for p in peers))
        handshakes = CounterMetricFamily("whalescale_handshakes", "Handshakes by outcome",
                                         labels=["outcome"])
        for outcome in ("completed", "timed_out"):
            handshakes.add_metric([outcome], engine.handshakes[outcome])
        yield handshakes
        for name, doc, attr in (
            ("whalescale_peer_rx_bytes", "Bytes received from a peer", "rx_bytes"),
            ("whalescale_peer_tx_bytes", "Bytes sent to a peer", "tx_bytes"),
            ("whalescale_peer_rx_packets", "Datagrams received from a peer", "rx_packets"),
            ("whalescale_peer_tx_packets", "Datagrams sent to a peer", "tx_packets"),
        ):
            family = CounterMetricFamily(name, doc, labels=["peer"])
            for peer in peers:
                family.add_metric([peer.name], getattr(peer, attr))
            yield family
        drops = CounterMetricFamily("whalescale_drops", "Datagrams and packets dropped, by reason",
                                    labels=["reason"])
        for reason, count in sorted(agent.drops().items()):
            drops.add_metric([reason], count)
        yield drops
        gossip = CounterMetricFamily("whalescale_gossip_records",
                                     "Gossip records and messages, by outcome",
                                     labels=["outcome"])
        for outcome, count in sorted(agent.gossip_counters().items()):
            gossip.add_metric([outcome], count)
        yield gossip


def serve(agent: Agent, host: str, port: int) -> None:
    """Start the metrics endpoint in prometheus-client's own thread."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(AgentCollector(agent))
    start_http_server(port, addr=host, registry=registry)
