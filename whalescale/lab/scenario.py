"""Scenarios written once: TOML files in `scenarios/`, run here on the lab and, from the
same files, as NixOS VM tests (nix/tests/scenario.nix reads them with builtins.fromTOML).

A scenario names hosts by role, the network each lives on (the public "internet", or a
LAN behind a NAT gateway), which hosts are whalescale nodes, and checks to run in order.
This module loads a file into frozen records (unknown keys refused, errors name the file
and the key path), builds the topology with the `Lab` API, starts the agents through
`LabMesh`, and returns one `CheckResult` per check. The schema is described at the top of
scenarios/two-nodes.toml.

Lab specifics: hosts on the internet each get a veth to the routing "internet" namespace
(as `Lab.star` does); a LAN host gets a veth to its gateway, so a LAN holds one host here.
A NAT gateway loads scenarios/nat/<nat>.nft with @WAN@ and @LAN@ replaced by its
interface names, the same rule set the VM tests load.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import attrs
import cattrs

from .lab import Lab
from .mesh import LabMesh
from .netns import Host, Link

SCENARIO_DIR = Path(__file__).resolve().parents[2] / "scenarios"
NAT_DIR = SCENARIO_DIR / "nat"
INTERNET = "internet"
# How long a ping check keeps trying: the first packet may have to wait for a handshake.
PING_COUNT, PING_TIMEOUT_S = 5, 2.0
# How long the agent has to log the outcome of a reload after the command returns.
RELOAD_LOG_TIMEOUT_S = 5.0
# `whalescale reload` exit statuses (its contract).
RELOAD_EXIT = {"applied": 0, "refused": 1}
_POSITION = re.compile(r"^\S+:\d+:\d+: ", re.MULTILINE)


class ScenarioError(Exception):
    """A scenario file is malformed or inconsistent; the message names file and key."""


@attrs.frozen
class MeshSpec:
    port: int = 51820
    keepalive_s: int = 25


@attrs.frozen
class NodeSpec:
    address: str
    anchor: bool = False
    endpoint: bool = True  # list the host's own address as the node's static endpoint


@attrs.frozen
class HostSpec:
    name: str
    network: str
    node: NodeSpec | None = None


@attrs.frozen
class NetworkSpec:
    name: str
    gateway: str | None = None
    nat: str | None = None


@attrs.frozen
class PingCheck:
    """Ping `to`'s tunnel address from `source`'s host (`from` in the file)."""

    kind: Literal["ping"]
    source: str
    to: str

    def describe(self) -> str:
        return f"ping {self.source} -> {self.to}"


@attrs.frozen
class ReloadCheck:
    """Write `mesh` over `on`'s mesh file, run `whalescale reload`, expect `expect`."""

    kind: Literal["reload"]
    on: str
    mesh: str
    expect: Literal["refused", "applied"]

    def describe(self) -> str:
        return f"reload on {self.on} is {self.expect}"


Check = PingCheck | ReloadCheck


@attrs.frozen
class Scenario:
    name: str
    summary: str
    path: Path
    mesh: MeshSpec
    networks: tuple[NetworkSpec, ...]
    hosts: tuple[HostSpec, ...]
    checks: tuple[Check, ...]

    def host(self, name: str) -> HostSpec:
        return next(h for h in self.hosts if h.name == name)


@attrs.frozen
class CheckResult:
    check: Check
    passed: bool
    detail: str

    def __str__(self) -> str:
        return f"{'ok  ' if self.passed else 'FAIL'} {self.check.describe()}: {self.detail}"


def _converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    # `from` is a Python keyword: the file says `from`, the record says `source`.
    conv.register_structure_hook(
        PingCheck,
        cattrs.gen.make_dict_structure_fn(
            PingCheck, conv, _cattrs_forbid_extra_keys=True,
            source=cattrs.gen.override(rename="from"),
        ),
    )

    def check_hook(value: object, _: type) -> Check:
        kind = value.get("kind") if isinstance(value, dict) else None
        kinds: dict[object, type[PingCheck] | type[ReloadCheck]] = {
            "ping": PingCheck, "reload": ReloadCheck}
        if kind not in kinds:
            raise ValueError(f"kind must be one of {sorted(map(str, kinds))}, got {kind!r}")
        return conv.structure(value, kinds[kind])

    conv.register_structure_hook(Check, check_hook)
    return conv


_CONVERTER = _converter()


def scenario_files(directory: Path = SCENARIO_DIR) -> list[Path]:
    return sorted(directory.glob("*.toml"))


def load(path: Path) -> Scenario:
    """Read and check one scenario file; `ScenarioError` names the file and every problem."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{path}: {exc}") from exc
    try:
        scenario = Scenario(
            name=_CONVERTER.structure(raw.pop("name", None), str),
            summary=_CONVERTER.structure(raw.pop("summary", ""), str),
            path=path,
            mesh=_CONVERTER.structure(raw.pop("mesh", {}), MeshSpec),
            networks=_CONVERTER.structure(raw.pop("network", []), tuple[NetworkSpec, ...]),
            hosts=_CONVERTER.structure(raw.pop("host", []), tuple[HostSpec, ...]),
            checks=_CONVERTER.structure(raw.pop("check", []), tuple[Check, ...]),
        )
    except Exception as exc:  # cattrs raises ClassValidationError groups and plain errors
        details = (cattrs.transform_error(exc) if isinstance(exc, cattrs.BaseValidationError)
                   else [str(exc)])
        raise ScenarioError(f"{path}: " + "; ".join(details)) from exc
    problems = [f"unknown top-level key {key!r}" for key in raw]
    problems += _consistency(scenario)
    if problems:
        raise ScenarioError(f"{path}: " + "; ".join(problems))
    return scenario


def _consistency(s: Scenario) -> list[str]:
    """Names that must refer to something: networks, gateways, hosts of checks."""
    problems: list[str] = []
    networks = {n.name: n for n in s.networks}
    hosts = {h.name: h for h in s.hosts}
    if s.path.stem != s.name:
        problems.append(f"name {s.name!r} must match the file name {s.path.stem!r}")
    if INTERNET not in networks:
        problems.append(f"network: needs one named {INTERNET!r}")
    if len(networks) != len(s.networks) or len(hosts) != len(s.hosts):
        problems.append("network and host names must be unique")
    for i, net in enumerate(s.networks):
        if net.name == INTERNET:
            continue
        gw = hosts.get(net.gateway or "")
        if gw is None or gw.network != INTERNET:
            problems.append(f"network[{i}].gateway: {net.gateway!r} is not a host on the internet")
        if net.nat is None or not (NAT_DIR / f"{net.nat}.nft").is_file():
            problems.append(f"network[{i}].nat: no rule set {NAT_DIR}/{net.nat}.nft")
    for i, host in enumerate(s.hosts):
        if host.network not in networks:
            problems.append(f"host[{i}].network: no network {host.network!r}")
    for i, check in enumerate(s.checks):
        names = [("from", check.source), ("to", check.to)] if isinstance(check, PingCheck) \
            else [("on", check.on)]
        for key, name in names:
            if name not in hosts or hosts[name].node is None:
                problems.append(f"check[{i}].{key}: {name!r} is not a whalescale node")
    return problems


def _own_ifname(link: Link, host: Host) -> str:
    return link.a_ifname if host is link.a else link.b_ifname


def build(lab: Lab, scenario: Scenario) -> dict[str, Host]:
    """The scenario's hosts and networks on `lab`, NAT gateways loaded; hosts by name."""
    inet = lab.internet()
    hosts: dict[str, Host] = {}
    wan: dict[str, Link] = {}
    for spec in scenario.hosts:
        if spec.network == INTERNET:
            host = hosts[spec.name] = lab.host(spec.name)
            wan[spec.name] = lab.link(inet, host)
            host.route_via(wan[spec.name])
    for net in scenario.networks:
        if net.name == INTERNET:
            continue
        members = [h for h in scenario.hosts if h.network == net.name]
        if len(members) != 1:
            raise ScenarioError(f"{scenario.path}: network {net.name!r}: the lab joins a "
                                f"gateway to its LAN by one veth, so a LAN holds one host "
                                f"(found {len(members)})")
        assert net.gateway is not None and net.nat is not None  # checked by load()
        gateway = hosts[net.gateway]
        host = hosts[members[0].name] = lab.host(members[0].name)
        lan = lab.link(gateway, host)
        host.route_via(lan)
        gateway.set_forwarding(True)
        ruleset = (NAT_DIR / f"{net.nat}.nft").read_text()
        gateway.nft(ruleset.replace("@WAN@", _own_ifname(wan[net.gateway], gateway))
                    .replace("@LAN@", _own_ifname(lan, gateway)))
    return hosts


def mesh_of(lab: Lab, scenario: Scenario, hosts: dict[str, Host]) -> LabMesh:
    """Keys and one mesh file for every node of the scenario (nothing runs yet)."""
    mesh = LabMesh(lab, port=scenario.mesh.port, keepalive_s=scenario.mesh.keepalive_s)
    for spec in scenario.hosts:
        if spec.node is not None:
            mesh.add_node(hosts[spec.name], anchor=spec.node.anchor,
                          tunnel_addr=spec.node.address, static_endpoint=spec.node.endpoint)
    mesh.write_mesh()
    return mesh


def start_mesh(lab: Lab, scenario: Scenario, hosts: dict[str, Host]) -> LabMesh:
    """Keys, one mesh file and a running agent for every node of the scenario."""
    mesh = mesh_of(lab, scenario, hosts)
    mesh.start_all()
    return mesh


def run_check(mesh: LabMesh, check: Check) -> CheckResult:
    match check:
        case PingCheck(source=source, to=to):
            addr = mesh.nodes[to].tunnel_addr
            passed = mesh.nodes[source].host.ping(addr, count=PING_COUNT, timeout=PING_TIMEOUT_S)
            return CheckResult(check, passed, f"{addr} {'answers' if passed else 'is silent'}")
        case ReloadCheck(on=on, mesh=text, expect=expect):
            return _reload(mesh, check, on, text, expect)
    raise AssertionError(f"unknown check {check!r}")


def _reload(mesh: LabMesh, check: ReloadCheck, on: str, text: str, expect: str) -> CheckResult:
    node = mesh.nodes[on]
    proc = node.proc
    assert proc is not None
    # One mesh file serves every lab node; only `on` is asked to read it again.
    mesh.mesh_path.write_text(text)
    result = node.host.run(sys.executable, "-m", "whalescale", "reload",
                           "--state-dir", str(mesh.state_dir(on)), check=False)
    return reload_result(check, result,
                         lambda: proc.wait_for_log(f"reload {expect}", RELOAD_LOG_TIMEOUT_S))


def reload_result(check: ReloadCheck, result: subprocess.CompletedProcess[str],
                  logged: Callable[[], bool]) -> CheckResult:
    """The verdict on `whalescale reload`'s `result`: its exit status, the position of a
    refusal on stderr, and whether the agent logged the outcome (`logged()` waits for it)."""
    problems = []
    if result.returncode != RELOAD_EXIT[check.expect]:
        problems.append(f"exit {result.returncode}, expected {RELOAD_EXIT[check.expect]}")
    if check.expect == "refused" and not _POSITION.search(result.stderr):
        problems.append("no FILE:LINE:COL on stderr")
    if not logged():
        problems.append(f"the agent's log has no 'reload {check.expect}'")
    detail = "; ".join(problems) or f"exit {result.returncode}, logged 'reload {check.expect}'"
    if problems:
        detail += f" (stderr: {result.stderr.strip()!r})"
    return CheckResult(check, not problems, detail)


def run(lab: Lab, scenario: Scenario) -> list[CheckResult]:
    """Build `scenario` on `lab`, start its agents, run every check in order."""
    hosts = build(lab, scenario)
    mesh = start_mesh(lab, scenario, hosts)
    return [run_check(mesh, check) for check in scenario.checks]
