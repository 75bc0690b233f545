"""Debian's nebula (1.6.1) on lab hosts: the reference VPN of the NAT matrix (issue 7).

Lighthouses double as relays (`relay.am_relay`); every other node lists them as its
lighthouses and relays, punches (`punchy.punch`) and answers punches (`punchy.respond`).
Certificates come from `nebula-cert` into the lab's temporary directory. Configs are
written as JSON, which is YAML too, so no YAML writer is needed. Processes are stopped
by their own process group (`Proc.stop`) in `stop`, and by the lab's teardown anyway.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from .errors import LabError
from .lab import Lab
from .netns import Host
from .proc import Proc, run

TUNNEL_PREFIX = "100.97.0."
TUNNEL_PREFIXLEN = 24
TUN_DEV = "nebula1"
START_TIMEOUT_S = 10.0
# Seconds between a node's address reports to its lighthouses (nebula's default is 10).
LIGHTHOUSE_INTERVAL_S = 10


@dataclass
class NebulaNode:
    """One nebula process: its host, overlay address and, for lighthouses, the public
    "IP:port" the other nodes find it at."""

    name: str
    host: Host
    tunnel_addr: str
    lighthouse_endpoint: str | None = None
    proc: Proc | None = None

    @property
    def lighthouse(self) -> bool:
        return self.lighthouse_endpoint is not None


class NebulaMesh:
    """Nebula nodes on a lab, all listening on `port` (the matrix reuses the port the
    gateways' DNAT and miniupnpd expect)."""

    def __init__(self, lab: Lab, port: int) -> None:
        self.lab = lab
        self.port = port
        self.nodes: dict[str, NebulaNode] = {}
        # A directory of its own: a lab may hold several nebula meshes in turn, each with
        # its own CA (nebula-cert refuses to overwrite one).
        self.dir = Path(tempfile.mkdtemp(prefix="nebula-", dir=lab.tempdir))
        self._ca_made = False

    def add_lighthouse(self, host: Host, public_addr: str) -> NebulaNode:
        """A lighthouse and relay at `public_addr` (a static address on the internet)."""
        return self._add(host, f"{public_addr}:{self.port}")

    def add_node(self, host: Host) -> NebulaNode:
        """A node with no known address: it reports its own to the lighthouses."""
        return self._add(host, None)

    def _add(self, host: Host, endpoint: str | None) -> NebulaNode:
        node = NebulaNode(host.name, host, f"{TUNNEL_PREFIX}{len(self.nodes) + 1}", endpoint)
        self.nodes[host.name] = node
        return node

    def _cert(self, node: NebulaNode) -> tuple[Path, Path]:
        if not self._ca_made:
            run(["nebula-cert", "ca", "-name", "whalescale-lab", "-duration", "24h",
                 "-out-crt", str(self.dir / "ca.crt"), "-out-key", str(self.dir / "ca.key")])
            self._ca_made = True
        crt, key = self.dir / f"{node.name}.crt", self.dir / f"{node.name}.key"
        run(["nebula-cert", "sign", "-ca-crt", str(self.dir / "ca.crt"),
             "-ca-key", str(self.dir / "ca.key"), "-name", node.name,
             "-ip", f"{node.tunnel_addr}/{TUNNEL_PREFIXLEN}",
             "-out-crt", str(crt), "-out-key", str(key)])
        return crt, key

    def config(self, node: NebulaNode, crt: Path, key: Path) -> dict[str, object]:
        """Nebula's settings for `node` (keys as in nebula 1.6's examples/config.yml)."""
        lighthouses = [n for n in self.nodes.values() if n.lighthouse]
        allow_all = [{"port": "any", "proto": "any", "host": "any"}]
        return {
            "pki": {"ca": str(self.dir / "ca.crt"), "cert": str(crt), "key": str(key)},
            "static_host_map": {n.tunnel_addr: [n.lighthouse_endpoint] for n in lighthouses},
            "lighthouse": {
                "am_lighthouse": node.lighthouse,
                "interval": LIGHTHOUSE_INTERVAL_S,
                "hosts": [] if node.lighthouse else [n.tunnel_addr for n in lighthouses],
            },
            # "[::]" listens on IPv4 and IPv6, so IPv6 nodes can use their IPv6 path.
            "listen": {"host": "[::]", "port": self.port},
            "punchy": {"punch": True, "respond": True},
            "relay": {
                "am_relay": node.lighthouse,
                "use_relays": not node.lighthouse,
                "relays": [] if node.lighthouse else [n.tunnel_addr for n in lighthouses],
            },
            "tun": {"dev": TUN_DEV, "mtu": 1300},
            "logging": {"level": "info"},
            "firewall": {"outbound": allow_all, "inbound": allow_all},
        }

    def prepare(self) -> None:
        """Certificates and a config file for every node (nothing runs yet)."""
        for node in self.nodes.values():
            crt, key = self._cert(node)
            self._config_path(node).write_text(json.dumps(self.config(node, crt, key), indent=2))

    def _config_path(self, node: NebulaNode) -> Path:
        return self.dir / f"{node.name}.yml"

    def start_all(self, names: Collection[str] | None = None) -> None:
        """Start every node (or those named) without waiting, lighthouses first (`prepare`
        first)."""
        chosen = [n for n in self.nodes.values() if names is None or n.name in names]
        for node in sorted(chosen, key=lambda n: not n.lighthouse):
            node.proc = node.host.spawn("nebula", "-config", str(self._config_path(node)),
                                        log_path=self.dir / f"{node.name}.log")

    def wait_up(self, names: Collection[str] | None = None,
                timeout: float = START_TIMEOUT_S) -> None:
        """Raise unless every node (or those named) has brought its interface up within
        `timeout`."""
        for node in self.nodes.values():
            if names is not None and node.name not in names:
                continue
            assert node.proc is not None
            if not node.proc.wait_for_log(r"Nebula interface is active", timeout):
                raise LabError(f"nebula {node.name} did not start:\n{node.proc.log()[-2000:]}")

    def stop(self) -> None:
        """Stop every nebula process by its own process group."""
        for node in self.nodes.values():
            if node.proc is not None:
                node.proc.stop()
                node.proc = None
