"""Many GossipNodes on a simulated clock: no sockets, one event queue (heapq).

`Network` joins nodes with links of fixed one-way delay and moves their
payloads; tests use it for scenarios and `simulate()` for the 200-node run:
every node starts knowing every record (restored from its cache), a fraction
of the nodes publishes new endpoints at t = 0, and we measure when every node's
`current()` shows every new endpoint, and how many gossip bytes that cost.

"Hops" is the longest chain of messages that each brought news to its receiver,
the gossip analogue of rounds. Bytes are gossip payloads; a real datagram adds
DATAGRAM_OVERHEAD_BYTES (WireGuard transport header and tag, UDP, IPv4).

Usage: python -m whalescale.mesh.simulate [--nodes 200 --churn 0.1 --seed 1
       --plot docs/gossip-convergence.png]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import heapq
import itertools
import random
import sys
from collections.abc import Callable, Iterable, Sequence

import attrs

from .. import plots
from ..identity import Identity
from . import records
from .gossip import GossipNode, GossipParams
from .records import EndpointRecord, GossipEndpoint, PathType

DATAGRAM_OVERHEAD_BYTES = 16 + 16 + 8 + 20
TARGET_CONVERGENCE_S = 30.0
TARGET_BYTES_PER_NODE_S = 1000.0


@attrs.define
class SimNode:
    name: str
    identity: Identity
    gossip: GossipNode
    last_seq: int = 0
    hops: int = 0  # longest chain of news that reached this node

    @property
    def id(self) -> bytes:
        return self.identity.public

    def next_seq(self) -> int:
        self.last_seq += 1
        return self.last_seq


@attrs.frozen(slots=True)
class Sent:
    time: float
    sender: str
    size: int


class Network:
    """Gossip nodes, links between them, and the payloads in flight."""

    def __init__(self, names: Sequence[str], *, seed: int = 1,
                 params: GossipParams | None = None,
                 verify_record: Callable[[EndpointRecord], bool] = records.verify) -> None:
        self.now = 0.0
        self.sent: list[Sent] = []
        self.on_news: Callable[[SimNode], None] | None = None
        self._events: list[tuple[float, int, str, tuple]] = []
        self._order = itertools.count()
        self._links: dict[tuple[str, str], float] = {}  # both directions
        self._timer_at: dict[str, float | None] = {}
        identities = {n: Identity.from_seed(hashlib.sha256(f"{seed}:{n}".encode()).digest())
                      for n in names}
        members = [i.public for i in identities.values()]
        self.nodes: dict[str, SimNode] = {}
        self._by_id: dict[bytes, SimNode] = {}
        self._new_gossip = functools.partial(GossipNode, members=members, params=params,
                                             verify_record=verify_record)
        self._seed = seed
        for name, identity in identities.items():
            node = SimNode(name, identity, None)  # type: ignore[arg-type]
            node.gossip = self._start(node)
            self.nodes[name] = node
            self._by_id[identity.public] = node
            self._timer_at[name] = None

    def _start(self, node: SimNode) -> GossipNode:
        rng = random.Random(f"{self._seed}:{node.name}:random")
        return self._new_gossip(node.identity, random_bytes=rng.randbytes,
                                next_seq=node.next_seq)

    def __getitem__(self, name: str) -> SimNode:
        return self.nodes[name]

    # ----- topology --------------------------------------------------------

    def link(self, a: str, b: str, delay_s: float = 0.05) -> None:
        self._links[a, b] = self._links[b, a] = delay_s
        self._neighbours_changed(a, b)

    def unlink(self, a: str, b: str) -> None:
        self._links.pop((a, b), None)
        self._links.pop((b, a), None)
        self._neighbours_changed(a, b)

    def restart_wiped(self, name: str) -> None:
        """The node restarts with its state lost: a new GossipNode holding nothing, its seq
        counter from 1 again; its links come up again."""
        node = self.nodes[name]
        node.last_seq = 0
        node.gossip = self._start(node)
        self._timer_at[name] = None
        self._neighbours_changed(name)

    def neighbours(self, name: str) -> list[str]:
        return [b for (a, b) in self._links if a == name]

    def _neighbours_changed(self, *names: str) -> None:
        for name in names:
            node = self.nodes[name]
            node.gossip.set_neighbours({self.nodes[n].id for n in self.neighbours(name)},
                                       self.now)
            self._after_call(node)

    # ----- driving ---------------------------------------------------------

    def publish(self, name: str, endpoints: Iterable[GossipEndpoint]) -> EndpointRecord:
        node = self.nodes[name]
        record = node.gossip.publish_self(endpoints, self.now)
        node.hops = 0
        self._after_call(node)
        return record

    def call(self, name: str, action: Callable[[GossipNode, float], object]) -> object:
        """Run `action(gossip, now)` on a node (observe, receive...) and ship its output."""
        node = self.nodes[name]
        result = action(node.gossip, self.now)
        self._after_call(node)
        return result

    def run_until(self, end: float) -> None:
        while self._events and self._events[0][0] <= end:
            at, _, kind, args = heapq.heappop(self._events)
            self.now = max(self.now, at)
            if kind == "deliver":
                self._deliver(*args)
            elif self._timer_at[args[0]] == at:
                node = self.nodes[args[0]]
                self._timer_at[node.name] = None
                node.gossip.handle_timer(self.now)
                self._after_call(node)
        self.now = max(self.now, end)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def _deliver(self, to: str, sender: str, payload: bytes, hops: int) -> None:
        node = self.nodes[to]
        before = node.gossip.counters["accepted"]
        node.gossip.receive(self.nodes[sender].id, payload, self.now)
        if node.gossip.counters["accepted"] != before:
            node.hops = max(node.hops, hops + 1)
            if self.on_news is not None:
                self.on_news(node)
        self._after_call(node)

    def _after_call(self, node: SimNode) -> None:
        """Put the node's payloads on their links and its deadline in the queue."""
        outbox, node.gossip.outbox = node.gossip.outbox, []
        for to_id, payload in outbox:
            to = self._by_id[to_id].name
            self.sent.append(Sent(self.now, node.name, len(payload)))
            delay = self._links.get((node.name, to))
            if delay is not None:  # a payload for a torn-down link is lost
                self._push(self.now + delay, "deliver", (to, node.name, payload, node.hops))
        deadline = node.gossip.next_deadline()
        if deadline is not None and deadline != self._timer_at[node.name]:
            self._timer_at[node.name] = deadline
            self._push(max(deadline, self.now), "timer", (node.name,))

    def _push(self, at: float, kind: str, args: tuple) -> None:
        heapq.heappush(self._events, (at, next(self._order), kind, args))


# ----- the churn experiment ---------------------------------------------------

@attrs.frozen
class Result:
    nodes: int
    churned: int
    seed: int
    convergence_s: float | None  # when the last node saw every new endpoint
    hops: int  # longest chain of news hops to the last converged node
    converged_at: tuple[float, ...]  # per node, sorted (inf if never)
    duration_s: float
    bytes_per_node_s_first_30s: float
    bytes_per_node_s_steady: float  # from 30 s to the end: anti-entropy
    peak_bytes_per_node_s: float  # the busiest 1 s bin, averaged over nodes
    busiest_node_bytes_s_first_30s: float
    messages_per_node_s_first_30s: float
    bins_bytes_per_node_s: tuple[float, ...]  # per 1 s from t = 0
    counters: dict[str, int]


def _endpoint(rng: random.Random) -> GossipEndpoint:
    return GossipEndpoint(f"203.0.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                          rng.randrange(1024, 65536), PathType.IPV4)


def build_topology(names: Sequence[str], rng: random.Random, *, degree: int, anchors: int,
                   anchor_fraction: float) -> list[tuple[str, str]]:
    """Each node links to random others until it has `degree` neighbours; each anchor
    also links to `anchor_fraction` of all nodes, and the anchors to one another."""
    links: set[tuple[str, str]] = set()
    nbrs: dict[str, set[str]] = {n: set() for n in names}

    def add(a: str, b: str) -> None:
        if a != b and b not in nbrs[a]:
            nbrs[a].add(b)
            nbrs[b].add(a)
            links.add((min(a, b), max(a, b)))

    anchor_names, others = list(names[:anchors]), list(names[anchors:])
    for a in anchor_names:
        for b in rng.sample(others, int(anchor_fraction * len(names))):
            add(a, b)
        for b in anchor_names:
            add(a, b)
    for name in others:
        while len(nbrs[name]) < degree:
            add(name, rng.choice(others))
    return sorted(links)


def simulate(nodes: int = 200, churn: float = 0.1, seed: int = 1, *, degree: int = 8,
             anchors: int = 2, anchor_fraction: float = 0.3, min_delay_s: float = 0.02,
             max_delay_s: float = 0.08, duration_s: float = 900.0,
             params: GossipParams | None = None) -> Result:
    rng = random.Random(seed)
    names = [f"anchor{i}" for i in range(anchors)] + [f"n{i}" for i in range(nodes - anchors)]
    # Each distinct record is verified once per run instead of once per node: the
    # outcome is the same, the run is faster.
    net = Network(names, seed=seed, params=params,
                  verify_record=functools.lru_cache(maxsize=None)(records.verify))
    # Before t = 0 every node knows every record (its LKG cache) and its links.
    initial = [records.sign_self(node.identity, [_endpoint(rng)], node.next_seq())
               for node in net.nodes.values()]
    for node in net.nodes.values():
        node.gossip.restore(initial)
    net.now = -60.0
    for a, b in build_topology(names, rng, degree=degree, anchors=anchors,
                               anchor_fraction=anchor_fraction):
        net.link(a, b, rng.uniform(min_delay_s, max_delay_s))
    net.run_until(0.0)
    net.sent.clear()
    for node in net.nodes.values():
        node.gossip.counters.clear()

    # t = 0: churn.
    churned = rng.sample(names, max(1, round(churn * nodes)))
    targets = {net[n].id: net.publish(n, [_endpoint(rng), _endpoint(rng)]) for n in churned}
    converged_at: dict[str, float] = {}
    hops_at_end = [0]

    def check(node: SimNode) -> None:
        if node.name in converged_at:
            return
        if all(node.gossip.current(p) == r for p, r in targets.items()):
            converged_at[node.name] = net.now
            hops_at_end[0] = max(hops_at_end[0], node.hops)

    net.on_news = check
    for node in net.nodes.values():
        check(node)
    net.run_until(duration_s)

    times = sorted(converged_at.get(n, float("inf")) for n in names)
    convergence = times[-1] if times[-1] != float("inf") else None
    bins = [0.0] * int(duration_s)
    per_node_30: dict[str, int] = dict.fromkeys(names, 0)
    first_30 = messages_30 = steady = 0
    for s in net.sent:
        bins[min(int(s.time), len(bins) - 1)] += s.size / nodes
        if s.time < TARGET_CONVERGENCE_S:
            first_30 += s.size
            messages_30 += 1
            per_node_30[s.sender] += s.size
        else:
            steady += s.size
    counters: dict[str, int] = {}
    for node in net.nodes.values():
        for k, v in node.gossip.counters.items():
            counters[k] = counters.get(k, 0) + v
    return Result(
        nodes=nodes, churned=len(churned), seed=seed, convergence_s=convergence,
        hops=hops_at_end[0], converged_at=tuple(times), duration_s=duration_s,
        bytes_per_node_s_first_30s=first_30 / nodes / TARGET_CONVERGENCE_S,
        bytes_per_node_s_steady=steady / nodes / (duration_s - TARGET_CONVERGENCE_S),
        peak_bytes_per_node_s=max(bins),
        busiest_node_bytes_s_first_30s=max(per_node_30.values()) / TARGET_CONVERGENCE_S,
        messages_per_node_s_first_30s=messages_30 / nodes / TARGET_CONVERGENCE_S,
        bins_bytes_per_node_s=tuple(bins), counters=dict(sorted(counters.items())))


def report(result: Result) -> str:
    conv = "never" if result.convergence_s is None else f"{result.convergence_s:.2f} s"
    return "\n".join([
        f"nodes {result.nodes}, churn {result.churned} nodes at t=0, seed {result.seed}",
        f"  converged (every node sees every new endpoint): {conv}, {result.hops} rounds "
        "(hops: the longest chain of messages that carried news)",
        f"  half the nodes by {result.converged_at[len(result.converged_at) // 2]:.2f} s",
        f"  gossip bytes/node/s, first 30 s: {result.bytes_per_node_s_first_30s:.0f}"
        f" (busiest node {result.busiest_node_bytes_s_first_30s:.0f}),"
        f" peak 1 s: {result.peak_bytes_per_node_s:.0f}",
        f"  with datagram overhead, first 30 s: {result.bytes_per_node_s_first_30s + DATAGRAM_OVERHEAD_BYTES * result.messages_per_node_s_first_30s:.0f}",  # noqa: E501
        f"  steady state (30 s..{result.duration_s:.0f} s, anti-entropy):"
        f" {result.bytes_per_node_s_steady:.2f} bytes/node/s",
        f"  counters: {result.counters}",
    ])


def plot(result: Result, path: str) -> None:
    plt = plots.pyplot()  # matplotlib, lazily: only the plot needs it (the `plots` extra)

    horizon = 30
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    times = [t for t in result.converged_at if t <= horizon]
    top.step([0.0, *times], [i / result.nodes for i in range(len(times) + 1)], where="post")
    top.set_ylabel("fraction of nodes converged")
    top.set_ylim(0, 1.05)
    top.set_title(f"{result.nodes} nodes, {result.churned} publish new endpoints at t = 0"
                  f" (seed {result.seed})")
    bottom.bar(range(horizon), result.bins_bytes_per_node_s[:horizon], width=1.0, align="edge")
    bottom.axhline(TARGET_BYTES_PER_NODE_S, color="red", linestyle="--", label="1 KB/s target")
    bottom.axhline(result.bytes_per_node_s_first_30s, color="green",
                   label=f"mean over 30 s: {result.bytes_per_node_s_first_30s:.0f} B/s")
    bottom.set_ylabel("gossip bytes/s per node")
    bottom.set_xlabel("simulated seconds")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m whalescale.mesh.simulate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--churn", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=900.0)
    parser.add_argument("--plot", metavar="PNG")
    args = parser.parse_args(argv)
    if args.plot and (problem := plots.missing()):
        print(f"{parser.prog}: --plot: {problem}", file=sys.stderr)
        return 2
    result = simulate(args.nodes, args.churn, args.seed, duration_s=args.duration)
    print(report(result))
    if args.plot:
        plot(result, args.plot)
        print(f"plot written to {args.plot}")
    ok = (result.convergence_s is not None and result.convergence_s < TARGET_CONVERGENCE_S
          and result.bytes_per_node_s_first_30s < TARGET_BYTES_PER_NODE_S)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
