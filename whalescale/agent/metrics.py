"""Prometheus metrics, off unless the node's mesh entry names `metrics = "IP:port"`.

prometheus-client serves them from its own thread. That thread never touches the
node itself: at each scrape it asks the event loop for a copy of the counters
(trio.from_thread), so a scrape is fresh and never races the node. `stop` shuts the
server down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

import trio
from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

Snapshot = dict[str, Any]


class _SnapshotCollector(Collector):
    def __init__(self) -> None:
        self.source: Callable[[], Snapshot] | None = None
        self.token: trio.lowlevel.TrioToken | None = None

    def collect(self) -> Iterator[Metric]:
        source, token = self.source, self.token
        if source is None or token is None:
            return  # not serving yet, or no more
        try:
            snap = trio.from_thread.run_sync(source, trio_token=token)
        except trio.RunFinishedError:
            return
        yield GaugeMetricFamily("whalescale_peers", "Peers in the mesh file", value=snap["peers"])
        yield GaugeMetricFamily("whalescale_sessions", "Peers with a current session",
                                value=snap["sessions"])
        handshakes = CounterMetricFamily("whalescale_handshakes", "Handshakes by outcome",
                                         labels=["outcome"])
        for outcome in ("completed", "timed_out"):
            handshakes.add_metric([outcome], snap["handshakes"].get(outcome, 0))
        yield handshakes
        for name, doc, key in (
            ("whalescale_peer_rx_bytes", "Bytes received from a peer", "rx_bytes"),
            ("whalescale_peer_tx_bytes", "Bytes sent to a peer", "tx_bytes"),
            ("whalescale_peer_rx_packets", "Datagrams received from a peer", "rx_packets"),
            ("whalescale_peer_tx_packets", "Datagrams sent to a peer", "tx_packets"),
        ):
            family = CounterMetricFamily(name, doc, labels=["peer"])
            for peer, counters in snap["per_peer"].items():
                family.add_metric([peer], counters[key])
            yield family
        drops = CounterMetricFamily("whalescale_drops", "Datagrams and packets dropped, by reason",
                                    labels=["reason"])
        for reason, count in sorted(snap["drops"].items()):
            drops.add_metric([reason], count)
        yield drops
        gossip = CounterMetricFamily("whalescale_gossip_records",
                                     "Gossip records and messages, by outcome",
                                     labels=["outcome"])
        for outcome, count in sorted(snap["gossip"].items()):
            gossip.add_metric([outcome], count)
        yield gossip


class Exporter:
    def __init__(self, server: WSGIServer, thread: Thread, collector: _SnapshotCollector) -> None:
        self._server, self._thread, self._collector = server, thread, collector

    @classmethod
    def start(cls, host: str, port: int) -> Exporter:
        """Listen now (a busy port is an OSError at start-up, not later)."""
        collector = _SnapshotCollector()
        registry = CollectorRegistry(auto_describe=True)
        registry.register(collector)
        server, thread = start_http_server(port, addr=host, registry=registry)
        return cls(server, thread, collector)

    async def run(self, source: Callable[[], Snapshot]) -> None:
        """Scrapes read `source` on this event loop while this task runs."""
        self._collector.token = trio.lowlevel.current_trio_token()
        self._collector.source = source
        try:
            await trio.sleep_forever()
        finally:
            self._collector.source = None

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
