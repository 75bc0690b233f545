"""Prometheus metrics, off unless the node's mesh entry names `metrics = "IP:port"`.

prometheus-client serves them from its own thread. That thread never touches the
node itself: at each scrape it asks the event loop for the agent's status (the
same data `whalescale status --json` shows) via trio.from_thread, so a scrape is
fresh, never races the node, and shows nothing the status does not. `families`
turns one status into metric families; `stop` shuts the server down.

Labels stay bounded: a peer's name, a multipath path's id, and small fixed sets
(an outcome, a drop reason, a path kind, a NAT type). Never an address or a port:
those change as nodes move and would grow the series without end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

import trio
from prometheus_client import start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

Status = dict[str, Any]

_PEER_COUNTERS = (
    ("rx_bytes", "Bytes received from a peer"),
    ("tx_bytes", "Bytes sent to a peer"),
    ("rx_packets", "Datagrams received from a peer"),
    ("tx_packets", "Datagrams sent to a peer"),
)
_PATH_COUNTERS = (
    ("rx_bytes", "Bytes received on a multipath path"),
    ("tx_bytes", "Bytes sent on a multipath path"),
    ("rx_packets", "Datagrams received on a multipath path"),
    ("tx_packets", "Datagrams sent on a multipath path"),
)
_REORDER_COUNTERS = (
    ("released", "Packets the reorder buffer released in order"),
    ("gaps_skipped", "Gaps the reorder buffer gave up waiting for"),
    ("late_drops", "Packets that came after their gap was skipped, dropped"),
    ("duplicates", "Duplicate packets the reorder buffer dropped"),
)


def _counter(name: str, doc: str, label: str, values: dict[str, int]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, count in sorted(values.items()):
        family.add_metric([key], count)
    return family


def _seconds(ms: float | None) -> float:
    return float("nan") if ms is None else ms / 1e3  # NaN: no sample yet, not zero


def families(status: Status) -> Iterator[Metric]:
    """The metric families of one agent status (Agent.status)."""
    yield InfoMetricFamily("whalescale_build", "The agent's version",
                           value={"version": status["version"]})
    peers = status["peers"]
    yield GaugeMetricFamily("whalescale_peers", "Peers in the mesh file", value=len(peers))
    yield GaugeMetricFamily("whalescale_sessions", "Peers with a current session",
                            value=sum(p["session"] for p in peers))
    yield from _peer_families(peers)
    yield from _multipath_families(peers)
    anchors = status["anchors"]
    yield GaugeMetricFamily("whalescale_anchors", "Other anchors in the mesh file",
                            value=anchors["total"])
    yield GaugeMetricFamily("whalescale_anchors_reachable", "Other anchors we hear from",
                            value=len(anchors["reachable"]))
    yield from _nat_families(status["nat"])
    yield _counter("whalescale_handshakes", "Handshakes by outcome", "outcome",
                   {"completed": 0, "timed_out": 0} | status["handshakes"])
    yield _counter("whalescale_cookie_replies",
                   "Cookie replies: sent under load, accepted from a loaded peer", "direction",
                   {"sent": 0, "accepted": 0} | status["cookie_replies"])
    yield _counter("whalescale_drops", "Datagrams and packets dropped, by reason", "reason",
                   status["drops"])
    yield from _firewall_families(status.get("firewall"))
    yield _counter("whalescale_gossip_records", "Gossip records and messages, by outcome",
                   "outcome", status["gossip"])


def _firewall_families(firewall: Status | None) -> Iterator[Metric]:
    """Drops by the deciding rule's index in the node's `firewall` list (the mesh file bounds
    the set), `default` or `malformed`; and the flows of ours tracked."""
    if firewall is None:
        return
    yield _counter("whalescale_firewall_drops",
                   "Packets from the tunnel the firewall dropped, by deciding rule", "rule",
                   {str(r["index"]): r["drops"] for r in firewall["rules"]}
                   | {"default": firewall["default_drops"],
                      "malformed": firewall["malformed_drops"]})
    yield GaugeMetricFamily("whalescale_firewall_flows",
                            "Flows we sent on that the firewall tracks (their replies pass)",
                            value=firewall["flows"])


def _peer_families(peers: list[Status]) -> Iterator[Metric]:
    up = GaugeMetricFamily("whalescale_peer_up", "1 if we heard from the peer lately",
                           labels=["peer"])
    age = GaugeMetricFamily("whalescale_peer_last_handshake_age_seconds",
                            "Seconds since the last completed handshake with the peer",
                            labels=["peer"])
    path = GaugeMetricFamily("whalescale_peer_path",
                             "1 for how the peer is reached: direct, relayed, lan or ipv6",
                             labels=["peer", "kind"])
    for peer in peers:
        up.add_metric([peer["name"]], int(peer["reachable"]))
        if peer["last_handshake_s_ago"] is not None:
            age.add_metric([peer["name"]], peer["last_handshake_s_ago"])
        if peer["path"] is not None:  # none until the peer answered at an endpoint
            path.add_metric([peer["name"], peer["path"]], 1)
    yield from (up, age, path)
    for key, doc in _PEER_COUNTERS:
        family = CounterMetricFamily(f"whalescale_peer_{key}", doc, labels=["peer"])
        for peer in peers:
            family.add_metric([peer["name"]], peer[key])
        yield family


def _multipath_families(peers: list[Status]) -> Iterator[Metric]:
    multipath = [(p["name"], p["multipath"]) for p in peers if p["multipath"] is not None]
    gauges = {
        "up": GaugeMetricFamily("whalescale_path_up", "1 if the path is healthy or degraded, "
                                "0 if failed", labels=["peer", "path"]),
        "rtt": GaugeMetricFamily("whalescale_path_rtt_seconds", "Smoothed round-trip time",
                                 labels=["peer", "path"]),
        "min_rtt": GaugeMetricFamily("whalescale_path_min_rtt_seconds", "Least round-trip time",
                                     labels=["peer", "path"]),
        "loss": GaugeMetricFamily("whalescale_path_loss_ratio", "Estimated loss rate, 0 to 1",
                                  labels=["peer", "path"]),
        "mtu": GaugeMetricFamily("whalescale_path_mtu_bytes", "Path MTU found by probing",
                                 labels=["peer", "path"]),
    }
    counters = {key: CounterMetricFamily(f"whalescale_path_{key}", doc, labels=["peer", "path"])
                for key, doc in _PATH_COUNTERS}
    for name, mp in multipath:
        for path in mp["paths"]:
            labels = [name, str(path["id"])]
            gauges["up"].add_metric(labels, int(path["state"] != "failed"))
            gauges["rtt"].add_metric(labels, _seconds(path["srtt_ms"]))
            gauges["min_rtt"].add_metric(labels, _seconds(path["min_rtt_ms"]))
            gauges["loss"].add_metric(labels, path["loss"])
            gauges["mtu"].add_metric(labels, path["mtu"])
            for key, _ in _PATH_COUNTERS:
                counters[key].add_metric(labels, path[key])
    yield from gauges.values()
    yield from counters.values()
    held = GaugeMetricFamily("whalescale_reorder_held", "Packets the reorder buffer holds now",
                             labels=["peer"])
    for name, mp in multipath:
        held.add_metric([name], mp["reorder"]["held"])
    yield held
    for key, doc in _REORDER_COUNTERS:
        family = CounterMetricFamily(f"whalescale_reorder_{key}", doc, labels=["peer"])
        for name, mp in multipath:
            family.add_metric([name], mp["reorder"][key])
        yield family


def _nat_families(nat: Status) -> Iterator[Metric]:
    nat_type = GaugeMetricFamily("whalescale_nat_type",
                                 "1 for the NAT mapping type the anchors' answers show",
                                 labels=["type"])
    nat_type.add_metric([nat["nat_type"]], 1)
    yield nat_type
    mapping = GaugeMetricFamily("whalescale_nat_port_mapping",
                                "1 while the router maps our port, by protocol",
                                labels=["protocol"])
    if nat["port_mapping_protocol"] is not None:
        mapping.add_metric([nat["port_mapping_protocol"]], 1)
    yield mapping
    if nat["relay_channels"] is not None:  # an anchor: the relay sessions it carries
        yield GaugeMetricFamily("whalescale_relay_channels",
                                "Relay channels this anchor carries between two peers",
                                value=nat["relay_channels"])


class _StatusCollector(Collector):
    def __init__(self) -> None:
        self.source: Callable[[], Status] | None = None
        self.token: trio.lowlevel.TrioToken | None = None

    def collect(self) -> Iterator[Metric]:
        source, token = self.source, self.token
        if source is None or token is None:
            return  # not serving yet, or no more
        try:
            status = trio.from_thread.run_sync(source, trio_token=token)
        except trio.RunFinishedError:
            return
        yield from families(status)


class Exporter:
    def __init__(self, server: WSGIServer, thread: Thread, collector: _StatusCollector) -> None:
        self._server, self._thread, self._collector = server, thread, collector

    @classmethod
    def start(cls, host: str, port: int) -> Exporter:
        """Listen now (a busy port is an OSError at start-up, not later)."""
        collector = _StatusCollector()
        registry = CollectorRegistry(auto_describe=True)
        registry.register(collector)
        server, thread = start_http_server(port, addr=host, registry=registry)
        return cls(server, thread, collector)

    async def run(self, source: Callable[[], Status]) -> None:
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
