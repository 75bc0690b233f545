"""The `whalescale` command line."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import identity
from .exits import EXIT_INVALID, EXIT_NO_AGENT, EXIT_OK, guarded
from .exits import fail as _fail
from .multipath.scheduler import SCHEDULERS
from .version import version

if TYPE_CHECKING:
    from .agent.show import Block
    from .config import Mesh
    from .config.edit import NewNode


def cmd_keygen(args: argparse.Namespace) -> int:
    ident = identity.Identity.generate()
    try:
        identity.write_key_file(args.keyfile, ident)
    except FileExistsError:
        return _fail(f"{args.keyfile}: already exists; refusing to overwrite a private key")
    except OSError as exc:
        return _fail(f"{args.keyfile}: {exc.strerror}")
    print(ident.public_b64)
    print(f"fingerprint: {identity.fingerprint(ident.public)}", file=sys.stderr)
    return EXIT_OK


def cmd_pubkey(args: argparse.Namespace) -> int:
    try:
        ident = identity.read_key_file(args.keyfile)
    except identity.InvalidKey as exc:
        return _fail(str(exc))
    print(identity.b64(ident.x25519_public if args.wireguard else ident.public))
    return EXIT_OK


def cmd_fingerprint(args: argparse.Namespace) -> int:
    key = args.key
    try:
        if Path(key).is_file():
            public = identity.read_key_file(Path(key)).public
        else:
            public = identity.decode_key(key, "public key")
            identity.x25519_public_from_ed25519(public)
    except identity.InvalidKey as exc:
        return _fail(f"{exc} (give a base64 Ed25519 public key or a private key file)")
    print(identity.fingerprint(public))
    return EXIT_OK


def _load_mesh(path: Path) -> Mesh | None:
    """The mesh file, or None after printing its problems (exit with EXIT_INVALID)."""
    from .config import ConfigError, load_mesh

    try:
        return load_mesh(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    mesh = _load_mesh(args.mesh)
    if mesh is None:
        return EXIT_INVALID
    print(f"{args.mesh}: mesh {mesh.name!r}: {len(mesh.nodes)} nodes "
          f"({sum(n.anchor for n in mesh.nodes)} anchors), "
          f"{len(mesh.wireguard)} WireGuard peers")
    for node in mesh.nodes:
        role = "anchor" if node.anchor else "node"
        addresses = ", ".join(map(str, node.addresses))
        print(f"  {role:6} {node.name:20} {identity.fingerprint(node.public_key)}  {addresses}")
    return EXIT_OK


def cmd_hosts(args: argparse.Namespace) -> int:
    from .node.tunnel_names import TunnelNames

    mesh = _load_mesh(args.mesh)
    if mesh is None:
        return EXIT_INVALID
    sys.stdout.write(TunnelNames.of(mesh).hosts_block())
    return EXIT_OK


def _new_node(args: argparse.Namespace) -> NewNode:
    """The [[node]] that `init` and `mesh add-node` describe (see `_node_arguments`)."""
    from .config.edit import NewNode

    public = identity.read_key_file(args.key).public_b64 if args.key else args.public_key
    return NewNode(args.node, public, addresses=args.address, endpoints=args.endpoint,
                   anchor=args.anchor, port=args.port, interfaces=args.interface)


def cmd_init(args: argparse.Namespace) -> int:
    from .config.edit import init_mesh

    def action() -> str:
        addresses = init_mesh(args.mesh, args.name, _new_node(args))
        return (f"wrote {args.mesh} with node {args.node} ({', '.join(addresses)}); next: "
                f"whalescale mesh add-node {args.mesh} --name NAME --key KEYFILE "
                "(or --public-key KEY)")

    return _edit(args, action, verb="not written")


def _edit(args: argparse.Namespace, action: Callable[[], str], verb: str = "not changed"
          ) -> int:
    """Run one mesh edit; every failure leaves the file as it was and says why."""
    from .config import ConfigError
    from .config.edit import EditError

    try:
        print(action())
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return _fail(f"{args.mesh}: {verb}: the edit would leave the mesh invalid")
    except (EditError, identity.InvalidKey) as exc:
        return _fail(f"{args.mesh}: {verb}: {exc}")
    except FileExistsError:
        return _fail(f"{args.mesh}: already exists; refusing to overwrite a mesh file")
    except OSError as exc:
        return _fail(f"{args.mesh}: {exc.strerror}")
    return EXIT_OK


def cmd_mesh_add_node(args: argparse.Namespace) -> int:
    from .config.edit import add_node

    def action() -> str:
        addresses = add_node(args.mesh, _new_node(args))
        return f"added node {args.node} with tunnel address {', '.join(addresses)}"

    return _edit(args, action)


def cmd_mesh_remove_node(args: argparse.Namespace) -> int:
    from .config.edit import remove_node

    return _edit(args, lambda: f"removed [[{remove_node(args.mesh, args.name)}]] {args.name}")


def cmd_mesh_set(args: argparse.Namespace) -> int:
    from .config.edit import set_value

    def action() -> str:
        set_value(args.mesh, args.key, args.value)
        return f"set {args.key} = {args.value}"

    return _edit(args, action)


def cmd_up(args: argparse.Namespace) -> int:
    import trio

    from .agent import logs
    from .agent.agent import Agent
    from .config import ConfigError, load_mesh
    from .node.exit_node import ExitChoiceError
    from .node.specs import NotInMesh

    logs.configure(args.log_format, verbose=args.verbose)  # journald's own form if stderr is it
    try:
        mesh = load_mesh(args.mesh)
        ident = identity.read_key_file(args.key)
        agent = Agent.open(mesh, ident, mesh_path=args.mesh, interface=args.interface,
                           state_dir=args.state_dir, offload=not args.no_offload,
                           scheduler=args.scheduler, exit_node=args.exit_node)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    except (identity.InvalidKey, NotInMesh, ExitChoiceError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        # Through the log, not print: under journald the line gets priority err.
        logging.getLogger("whalescale").error("cannot start: %s", exc)
        return EXIT_INVALID

    async def main() -> None:
        # The receiver opens before the agent starts: the agent logs "up" from inside
        # `start`, and a SIGTERM sent on that line must already find a handler.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM,
                                       signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(agent.run)
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if signum == signal.SIGHUP:
                        logging.getLogger("whalescale").info("%s received, reloading", name)
                        await agent.reload()
                        continue
                    logging.getLogger("whalescale").info("%s received, shutting down", name)
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(main)
    finally:
        agent.close()
        logging.getLogger("whalescale").info("node %s down", agent.me.name)
    return EXIT_OK


def cmd_reload(args: argparse.Namespace) -> int:
    from .agent import control

    try:
        reply = control.request(control.socket_path(args.state_dir), {"command": "reload"})
    except control.NoAgent as exc:
        print(f"whalescale: {exc}", file=sys.stderr)
        return EXIT_NO_AGENT
    if reply.get("ok"):
        print(reply.get("message", "reload applied"))
        return EXIT_OK
    print(reply.get("error", "reload refused"), file=sys.stderr)
    print("whalescale: reload refused; the running mesh stays as it was", file=sys.stderr)
    return EXIT_INVALID


def _ask(state_dir: Path, req: dict[str, object]) -> dict[str, object] | int:
    """One control request; an exit status when no agent answers."""
    from .agent import control

    try:
        return control.request(control.socket_path(state_dir), req,
                               timeout_s=float(req.get("timeout_s", 5)) + 5)
    except control.NoAgent as exc:
        print(f"whalescale: {exc}", file=sys.stderr)
        return EXIT_NO_AGENT


def _show_status(args: argparse.Namespace,
                 blocks: Callable[[dict[str, Any]], list[Block]],
                 keys: tuple[str, ...] | None = None) -> int:
    """The running agent's status: as JSON (only `keys` when given), or as `blocks` say
    (tables on a terminal, plain lines in a pipe)."""
    import json

    from .agent import show  # rich: imported only by the commands that print tables

    reply = _ask(args.state_dir, {"command": "status"})
    if isinstance(reply, int):
        return reply
    status = reply["status"]
    if args.json:
        print(json.dumps(status if keys is None else {k: status[k] for k in keys}, indent=2))
    else:
        show.emit(blocks(status))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from .agent import show

    return _show_status(args, show.status_blocks)


NETCHECK_KEYS = ("node", "port", "anchor", "addresses", "published", "nat")


def cmd_netcheck(args: argparse.Namespace) -> int:
    from .agent import show

    return _show_status(args, show.netcheck_blocks, NETCHECK_KEYS)


def cmd_ping(args: argparse.Namespace) -> int:
    """PEER is a name or a tunnel address; the agent says which peer that is."""
    import json

    replies = []
    for _ in range(args.count):
        reply = _ask(args.state_dir, {"command": "ping", "peer": args.peer,
                                      "timeout_s": args.timeout})
        if isinstance(reply, int):
            return reply
        replies.append(reply)
        if args.json:
            continue
        name = reply.get("peer", args.peer)
        if reply.get("ok"):
            print(f"{name}: answered via {reply['endpoint']} ({reply['path']}) "
                  f"in {reply['rtt_ms']:.2f} ms")
        else:
            print(f"{name}: {reply.get('error')}", file=sys.stderr)
    answered = sum(bool(r.get("ok")) for r in replies)
    if args.json:
        print(json.dumps({"target": args.peer,
                          "peer": next((r["peer"] for r in replies if "peer" in r), None),
                          "sent": len(replies), "answered": answered,
                          "replies": replies}, indent=2))
    return EXIT_OK if answered else EXIT_INVALID


def cmd_lab_demo(args: argparse.Namespace) -> int:
    from .lab.demo import run_demo

    return run_demo(nodes=args.nodes, seconds=args.seconds)


def _at_least_one(text: str) -> int:
    """argparse type of a count of runs."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"at least 1, not {count}")
    return count


def _with_nebula(args: argparse.Namespace) -> bool:
    """Run the nebula reference unless told not to; say so when it is not installed."""
    import shutil

    with_nebula = not args.no_nebula and shutil.which("nebula") is not None
    if not with_nebula and not args.no_nebula:
        print("whalescale: nebula is not installed (apt install nebula); whalescale only",
              file=sys.stderr)
    return with_nebula


def cmd_lab_nat_matrix(args: argparse.Namespace) -> int:
    from .lab.natmatrix import (
        EXPECTED_WHALESCALE,
        Matrix,
        medians,
        render_side_by_side,
        run_matrices,
    )

    with_nebula = _with_nebula(args)
    ours, nebula = run_matrices(with_nebula=with_nebula, alone=args.alone, runs=args.runs)
    table = render_side_by_side(medians(ours), medians(nebula) if nebula
                                else Matrix("nebula", {}))
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")
    return (EXIT_OK if all(m.paths() == EXPECTED_WHALESCALE for m in ours)
            else EXIT_INVALID)


def cmd_lab_roam(args: argparse.Namespace) -> int:
    from .lab.roam import render, run_roam

    table = render(run_roam(runs=args.runs, with_nebula=_with_nebula(args)))
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")
    return EXIT_OK


def cmd_lab_soak(args: argparse.Namespace) -> int:
    from .lab.soak import KILLED, render, run_soak

    result = run_soak(args.minutes, args.reload_every, args.restart_every)
    table = render(result)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")
    # the bar: no stall over 1 s on flows without the killed node, < 5 MiB growth
    stalls = [s for flow, s in result.longest_stall_s.items() if KILLED not in flow]
    ok = all(s is not None and s <= 1.0 for s in stalls) and all(
        growth < 5.0 for growth in result.rss_growth_mib.values())
    return EXIT_OK if ok else EXIT_INVALID


def cmd_bench_tunnel(args: argparse.Namespace) -> int:
    from .bench.tunnel import run_tunnel_bench

    return run_tunnel_bench(seconds=args.seconds, as_json=args.json, repeat=args.repeat,
                            firewall_rules=args.firewall_rules)


def cmd_bench_flood(args: argparse.Namespace) -> int:
    import json

    from .bench.flood import KINDS, render, run_flood_bench

    results = run_flood_bench(tuple(args.kind or KINDS), args.seconds, args.python_path)
    print(render(results))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return EXIT_OK


def cmd_bench_start(args: argparse.Namespace) -> int:
    from .bench.start import run_import_costs, run_start_bench

    if args.imports:
        return run_import_costs(as_json=args.json)
    return run_start_bench(runs=args.runs, idle_s=args.idle, as_json=args.json,
                           python_path=args.python_path)


def cmd_bench_multipath(args: argparse.Namespace) -> int:
    from .bench.multipath import run_multipath_bench

    return run_multipath_bench(args.out, seconds=args.seconds, scenarios=args.scenario,
                               variants=args.variant, congestion=args.congestion,
                               repeat=args.repeat)


DEFAULT_STATE_DIR = Path("/var/lib/whalescale")


def _state_dir_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                   help=f"the agent's state directory: LKG cache, control socket "
                   f"(default: {DEFAULT_STATE_DIR})")


def _node_arguments(p: argparse.ArgumentParser, name_flag: str) -> None:
    """A [[node]]'s options, for `init` (its first node) and `mesh add-node`."""
    p.add_argument(name_flag, dest="node", required=True, metavar="NAME",
                   help="the node's name ([a-z0-9-])")
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--key", type=Path, metavar="KEYFILE",
                     help="the node's private key file (only its public key is written)")
    key.add_argument("--public-key", metavar="KEY", help="the node's base64 Ed25519 public key")
    p.add_argument("--address", action="append", default=[],
                   help="tunnel address (repeat for IPv4 and IPv6); default: the next free "
                   "address of each mesh prefix")
    p.add_argument("--endpoint", action="append", default=[], help="static endpoint HOST:PORT")
    p.add_argument("--anchor", action="store_true", help="mark the node as an anchor")
    p.add_argument("--port", type=int, help="the node's UDP port, if not the mesh's")
    p.add_argument("--interface", action="append", default=[],
                   help="a local interface it may use")



class _PrintVersion(argparse.Action):
    """--version, read only when asked (importlib.metadata costs every start-up)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(f"{parser.prog} {version()}")
        parser.exit()

def _python_path_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--python-path", metavar="PATH",
                   help="the agents' PYTHONPATH, to measure another checkout's agent (run "
                   "from a directory that holds no whalescale package)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whalescale",
        description="A peer-to-peer mesh VPN: one mesh file, WireGuard-compatible sessions.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument("--version", action=_PrintVersion, nargs=0,
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("keygen", help="create a new private key file",
                       description="Write a new Ed25519 private key (mode 0600, never "
                       "overwritten); print the public key on stdout, the fingerprint on stderr.")
    p.add_argument("keyfile", type=Path, metavar="KEYFILE")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("pubkey", help="print the public key of a private key file",
                       description="Print the Ed25519 public key (the node ID, for the mesh "
                       "file), or with --wireguard the X25519 key a vanilla WireGuard peer "
                       "needs (`wg set IF peer KEY`).")
    p.add_argument("keyfile", type=Path, metavar="KEYFILE")
    p.add_argument("--wireguard", action="store_true", help="print the derived X25519 key")
    p.set_defaults(func=cmd_pubkey)

    p = sub.add_parser("fingerprint", help="print the short fingerprint of a key",
                       description="Print the fingerprint people compare over the phone: "
                       "160 bits of BLAKE2b over the Ed25519 public key, base32.")
    p.add_argument("key", metavar="KEY", help="base64 Ed25519 public key, or a private key file")
    p.set_defaults(func=cmd_fingerprint)

    p = sub.add_parser("check", help="validate a mesh file",
                       description="Validate a mesh file; print FILE:LINE:COL: problem for "
                       "every problem and exit 1, or a summary and exit 0.")
    p.add_argument("mesh", type=Path, metavar="MESH.toml")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("hosts", help="print the mesh's names as an /etc/hosts block",
                       description="Print every node's and WireGuard peer's tunnel addresses "
                       "as NAME.SUFFIX (and NAME) between '# BEGIN whalescale mesh MESH' and "
                       "'# END whalescale mesh MESH' lines, for hosts whose resolver does not "
                       "ask the agent.")
    p.add_argument("mesh", type=Path, metavar="MESH.toml")
    p.set_defaults(func=cmd_hosts)

    p = sub.add_parser("init", help="write a commented mesh file with its first node",
                       description="Write a new mesh file with every setting commented and "
                       "its first [[node]] (usually an anchor), so that `whalescale check` "
                       "accepts it; never overwrites. Add more nodes with `whalescale mesh "
                       "add-node`.")
    p.add_argument("mesh", type=Path, metavar="MESH.toml")
    p.add_argument("--name", default="home", help="the mesh's name (default: home)")
    _node_arguments(p, "--node")
    p.set_defaults(func=cmd_init)

    mesh = sub.add_parser("mesh", help="edit a mesh file, keeping its comments").add_subparsers(
        dest="mesh_command", required=True, metavar="MESH_COMMAND")
    p = mesh.add_parser("add-node", help="add a [[node]]",
                        description="Append a [[node]] entry. The edited file is checked "
                        "before it replaces the old one; comments and layout stay.")
    p.add_argument("mesh", type=Path, metavar="MESH.toml")
    _node_arguments(p, "--name")
    p.set_defaults(func=cmd_mesh_add_node)
    p = mesh.add_parser("remove-node", help="remove a [[node]] or [[wireguard]] by name",
                        description="Remove the entry with that name; the rest of the file "
                        "stays byte for byte.")
    p.add_argument("mesh", type=Path, metavar="MESH.toml")
    p.add_argument("name")
    p.set_defaults(func=cmd_mesh_remove_node)
    p = mesh.add_parser("set", help="set one value",
                        description="Set mesh.KEY, node.NAME.KEY or wireguard.NAME.KEY to a "
                        "TOML value (51821, true, '[\"192.0.2.1:51820\"]'); text that is not "
                        "TOML is taken as a string.")
    p.add_argument("mesh", type=Path, metavar="MESH.toml")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE")
    p.set_defaults(func=cmd_mesh_set)

    p = sub.add_parser("up", help="run the agent in the foreground",
                       description="Run this node's agent until SIGINT/SIGTERM. The node finds "
                       "its own entry in the mesh file by its key.")
    p.add_argument("mesh", type=Path, metavar="MESH.toml")
    p.add_argument("--key", type=Path, required=True, metavar="KEYFILE",
                   help="this node's private key file")
    p.add_argument("--interface", default="ws0", help="TUN device name (default: ws0)")
    _state_dir_argument(p)
    p.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="wrr",
                   help="multipath scheduler, for nodes with several `interfaces` "
                   "(default: wrr)")
    p.add_argument("--no-offload", action="store_true",
                   help="do not use TUN segmentation offloads (slower; for debugging)")
    p.add_argument("--exit-node", metavar="NAME",
                   help="send the default route (IPv4 and IPv6) through node NAME, which "
                   "must have exit = true; overrides the node's exit_node for this run "
                   "(--exit-node '': none, whatever the mesh file says)")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="text (default; under journald: a syslog priority, no timestamp) "
                   "or json, one object a line for log shippers")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("reload", help="make the running agent re-read its mesh file",
                       description="Ask the agent running with this state directory to apply "
                       "its mesh file anew (as SIGHUP does). Sessions to unchanged peers stay. "
                       "A bad file is refused: the running mesh stays, the problems are printed "
                       "and the exit status is 1; 2 when no agent runs there.")
    _state_dir_argument(p)
    p.set_defaults(func=cmd_reload)

    p = sub.add_parser("status", help="peers, endpoints, sessions and anchors of the agent",
                       description="Ask the running agent for its peers (endpoint, path, "
                       "last handshake, bytes), its anchors and their reachability, and its "
                       "drop counters: tables on a terminal, plain lines (one per peer and "
                       "path, never cut) in a pipe.")
    p.add_argument("--json", action="store_true",
                   help="print the agent's status as JSON (keys: see the README)")
    _state_dir_argument(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("netcheck", help="what this node learned about its connectivity",
                       description="Ask the running agent what it learned about its own "
                       "connectivity: its addresses, its NAT type and the endpoint anchors see "
                       "(from PATH_PROBE replies), its port mapping (PCP, NAT-PMP or UPnP), the "
                       "endpoints it publishes, the anchors it reaches, and which peers are "
                       "being punched or relayed.")
    p.add_argument("--json", action="store_true",
                   help="print JSON: " + ", ".join(NETCHECK_KEYS))
    _state_dir_argument(p)
    p.set_defaults(func=cmd_netcheck)

    p = sub.add_parser("ping", help="ping a peer through its session",
                       description="Send a whalescale PING to PEER inside its session and say "
                       "which path answered (direct, lan, ipv6 or relayed) and in how long. "
                       "Exit status 0 when any ping was answered, 1 when none, 2 when no "
                       "agent runs.")
    p.add_argument("peer", metavar="PEER",
                   help="the peer's name in the mesh file, or its tunnel address")
    p.add_argument("-c", "--count", type=int, default=3, help="pings to send (default 3)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: target, peer, sent, answered, replies")
    _state_dir_argument(p)
    p.set_defaults(func=cmd_ping)

    lab = sub.add_parser("lab", help="the multi-node lab on network namespaces").add_subparsers(
        dest="lab_command", required=True, metavar="LAB_COMMAND")
    p = lab.add_parser("demo", help="bring up a local mesh in namespaces, measure, tear down",
                       description="Create N nodes in their own network namespaces behind a "
                       "routing 'internet' namespace, generate keys and one mesh file, start "
                       "an agent per node, print who reaches whom, handshake times and an "
                       "iperf3 TCP figure, then remove everything. Needs root.")
    p.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    p.add_argument("--seconds", type=int, default=5, help="iperf3 duration (default 5)")
    p.set_defaults(func=cmd_lab_demo)
    p = lab.add_parser("nat-matrix", help="every pair of NAT situations, whalescale vs nebula",
                       description="Build the NAT lab (public, full cone, port-restricted cone, "
                       "symmetric, carrier-grade double NAT, a miniupnpd router, two nodes on "
                       "one LAN, two with IPv6, two anchors), run Debian's nebula and then "
                       "whalescale on it, and print for every pair: connected, the path the "
                       "lab's own counters saw (direct, lan, ipv6, relayed) and the seconds "
                       "from start to the first answered ping. Exit status 1 when a "
                       "whalescale cell is not what it should be. Needs root; about a minute.")
    p.add_argument("--out", type=Path, help="also write the table (markdown) to this file")
    p.add_argument("--no-nebula", action="store_true", help="skip the nebula reference run")
    p.add_argument("--alone", action="store_true",
                   help="then time each pair again, started alone with the anchors from cold "
                   "(what a node starting on its own host sees; about 5 more minutes)")
    p.add_argument("--runs", type=_at_least_one, default=1, metavar="N",
                   help="rounds of both VPNs in the one lab; the table shows each cell's "
                   "medians, the exit status every round's paths (default 1)")
    p.set_defaults(func=cmd_lab_nat_matrix)
    p = lab.add_parser("roam", help="roaming gaps, whalescale vs nebula",
                       description="Build one anchor and two peers behind port-restricted "
                       "NATs, run Debian's nebula and then whalescale on it, and print how "
                       "long a flow through the tunnel goes unanswered (a datagram every "
                       "0.1 s) when a peer moves, when its gateway's public address changes "
                       "and when the gateways forget their NAT state, beside the time to "
                       "the first answer. Needs root; about 90 s a run.")
    p.add_argument("--runs", type=_at_least_one, default=1,
                   help="rounds of both VPNs (medians)")
    p.add_argument("--no-nebula", action="store_true", help="whalescale only")
    p.add_argument("--out", type=Path, help="also write the table to this file")
    p.set_defaults(func=cmd_lab_roam)
    p = lab.add_parser("soak", help="a mesh under load, reloaded and with a node killed",
                       description="Two anchors and two peers behind symmetric NATs (a "
                       "relayed pair), three paced iperf3 flows for the whole run, a SIGHUP "
                       "to one agent in turn every --reload-every seconds, peer-b killed "
                       "and restarted every --restart-every seconds, sessions rekeying "
                       "under load; print each flow's longest stall and each agent's RSS "
                       "growth. Exit status 1 when a flow without peer-b stalled over 1 s "
                       "or an agent grew 5 MiB or more. Needs root; --minutes long.")
    p.add_argument("--minutes", type=float, default=30.0, help="how long (default 30)")
    p.add_argument("--reload-every", type=float, default=30.0, metavar="SECONDS",
                   help="a SIGHUP every (default 30)")
    p.add_argument("--restart-every", type=float, default=300.0, metavar="SECONDS",
                   help="peer-b killed and restarted every (default 300)")
    p.add_argument("--out", type=Path, help="also write the table to this file")
    p.set_defaults(func=cmd_lab_soak)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(
        dest="bench_command", required=True, metavar="BENCH_COMMAND")
    p = bench.add_parser("tunnel", help="whalescale vs wireguard-go vs raw veth",
                         description="iperf3 TCP through two whalescale nodes, two wireguard-go "
                         "nodes and a raw veth on the same two-namespace bench, in one run.")
    p.add_argument("--seconds", type=int, default=10, help="iperf3 duration per run")
    p.add_argument("--repeat", type=int, default=1, help="runs of each contender (median)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--firewall-rules", type=int, default=0, metavar="N",
                   help="also measure whalescale with N firewall rules on the receiving node "
                   "(N-1 deny rules for other ports, then the allow rule the flow matches), "
                   "in turn with the others")
    p.set_defaults(func=cmd_bench_tunnel)
    p = bench.add_parser("start", help="CPU time to start an agent and its idle memory",
                         description="Start a three-node mesh (one anchor, two peers) in lab "
                         "namespaces N times; for each agent, the CPU time (utime + stime) "
                         "until it logs 'up' and its RSS once the mesh has been idle; print "
                         "min/median/max. Needs root.")
    p.add_argument("--runs", type=int, default=5, metavar="N", help="meshes to start (default 5)")
    p.add_argument("--idle", type=float, default=5.0, metavar="SECONDS",
                   help="idle time before RSS is read (default 5)")
    _python_path_option(p)
    p.add_argument("--imports", action="store_true",
                   help="instead: what each of the agent's dependencies, then its own modules, "
                   "add to a fresh interpreter's RSS and CPU (no lab, no root)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_bench_start)
    p = bench.add_parser("flood", help="what a flooding host costs a live session",
                         description="A target agent with a live session, and one host that "
                         "floods its port as fast as one Python process can (valid and wrong "
                         "mac1 initiations, spoofed sources, transport data with random "
                         "indices): per flood, the session's lost pings and round trips, the "
                         "agent's CPU and memory growth, its Diffie-Hellman work, and how soon "
                         "a new node's handshake gets through. Needs root.")
    p.add_argument("--kind", action="append", choices=("init-mac1", "init-bad-mac1",
                   "init-spoofed", "data-random"), help="a flood to run (default: all)")
    p.add_argument("--seconds", type=float, default=20.0, help="per flood (default 20)")
    _python_path_option(p)
    p.add_argument("--out", type=Path, help="also write the results (JSON) to this file")
    p.set_defaults(func=cmd_bench_flood)
    p = bench.add_parser("multipath", help="multipath schedulers vs single path and MPTCP",
                         description="iperf3 TCP (and UDP) through two whalescale nodes joined "
                         "by several emulated links, per scenario (equal paths, 2:1 rates, "
                         "20 vs 200 ms RTT, a lossy path, a path that dies, a flapping path, "
                         "Wi-Fi + cellular pairs of RTT ratios 1:2 to 1:10, with jitter, "
                         "the slower path the wider, a cellular rate that changes) and "
                         "scheduler variant, with whalescale on the best single path, "
                         "plain TCP on each link and kernel MPTCP as references, and ICMP "
                         "echo RTTs idle and beside each flow. Writes report.md, "
                         "results.json and PNG plots to --out. Needs root and matplotlib "
                         "(pip install 'whalescale[plots]').")
    p.add_argument("--out", type=Path, default=Path("bench-multipath"),
                   help="folder for the report (default: ./bench-multipath)")
    p.add_argument("--seconds", type=float, default=10, help="duration of each flow")
    p.add_argument("--scenario", action="append", metavar="NAME",
                   help="run only this scenario (repeat; default: all): equal, ratio, rtt, "
                   "lossy, dies, flapping, rtt-1-2, wifi-lte, wifi-lte-jitter, rtt-1-6, "
                   "rtt-1-10, slow-wide, lte-varies")
    p.add_argument("--variant", action="append", metavar="NAME",
                   help="run only this scheduler (repeat; default: all): wrr, lowrtt, blest")
    p.add_argument("--congestion", metavar="NAME",
                   help="TCP congestion control of every flow, tunnelled or not (e.g. cubic; "
                   "default: the machine's, net.ipv4.tcp_congestion_control)")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run each scenario N times in a row (default 1); the report shows "
                   "medians and each run's goodput, results.json every run")
    p.set_defaults(func=cmd_bench_multipath)
    return parser


@guarded  # OS errors no command handled: one line and a status (exits.py)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
