"""Whalescale and wireguard-go nodes on lab hosts, and the mesh file that joins them.

Used by the tests, `whalescale lab demo` and the benchmarks, so a scenario
is written once. Every process runs inside a lab namespace and is stopped by
the lab's teardown.
"""

from __future__ import annotations

import compileall
import json
import re
import secrets
import sys
import time
from pathlib import Path

import attrs

from ..identity import Identity, b64, write_key_file
from .lab import Lab
from .netns import Host
from .proc import Proc

DEFAULT_PORT = 51820
TUNNEL_PREFIX = "100.96.0."
TUNNEL_PREFIX6 = "fd77:7773::"
_ESTABLISHED = re.compile(r"session with (\S+) established via \S+ \((as \w+)(?:, ([\d.]+) ms)?")


@attrs.define
class MeshNode:
    """A whalescale node: a lab host, its key and tunnel address, its agent process."""

    name: str
    host: Host
    identity: Identity
    key_path: Path
    tunnel_addr: str
    tunnel_addr6: str
    anchor: bool = False
    proc: Proc | None = None
    # False for a node without a reachable address of its own (behind NAT): the mesh file
    # lists no endpoint for it and peers learn one when it contacts them.
    static_endpoint: bool = True
    metrics: str | None = None  # "IP:port" for its Prometheus endpoint
    # The local interfaces it may use (`interfaces = [...]`: one UDP socket per address of
    # each, for multipath); empty: the mesh file says nothing and the agent uses all.
    interfaces: tuple[str, ...] = ()
    backup_interfaces: tuple[str, ...] = ()  # used only while the others fail
    # Where its agent's `whalescale` package comes from (PYTHONPATH), when not from this
    # tree: a previous release, to show that the wire still talks to it.
    python_path: str | None = None
    # Its static endpoint "IP:port" when not its host's first address (LabMesh.endpoint).
    endpoint: str | None = None
    # More lines of its [[node]] table, TOML as written ('routes = ["10.1.0.0/24"]').
    toml_lines: list[str] = attrs.field(factory=list)

    def handshakes(self) -> list[tuple[str, str, float | None]]:
        """(peer, role, milliseconds) of each session the agent's log reports."""
        if self.proc is None:
            return []
        return [(m[1], m[2], float(m[3]) if m[3] else None)
                for m in _ESTABLISHED.finditer(self.proc.log())]

    def scrape(self) -> tuple[set[str], dict[str, float]]:
        """One scrape of its agent's Prometheus endpoint, from inside its host: the
        families (a family with nothing to show yet has no sample) and {series: value}."""
        assert self.metrics is not None, f"{self.name} serves no metrics"
        text = self.host.run(sys.executable, "-c",
                             "import sys, urllib.request; sys.stdout.write(urllib.request."
                             f"urlopen('http://{self.metrics}/metrics').read().decode())").stdout
        lines = text.splitlines()
        families = {line.split()[2] for line in lines if line.startswith("# TYPE ")}
        return families, {series: float(value) for series, value in
                          (line.rsplit(" ", 1) for line in lines if line and line[0] != "#")}


@attrs.define
class WireGuardGoNode:
    """A vanilla WireGuard peer: Debian's wireguard-go driven by `wg set`."""

    name: str
    host: Host
    ifname: str  # unique machine-wide: wireguard-go's control socket path is global
    private_key: bytes
    tunnel_addr: str
    port: int
    proc: Proc | None = None

    @property
    def public_key(self) -> bytes:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        return X25519PrivateKey.from_private_bytes(self.private_key).public_key().public_bytes_raw()

    def start(self, key_dir: Path) -> Proc:
        """Start wireguard-go, give it its key and port, bring its interface up."""
        self.proc = self.host.spawn("wireguard-go", "-f", self.ifname,
                                    env={"LOG_LEVEL": "error"})
        sock = Path(f"/var/run/wireguard/{self.ifname}.sock")
        deadline = time.monotonic() + 10
        while not sock.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"wireguard-go {self.ifname} did not start:\n"
                                   f"{self.proc.log()}")
            time.sleep(0.05)
        key_file = key_dir / f"{self.ifname}.key"
        key_file.write_text(b64(self.private_key) + "\n")
        key_file.chmod(0o600)
        self.host.run("wg", "set", self.ifname, "listen-port", str(self.port),
                      "private-key", str(key_file))
        self.host.run("ip", "addr", "add", f"{self.tunnel_addr}/32", "dev", self.ifname)
        self.host.run("ip", "link", "set", self.ifname, "mtu", "1420", "up")
        return self.proc

    def add_peer(self, public_key: bytes, tunnel_addr: str, endpoint: str) -> None:
        self.host.run("wg", "set", self.ifname, "peer", b64(public_key),
                      "allowed-ips", f"{tunnel_addr}/32", "endpoint", endpoint)
        self.host.run("ip", "route", "add", f"{tunnel_addr}/32", "dev", self.ifname)


def _compile_whalescale() -> None:
    """Byte-compile this checkout once, as installing a package does: agents started
    from a source tree under PYTHONDONTWRITEBYTECODE would each compile it again (about
    0.1 s of CPU apiece, which 14 agents starting together on 2 cores feel)."""
    compileall.compile_dir(Path(__file__).resolve().parent.parent, quiet=1)


class LabMesh:
    """A mesh of whalescale nodes (and vanilla WireGuard peers) on a lab."""

    def __init__(self, lab: Lab, port: int = DEFAULT_PORT, keepalive_s: int = 25,
                 ipv6_endpoints: bool = False) -> None:
        self.lab = lab
        self.ipv6_endpoints = ipv6_endpoints
        self.port = port
        self.keepalive_s = keepalive_s
        self.nodes: dict[str, MeshNode] = {}
        self.wireguard: dict[str, WireGuardGoNode] = {}
        self.mesh_lines: list[str] = []  # more lines of [mesh], TOML as written
        self.mesh_path = lab.tempdir / "mesh.toml"
        _compile_whalescale()

    def _next_tunnel_addr(self) -> str:
        return f"{TUNNEL_PREFIX}{len(self.nodes) + len(self.wireguard) + 1}"

    def add_node(self, host: Host, *, anchor: bool = False, tunnel_addr: str | None = None,
                 static_endpoint: bool = True, metrics: str | None = None,
                 interfaces: list[str] | tuple[str, ...] = (),
                 endpoint: str | None = None) -> MeshNode:
        identity = Identity.generate()
        key_path = self.lab.tempdir / f"{host.name}.key"
        write_key_file(key_path, identity)
        number = len(self.nodes) + len(self.wireguard) + 1
        node = MeshNode(host.name, host, identity, key_path,
                        tunnel_addr or f"{TUNNEL_PREFIX}{number}",
                        f"{TUNNEL_PREFIX6}{number:x}", anchor,
                        static_endpoint=static_endpoint, metrics=metrics,
                        interfaces=tuple(interfaces), endpoint=endpoint)
        self.nodes[host.name] = node
        return node

    def add_wireguard_go(self, host: Host, port: int | None = None) -> WireGuardGoNode:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        private = X25519PrivateKey.generate().private_bytes_raw()
        ifname = f"wg{secrets.token_hex(4)}"
        node = WireGuardGoNode(host.name, host, ifname, private, self._next_tunnel_addr(),
                               port or self.port)
        self.wireguard[host.name] = node
        return node

    def mesh_toml(self) -> str:
        lines = ["[mesh]", 'name = "lab"', f"port = {self.port}",
                 f"keepalive_s = {self.keepalive_s}", *self.mesh_lines, ""]
        for node in self.nodes.values():
            lines += ["[[node]]", f'name = "{node.name}"',
                      f'public_key = "{node.identity.public_b64}"',
                      f'address = ["{node.tunnel_addr}", "{node.tunnel_addr6}"]',
                      *([f'endpoints = ["{node.endpoint or self.endpoint(node.host)}"]']
                        if node.static_endpoint else []),
                      *([f"interfaces = {json.dumps(list(node.interfaces))}"]
                        if node.interfaces else []),
                      *([f"backup_interfaces = {json.dumps(list(node.backup_interfaces))}"]
                        if node.backup_interfaces else []),
                      f"anchor = {'true' if node.anchor else 'false'}",
                      *([f'metrics = "{node.metrics}"'] if node.metrics else []),
                      *node.toml_lines, ""]
        for wg in self.wireguard.values():
            lines += ["[[wireguard]]", f'name = "{wg.name}"',
                      f'public_key = "{b64(wg.public_key)}"',
                      f'address = "{wg.tunnel_addr}"',
                      f'endpoint = "{wg.host.addr()}:{wg.port}"', ""]
        return "\n".join(lines)

    def endpoint(self, host: Host) -> str:
        if self.ipv6_endpoints:
            return f"[{host.addr6()}]:{self.port}"
        return f"{host.addr()}:{self.port}"

    def write_mesh(self) -> Path:
        self.mesh_path.write_text(self.mesh_toml())
        return self.mesh_path

    def status(self, name: str) -> dict:
        """`whalescale status --json` of node `name`'s agent, asked from its host."""
        node = self.nodes[name]
        return json.loads(node.host.run(sys.executable, "-m", "whalescale", "status", "--json",
                                        "--state-dir", str(self.state_dir(name))).stdout)

    def reload(self, name: str) -> None:
        """`whalescale reload` of node `name`'s agent (the mesh file as last written);
        RuntimeError if it refuses."""
        node = self.nodes[name]
        result = node.host.run(sys.executable, "-m", "whalescale", "reload", "--state-dir",
                               str(self.state_dir(name)), check=False)
        if result.returncode != 0:
            raise RuntimeError(f"reload of {name} refused: {result.stderr.strip()}")

    def state_dir(self, name: str) -> Path:
        """Node `name`'s --state-dir (its control socket, for `whalescale reload`)."""
        return self.lab.tempdir / f"state-{name}"

    def start(self, name: str, *extra: str, wrapper: tuple[str, ...] = ()) -> Proc:
        """Start node `name`'s agent; `wrapper` runs it (e.g. `setpriv` with fewer
        capabilities)."""
        node = self.nodes[name]
        # -P: `-m` would put our working directory (this tree, when run from its root)
        # before PYTHONPATH, and a previous release's node would run this code.
        safe_path = ("-P",) if node.python_path else ()
        node.proc = node.host.spawn(
            *wrapper, sys.executable, *safe_path, "-m", "whalescale", "up", str(self.mesh_path),
            "--key", str(node.key_path), "--interface", "ws0",
            "--state-dir", str(self.state_dir(name)), *extra,
            env={"PYTHONUNBUFFERED": "1",
                 **({"PYTHONPATH": node.python_path} if node.python_path else {})},
        )
        return node.proc

    def start_all(self, *extra: str) -> None:
        self.write_mesh()
        for name in self.nodes:
            self.start(name, *extra)
        for name in self.nodes:
            self.wait_up(name)

    def restart_and_time(self, name: str, pinger: str, timeout: float = 20.0) -> float | None:
        """Restart node `name`'s agent (a clean stop, then exec) while `pinger` pings its
        tunnel address every 0.1 s: seconds from the exec to the first answer (None: none
        within `timeout`). A warm pair: the rest of the mesh runs on, the restarted agent
        has its LKG cache."""
        node = self.nodes[name]
        assert node.proc is not None
        node.proc.stop()
        exec_at = time.time() + 1.0  # the prober is running (and failing) by then
        prober = self.nodes[pinger].host.spawn(
            sys.executable, "-m", "whalescale.lab.natmatrix", "first", node.tunnel_addr,
            repr(exec_at), str(timeout + 1.0))
        time.sleep(max(0.0, exec_at - time.time()))
        self.start(name)
        prober.wait_for_log(r"first reply after|no reply", timeout + 15)
        prober.stop()
        found = re.search(r"first reply after ([\d.]+) s", prober.log())
        return float(found[1]) if found else None

    def wait_up(self, name: str, timeout: float = 20.0) -> None:
        node = self.nodes[name]
        assert node.proc is not None
        if not node.proc.wait_for_log(r" up on ws0", timeout):
            raise TimeoutError(f"agent {name} did not come up:\n{node.proc.log()}")

    def start_wireguard_go(self, name: str) -> Proc:
        """Run wireguard-go with every whalescale node of the mesh as its peer."""
        wg = self.wireguard[name]
        proc = wg.start(self.lab.tempdir)
        for node in self.nodes.values():
            wg.add_peer(node.identity.x25519_public, node.tunnel_addr,
                        f"{node.host.addr()}:{self.port}")
        return proc

    def wg_show(self, name: str) -> str:
        wg = self.wireguard[name]
        return wg.host.run("wg", "show", wg.ifname, "dump").stdout
