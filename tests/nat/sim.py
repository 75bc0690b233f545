"""A fake internet of whole nodes: the `Node` production runs (node/node.py), fake NATs.

Each host runs one Node from one mesh file and does the I/O the agent's shell does
for it (datagrams, timers, answering FindRoutes); everything else, mesh controller
included, is the production wiring. A host may sit behind a `Nat`: "cone" keeps one
external port for every destination, "symmetric" takes a new one per destination; both filter
port-restricted (only endpoints the inside sent to get in), "full" lets anyone in.
Nodes on one named `lan` (a /24) reach each other's addresses and its broadcast address.
A node with an `ipv6` address is reached there without NAT or filtering.
"""

from __future__ import annotations

import ipaddress
import random

from whalescale.config import parse_mesh
from whalescale.identity import Identity, b64
from whalescale.nat.traversal import Traversal
from whalescale.node.effects import FindRoutes, Log, Resolve
from whalescale.node.local import Interface
from whalescale.node.node import Node
from whalescale.session.engine import Engine

from ..session.pair import ip_packet

Addr = tuple[str, int]
PORT = 51820
STEP_S = 0.05


class Nat:
    def __init__(self, public_ip: str, kind: str) -> None:
        self.public_ip, self.kind = public_ip, kind
        self._ports: dict[Addr, int] = {}  # destination -> external port
        self._allowed: set[tuple[int, Addr]] = set()  # (external port, remote)
        self._next_port = 40000

    def out(self, dest: Addr) -> Addr:
        if self.kind == "symmetric":
            if dest not in self._ports:
                self._next_port += 7
                self._ports[dest] = self._next_port
            port = self._ports[dest]
        else:
            port = PORT  # endpoint-independent and port-preserving
        self._allowed.add((port, dest))
        return (self.public_ip, port)

    def admits(self, port: int, source: Addr) -> bool:
        if self.kind == "full":
            return port == PORT
        return (port, source) in self._allowed


class Host:
    """A machine of the fake internet running one whalescale node (node/node.py)."""

    def __init__(self, net: Internet, name: str, ident: Identity, address: str, tunnel: str,
                 anchor: bool, nat: Nat | None, lan: str | None, ipv6: str | None) -> None:
        self.net, self.name, self.ident, self.lan, self.ipv6 = net, name, ident, lan, ipv6
        self.address, self.tunnel, self.anchor, self.nat = address, tunnel, anchor, nat
        self.node: Node | None = None
        self.dns_name: str | None = None
        self.delivered: list[bytes] = []
        self.log: list[str] = []
        self.toml = ""  # more lines of its [[node]] table
        self.down = False  # powered off: it neither sends nor receives

    @property
    def engine(self) -> Engine:
        assert self.node is not None
        return self.node.engine

    @property
    def traversal(self) -> Traversal:
        assert self.node is not None
        return self.node.traversal

    @property
    def local(self) -> Addr:
        return (self.address, PORT)

    def interfaces(self) -> list[Interface]:
        found: list[Interface] = [ipaddress.IPv4Interface(f"{self.address}/24")]
        if self.ipv6:
            found.append(ipaddress.IPv6Interface(f"{self.ipv6}/64"))
        return found

    def owns(self, addr: Addr) -> bool:
        if ":" in addr[0]:
            return addr == (self.ipv6, PORT)
        if self.nat is None:
            return addr == self.local
        return addr[0] == self.nat.public_ip


class Internet:
    def __init__(self, seed: int = 1) -> None:
        self.now = 0.0
        self.nodes: dict[str, Host] = {}
        self._rng = random.Random(seed)
        self._queue: list[tuple[bytes, Addr, Addr]] = []  # (datagram, source, destination)
        # DNS: an anchor added with `dns_name` is listed by that name; the shell's
        # lookups are answered from here at once, and recorded
        self.dns: dict[str, list[str]] = {}
        self.lookups: list[tuple[str, str, float]] = []  # (who, name, when)

    def add(self, name: str, address: str, *, anchor: bool = False, nat: str | None = None,
            public_ip: str | None = None, lan: str | None = None,
            ipv6: str | None = None, dns_name: str | None = None) -> Host:
        n = len(self.nodes) + 1
        host = Host(self, name, Identity.from_seed(bytes([n]) * 32), address,
                    f"100.96.0.{n}", anchor, Nat(public_ip or address, nat) if nat else None,
                    lan, ipv6)
        host.dns_name = dns_name
        if dns_name is not None:
            self.dns[dns_name] = [address]
        self.nodes[name] = host
        return host

    def mesh_text(self) -> str:
        """The mesh file every node runs: anchors list their endpoints, nobody else."""
        text = ('[mesh]\nname = "sim"\nport = 51820\nkeepalive_s = 5\n'
                'prefixes = ["100.96.0.0/16"]\n')
        for host in self.nodes.values():
            text += (f'\n[[node]]\nname = "{host.name}"\npublic_key = "{b64(host.ident.public)}"\n'
                     f'address = "{host.tunnel}"\n')
            if host.anchor:
                text += f'anchor = true\nendpoints = ["{host.dns_name or host.address}:{PORT}"]\n'
            text += host.toml
        return text

    def start(self) -> None:
        """A node on every host, all started now; anchors' endpoints are in the mesh file."""
        mesh = parse_mesh(self.mesh_text(), "sim.toml")
        for host in self.nodes.values():
            host.node = Node(mesh, host.ident, random_bytes=self._rng.randbytes)
        for host in self.nodes.values():
            self._start(host)
        self.pump()

    def restart(self, name: str, *, next_self_seq: int) -> None:
        """The host's agent starts again without its LKG cache (no cached endpoints), its
        own records' seqs from `next_self_seq` (the block a cache would reserve)."""
        host = self.nodes[name]
        host.node = Node(parse_mesh(self.mesh_text(), "sim.toml"), host.ident,
                         random_bytes=self._rng.randbytes, next_self_seq=next_self_seq)
        self._start(host)
        self.pump()

    def _start(self, host: Host) -> None:
        assert host.node is not None
        host.node.set_interfaces(host.interfaces(), self.now)
        host.node.start(self.now, wall_offset=1.8e9)

    def reload(self, name: str) -> None:
        """What SIGHUP does: the node applies its (unchanged) mesh file again."""
        node = self.nodes[name].node
        assert node is not None
        node.reload(parse_mesh(self.mesh_text(), "sim.toml"), self.now)
        self.pump()

    # ----- what the agent's shell does: I/O, here simulated -----------------------------

    def _collect(self, host: Host) -> None:
        node = host.node
        assert node is not None
        while True:
            for effect in node.effects():
                match effect:
                    case FindRoutes(targets):  # every target routes through our one address
                        node.probe([(host.address, t) for t in targets], self.now)
                    case Resolve(names):
                        for name in names:
                            self.lookups.append((host.name, name, self.now))
                            found = self.dns.get(name)
                            node.set_resolved(name, found, self.now,
                                              "" if found else "Name or service not known")
                    case Log(_, message):
                        host.log.append(message)
            host.delivered += node.packets_to_deliver()
            ready = node.datagrams_to_send()
            if not ready:
                return
            for dest, _, datagrams in ready:
                for datagram in datagrams:
                    self._route(host, datagram, dest)

    def _route(self, host: Host, datagram: bytes, dest: Addr) -> None:
        neighbours = self._on_lan(host, dest)
        if neighbours:
            self._queue += [(datagram, host.local, n.local) for n in neighbours]
            return
        if ":" in dest[0]:
            source = (host.ipv6 or "::1", PORT)
        else:
            source = host.nat.out(dest) if host.nat is not None else host.local
        self._queue.append((datagram, source, dest))

    def _on_lan(self, host: Host, dest: Addr) -> list[Host]:
        """The hosts of `host`'s LAN a datagram to `dest` reaches without leaving it."""
        if host.lan is None:
            return []
        lan = ipaddress.ip_network(f"{host.address}/24", strict=False)
        return [n for n in self.nodes.values() if n is not host and n.lan == host.lan
                and (dest == n.local or dest[0] == str(lan.broadcast_address))]

    def _deliver(self, datagram: bytes, source: Addr, dest: Addr) -> None:
        host = next((n for n in self.nodes.values() if n.owns(dest) or n.local == dest), None)
        filtered = host is not None and host.nat is not None and ":" not in dest[0] \
            and not host.nat.admits(dest[1], source)
        if host is None or filtered or host.down:
            return  # nobody there, or the NAT filters it
        assert host.node is not None
        host.node.receive_datagrams([(datagram, source)], self.now)
        self._collect(host)

    def pump(self) -> None:
        for host in self.nodes.values():
            if not host.down:
                self._collect(host)
        while self._queue:
            self._deliver(*self._queue.pop(0))

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = round(self.now + STEP_S, 6)
            for host in self.nodes.values():
                assert host.node is not None
                if host.down:
                    continue
                if (d := host.node.next_deadline()) is not None and d <= self.now:
                    host.node.handle_timer(self.now)
            self.pump()

    # ----- for assertions -------------------------------------------------------------

    def endpoint(self, name: str, of: str) -> Addr | None:
        """Where `name`'s session with `of` sends, None without a session."""
        engine = self.nodes[name].engine
        assert engine is not None
        peer = engine.peers[self.nodes[of].ident.x25519_public]
        return peer.endpoint if peer.current is not None else None

    def send(self, source: str, to: str, payload: bytes) -> None:
        node = self.nodes[source].node
        assert node is not None
        node.send_packets([ip_packet(self.nodes[source].tunnel, self.nodes[to].tunnel,
                                     payload)], self.now)
        self.pump()
