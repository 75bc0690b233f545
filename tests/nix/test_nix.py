"""The Nix side, as far as this machine can check it without nixpkgs.

Always (with `nix-instantiate`): every .nix file parses, and the flake's outputs have the
expected names. With nixpkgs' `lib` at $WHALESCALE_NIXPKGS_LIB (a checkout of
github:nix-community/nixpkgs.lib, the directory holding `lib/` or `lib/` itself), or else
at ../shared/vendor/nixpkgs.lib beside the clone (where CI and the sessions keep a copy):
nix/package.nix's dependencies are compared with pyproject.toml's,
nix/module.nix is evaluated with `lib.evalModules` and the stubs in tests/nix/stubs.nix,
the flake's outputs and the VM tests' nodes and scripts are evaluated, and the mesh file
the module renders (with the stubs' small TOML writer, not pkgs.formats.toml, which needs
a build) must pass `whalescale check`. Nothing is built and no VM runs here.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tomllib
from itertools import chain
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from whalescale.lab.scenario import scenario_files

REPO = Path(__file__).resolve().parents[2]
NIX_FILES = sorted(
    p for p in REPO.rglob("*.nix") if not {".venv", ".git"} & set(p.relative_to(REPO).parts)
)
LIB_ENV = "WHALESCALE_NIXPKGS_LIB"
SYSTEMS = ("x86_64-linux", "aarch64-linux")
# The copy of nixpkgs.lib beside the clone, used when $WHALESCALE_NIXPKGS_LIB is unset.
VENDORED_LIB = REPO.parent / "shared" / "vendor" / "nixpkgs.lib"

pytestmark = pytest.mark.skipif(
    shutil.which("nix-instantiate") is None,
    reason="nix-instantiate is not installed (Debian: apt install nix-bin)",
)


def nix(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    # No daemon, no build users, no experimental features: plain evaluation only.
    return subprocess.run(
        ["nix-instantiate", "--option", "build-users-group", "",
         "--option", "experimental-features", "", *args],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "HOME": str(home)},
        timeout=120,
    )


def nixpkgs_lib() -> Path | None:
    value = os.environ.get(LIB_ENV)
    if value:
        path = Path(value)
    elif VENDORED_LIB.is_dir():
        path = VENDORED_LIB
    else:
        return None
    return path / "lib" if (path / "lib" / "default.nix").is_file() else path


needs_lib = pytest.mark.skipif(
    nixpkgs_lib() is None,
    reason=f"set {LIB_ENV} to a checkout of github:nix-community/nixpkgs.lib (or put one "
    f"at {VENDORED_LIB}) to evaluate the module (there is no nixpkgs on this machine)",
)


def evaluate(expr: str, tmp_path: Path) -> object:
    """Evaluate `expr` (a Nix expression using `lib` and `stubs`) to JSON."""
    lib = nixpkgs_lib()
    assert lib is not None
    source = tmp_path / "expr.nix"
    source.write_text(
        "{ libPath, repo }:\nlet\n  lib = import libPath;\n"
        "  stubs = import (repo + \"/tests/nix/stubs.nix\") { inherit lib; };\n"
        f"in\n{expr}\n"
    )
    result = nix("--eval", "--strict", "--json", str(source), "--argstr", "libPath", str(lib),
                 "--arg", "repo", str(REPO), home=tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("path", NIX_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_nix_file_parses(path: Path, tmp_path: Path) -> None:
    result = nix("--parse", str(path), home=tmp_path)
    assert result.returncode == 0, result.stderr


def test_flake_outputs_have_the_expected_names(tmp_path: Path) -> None:
    # `outputs` is a function whose body is an attribute set: its names come out without
    # nixpkgs, since nothing forces the values.
    result = nix("--eval", "--strict", "--json", "-E",
                 "let f = import ./flake.nix; in { top = builtins.attrNames f; "
                 "outputs = builtins.attrNames (f.outputs { self = { }; nixpkgs = { }; }); "
                 "nixpkgs = f.inputs.nixpkgs.url; }", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "top": ["description", "inputs", "outputs"],
        "outputs": ["checks", "nixosModules", "packages"],
        "nixpkgs": "github:NixOS/nixpkgs/nixos-unstable",
    }


# --- with nixpkgs' lib -------------------------------------------------------------------

MESH = """{
  mesh = { name = "home"; keepalive_s = 25; };
  node = [
    { name = "anchor"; public_key = lib.fileContents (repo + "/nix/tests/keys/anchor.pub");
      address = "100.96.0.1"; endpoints = [ "192.0.2.10:51820" ]; anchor = true; }
    { name = "peer"; public_key = lib.fileContents (repo + "/nix/tests/keys/peer.pub");
      address = [ "100.96.0.2" "fd77:7773::2" ]; }
  ];
}"""


def eval_module(config: str, tmp_path: Path, nixos: str = "{ }") -> dict:
    """nix/module.nix with `config` for services.whalescale (package: a stub) and `nixos`
    for the rest of the system."""
    result = evaluate(
        f"""let
  r = stubs.evalNixOS [ (repo + "/nix/module.nix") {nixos} {{
    services.whalescale = {{ package = stubs.package; }} // {config};
  }} ];
  c = r.config;
in {{
  failed = stubs.failedAssertions c;
  unit = c.systemd.services.whalescale or null;
  etc = lib.mapAttrs (_: e: e.source) c.environment.etc;
  udp = c.networking.firewall.allowedUDPPorts;
  packages = c.environment.systemPackages;
  sysctl = c.boot.kernel.sysctl or {{ }};
  firewall = c.networking.firewall;
  polkit = c.security.polkit.extraConfig or null;
  tmpfiles = c.systemd.tmpfiles.rules or [ ];
  users = c.users or {{ }};
}}""",
        tmp_path,
    )
    assert isinstance(result, dict)
    return result


@needs_lib
def test_module_renders_a_hardened_unit_and_a_valid_mesh(tmp_path: Path) -> None:
    out = eval_module(f"{{ enable = true; openFirewall = true; settings = {MESH}; }}", tmp_path)
    assert out["failed"] == []
    exe = f"{out['packages'][0]}/bin/whalescale"
    service = out["unit"]["serviceConfig"]
    assert service["ExecStart"] == (
        f"{exe} up /etc/whalescale/mesh.toml --key %d/private.key --interface ws0 "
        "--state-dir /var/lib/whalescale")
    assert service["ExecStartPre"] == f"{exe} check /etc/whalescale/mesh.toml"
    assert service["ExecReload"] == f"{exe} reload --state-dir /var/lib/whalescale"
    assert service["CapabilityBoundingSet"] == ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"]
    assert service["AmbientCapabilities"] == ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"]
    assert service["DynamicUser"] is True
    assert service["DevicePolicy"] == "closed"
    assert service["DeviceAllow"] == ["/dev/net/tun rw"]
    assert service["LoadCredential"] == "private.key:/etc/whalescale/private.key"
    assert service["StateDirectory"] == "whalescale"
    assert service["Restart"] == "on-failure"
    # Restarted, never stopped for the whole switch; restarted without a limit.
    assert out["unit"]["stopIfChanged"] is False
    assert out["unit"]["startLimitIntervalSec"] == 0
    assert out["udp"] == [51820]
    # /dev/net/tun usable by the dynamic user where no udev makes it so: deploy's line.
    rules = [line for line in (REPO / "deploy" / "whalescale-tun.conf").read_text().splitlines()
             if line and not line.startswith("#")]
    assert out["tmpfiles"] == rules
    # A new mesh reloads the unit instead of restarting it.
    mesh_text = out["etc"]["whalescale/mesh.toml"]
    assert out["unit"]["reloadTriggers"] == [mesh_text]

    # The rendered mesh (stub writer) is one whalescale accepts.
    mesh_file = tmp_path / "mesh.toml"
    mesh_file.write_text(mesh_text)
    assert tomllib.loads(mesh_text)["node"][0]["anchor"] is True
    check = subprocess.run([sys.executable, "-m", "whalescale", "check", str(mesh_file)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "2 nodes (1 anchors)" in check.stdout


@needs_lib
def test_module_with_a_mesh_file_and_options(tmp_path: Path) -> None:
    out = eval_module('{ enable = true; meshFile = "/srv/mesh.toml"; interfaceName = "mesh0"; '
                      'privateKeyFile = "/run/keys/ws.key"; extraArgs = [ "--no-offload" ]; }',
                      tmp_path)
    assert out["failed"] == []
    service = out["unit"]["serviceConfig"]
    assert " up /srv/mesh.toml --key %d/private.key --interface mesh0 " in service["ExecStart"]
    assert service["ExecStart"].endswith("/var/lib/whalescale --no-offload")
    assert service["LoadCredential"] == "private.key:/run/keys/ws.key"
    assert out["unit"]["reloadTriggers"] == []
    assert out["etc"] == {}
    assert out["udp"] == []


# MESH, where the anchor routes the home LAN and is an exit the peer uses.
MESH_ACCESS = f"""let m = {MESH}; in
m // {{ node = [
  ((lib.head m.node) // {{ routes = [ "192.168.1.0/24" ]; exit = true; groups = [ "servers" ];
                          firewall = [ {{ action = "deny"; from = [ "peer" ]; proto = "tcp";
                                         ports = [ 22 ]; }} ]; }})
  ((lib.last m.node) // {{ exit_node = "anchor"; }}) ]; }}"""


@needs_lib
@pytest.mark.parametrize(("node", "forwards"), [("anchor", True), ("peer", False)])
def test_module_renders_routes_and_access_and_forwards_on_a_router(
        node: str, forwards: bool, tmp_path: Path) -> None:
    """The anchor routes and exits (forwarding on); the peer uses it as its exit (marks
    kept valid for reverse path filtering, the firewall's check loose)."""
    out = eval_module(f'{{ enable = true; nodeName = "{node}"; settings = {MESH_ACCESS}; }}',
                      tmp_path)
    assert out["failed"] == []
    mesh_file = tmp_path / "mesh.toml"
    mesh_file.write_text(out["etc"]["whalescale/mesh.toml"])
    from whalescale.config import load_mesh

    anchor, peer = load_mesh(mesh_file).nodes
    assert ([str(n) for n in anchor.routes], anchor.exit, peer.exit_node) == (
        ["192.168.1.0/24"], True, "anchor")
    assert [str(rule) for rule in anchor.firewall] == ["deny from peer tcp port 22"]
    # the peer's empty options stay out of the file rather than render as empty lists
    assert "routes" not in tomllib.loads(mesh_file.read_text())["node"][1]
    assert out["sysctl"] == ({"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1}
                             if forwards else {"net.ipv4.conf.all.src_valid_mark": 1})
    assert out["firewall"]["checkReversePath"] == (True if forwards else "loose")


@needs_lib
@pytest.mark.parametrize("resolved", [True, False])
def test_module_lets_the_agent_serve_and_register_the_mesh_names(resolved: bool,
                                                                  tmp_path: Path) -> None:
    out = eval_module(f"{{ enable = true; settings = {MESH}; }}", tmp_path,
                      nixos=f"{{ services.resolved.enable = {str(resolved).lower()}; }}")
    # port 53 on the tunnel interface alone
    assert out["firewall"]["interfaces"] == {"ws0": {"allowedUDPPorts": [53],
                                                     "allowedTCPPorts": [53]}}
    assert out["udp"] == []
    assert "CAP_NET_BIND_SERVICE" in out["unit"]["serviceConfig"]["AmbientCapabilities"]
    assert any(p.endswith("-nftables") for p in out["unit"]["path"])
    # a static system user, whose connection the system bus takes, in a dynamic user's sandbox
    assert out["users"]["users"]["whalescale"] == {
        "isSystemUser": True, "group": "whalescale", "description": "whalescale mesh VPN agent"}
    assert "whalescale" in out["users"]["groups"]
    service = out["unit"]["serviceConfig"]
    assert (service["DynamicUser"], service["User"]) == (True, "whalescale")
    # with resolved, a polkit rule lets that user register NAME.SUFFIX for ws0
    assert (out["polkit"] is not None and 'subject.user == "whalescale"' in out["polkit"]
            and "org.freedesktop.resolve1.set-domains" in out["polkit"]) == resolved


# MESH, where the peer listens on a port of its own.
MESH_OWN_PORT = f"""let m = {MESH}; in
m // {{ node = [ (lib.head m.node) ((lib.last m.node) // {{ port = 51821; }}) ]; }}"""


@needs_lib
@pytest.mark.parametrize(
    ("options", "port"),
    [
        ('nodeName = "peer";', 51821),
        ('nodeName = "anchor";', 51820),
        ("port = 51900;", 51900),
    ],
    ids=["own-port", "mesh-port", "port-set"],
)
def test_open_firewall_opens_this_nodes_port(options: str, port: int, tmp_path: Path) -> None:
    out = eval_module(f"{{ enable = true; openFirewall = true; settings = {MESH_OWN_PORT}; "
                      f"{options} }}", tmp_path)
    assert out["failed"] == []
    assert out["udp"] == [port]


@needs_lib
@pytest.mark.parametrize(
    ("config", "message"),
    [
        (f'{{ enable = true; settings = {MESH}; meshFile = "/srv/mesh.toml"; }}',
         "set exactly one of `settings` (the mesh as Nix) and\n`meshFile` (a mesh file on "
         "the host); both are set"),
        ("{ enable = true; }", "neither is set"),
        (f"{{ enable = true; settings = {MESH} // {{ private_key = \"x\"; }}; }}",
         "services.whalescale.settings.private_key: private keys must not be in the mesh"),
        (f"{{ enable = true; settings = {MESH} // "
         "{ wireguard = [ { name = \"old-router\"; PresharedSecret = \"x\"; } ]; }; }",
         "services.whalescale.settings.wireguard[0].PresharedSecret: private keys"),
        ('{ enable = true; meshFile = "/srv/mesh.toml"; '
         'privateKeyFile = "/nix/store/abc-key"; }', "outside the Nix store"),
        (f'{{ enable = true; settings = {MESH}; nodeName = "laptop"; }}',
         'services.whalescale.nodeName = "laptop": settings.node has no node\nof that name'),
        (f"{{ enable = true; openFirewall = true; settings = {MESH_OWN_PORT}; }}",
         "services.whalescale.openFirewall: nodes in settings.node set their own port\n"
         "(peer: 51821), so the port to open depends on which\nnode this is: set "
         "services.whalescale.nodeName"),
    ],
    ids=["both-mesh-sources", "no-mesh-source", "private-key", "nested-secret", "key-in-store",
         "unknown-node-name", "own-ports-without-node-name"],
)
def test_module_assertions_explain_the_mistake(config: str, message: str,
                                               tmp_path: Path) -> None:
    out = eval_module(config, tmp_path)
    assert any(message in failed for failed in out["failed"]), out["failed"]


# --- nix/package.nix against pyproject.toml -----------------------------------------------

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def nixpkgs_names(requirements: list[str]) -> list[str]:
    """The nixpkgs attributes of PEP 508 requirements, sorted. nixpkgs names a Python
    package by its normalised project name (PEP 503): `PyNaCl` is `pynacl`; a package it
    spells otherwise would need a mapping here."""
    return sorted(canonicalize_name(Requirement(r).name) for r in requirements)


def eval_package(tmp_path: Path) -> dict:
    """nix/package.nix's arguments to buildPythonApplication, given a python3Packages
    that holds only the packages pyproject.toml names."""
    project = PYPROJECT["project"]
    offered = nixpkgs_names([*PYPROJECT["build-system"]["requires"], *project["dependencies"],
                             *chain.from_iterable(project["optional-dependencies"].values())])
    out = evaluate(
        f"""let
  package = import (repo + "/nix/package.nix") {{
    inherit lib;
    python3Packages = stubs.pythonPackages [ {" ".join(map(json.dumps, offered))} ];
  }};
in {{
  inherit (package) pname version pyproject build-system dependencies optional-dependencies
    pythonImportsCheck;
  inherit (package.meta) mainProgram;
}}""",
        tmp_path,
    )
    assert isinstance(out, dict)
    return out


@needs_lib
def test_package_declares_the_dependencies_of_pyproject(tmp_path: Path) -> None:
    project = PYPROJECT["project"]
    out = eval_package(tmp_path)
    assert (out["pname"], out["version"], out["pyproject"], out["mainProgram"]) == \
        (project["name"], project["version"], True, "whalescale")
    assert out["build-system"] == nixpkgs_names(PYPROJECT["build-system"]["requires"])
    assert sorted(out["dependencies"]) == nixpkgs_names(project["dependencies"])
    # Every extra but the test suite's tools: the build runs no tests.
    assert {extra: sorted(names) for extra, names in out["optional-dependencies"].items()} == \
        {extra: nixpkgs_names(requirements)
         for extra, requirements in project["optional-dependencies"].items() if extra != "test"}


# Run in a fresh interpreter: which installed distributions the given imports load.
LOADED_DISTRIBUTIONS = """
import importlib, importlib.metadata, json, sys
before = set(sys.modules)
for module in sys.argv[1:]:
    importlib.import_module(module)
owners = importlib.metadata.packages_distributions()
loaded = {name.partition(".")[0] for name in set(sys.modules) - before}
print(json.dumps(sorted({dist for name in loaded for dist in owners.get(name, [])})))
"""


def requirement_closure(names: list[str]) -> set[str]:
    """`names` and every distribution they require, as installed here (normalised)."""
    closure: set[str] = set()
    todo = [canonicalize_name(name) for name in names]
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        for spec in importlib.metadata.requires(name) or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return closure


@needs_lib
def test_the_builds_import_check_needs_only_the_declared_dependencies(tmp_path: Path) -> None:
    """nixpkgs' build imports `pythonImportsCheck` with `dependencies` (and what they
    require) alone: here those imports must load no other distribution."""
    out = eval_package(tmp_path)
    run = subprocess.run([sys.executable, "-c", LOADED_DISTRIBUTIONS, *out["pythonImportsCheck"]],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    loaded = {canonicalize_name(dist) for dist in json.loads(run.stdout)}
    declared = requirement_closure(out["dependencies"]) | {PYPROJECT["project"]["name"]}
    assert loaded - declared == set()


@needs_lib
def test_flake_outputs_evaluate_with_stub_packages(tmp_path: Path) -> None:
    out = evaluate(
        """let
  flake = import (repo + "/flake.nix");
  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (system:
      stubs.pkgs // { stdenv.hostPlatform.system = system; });
  };
  self = flake.outputs { inherit self nixpkgs; };
in {
  checks = lib.mapAttrs (_: lib.mapAttrs (_: t: {
    inherit (t) name;
    nodes = builtins.attrNames t.nodes;
    script = t.testScript { nodes = { }; };
  })) self.checks;
  packages = lib.mapAttrs (_: builtins.attrNames) self.packages;
  module = self.nixosModules.default == repo + "/nix/module.nix";
}""",
        tmp_path,
    )
    assert isinstance(out, dict)
    scenarios = {p.stem: tomllib.loads(p.read_text()) for p in scenario_files()}
    assert set(out["checks"]) == set(SYSTEMS)
    for system in SYSTEMS:
        assert out["packages"][system] == ["default"]
        checks = out["checks"][system]
        assert set(checks) == set(scenarios)
        for name, check in checks.items():
            assert check["nodes"] == sorted(h["name"] for h in scenarios[name]["host"])
            compile(check["script"], f"{system}.{name}.testScript", "exec")  # valid Python
    assert "ping -c 1 -W 2 100.96.0.2" in out["checks"]["x86_64-linux"]["nat-anchor"]["script"]
    assert "whalescale reload --state-dir /var/lib/whalescale" in \
        out["checks"]["x86_64-linux"]["reload-refused"]["script"]
    assert out["module"] is True


@needs_lib
@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in scenario_files()])
def test_vm_test_nodes_follow_the_scenario(path: Path, tmp_path: Path) -> None:
    """Each VM node's configuration, evaluated with stub NixOS options: VLANs, NAT rule
    set, default route, and a mesh that `whalescale check` accepts."""
    out = evaluate(
        f"""let
  test = import (repo + "/nix/tests/scenario.nix") {{
    inherit lib; pkgs = stubs.pkgs; package = stubs.package;
    module = repo + "/nix/module.nix";
    scenarioFile = {json.dumps(str(path))};
  }};
  names = builtins.attrNames test.nodes;
  # Addresses as the test driver gives them: 192.168.<vlan>.<node number>.
  number = name: toString (1 + lib.lists.findFirstIndex (n: n == name) 0 names);
  nodes = lib.genAttrs names (name: {{
    networking.primaryIPAddress = "192.168.1.${{number name}}";
    networking.interfaces.eth2.ipv4.addresses = [ {{ address = "192.168.2.${{number name}}"; }} ];
  }});
  eval = name: (stubs.evalNixOS [ {{ _module.args.nodes = nodes; }} test.nodes.${{name}} ]).config;
in lib.genAttrs names (name: let c = eval name; in {{
  failed = stubs.failedAssertions c;
  vlans = c.virtualisation.vlans;
  ruleset = c.networking.nftables.ruleset or null;
  gateway = c.networking.defaultGateway or null;
  firewall = c.networking.firewall.enable or true;
  mesh = c.environment.etc."whalescale/mesh.toml".source or null;
  udp = c.networking.firewall.allowedUDPPorts;
}})""",
        tmp_path,
    )
    assert isinstance(out, dict)
    scenario = tomllib.loads(path.read_text())
    lans = [n for n in scenario["network"] if n["name"] != "internet"]
    gateways = {n["gateway"]: n for n in lans}
    for host in scenario["host"]:
        node = out[host["name"]]
        assert node["failed"] == [], host["name"]
        if host["name"] in gateways:
            assert node["vlans"] == [1, 2 + lans.index(gateways[host["name"]])]
            assert 'iifname "eth2" oifname "eth1" masquerade' in node["ruleset"]
            assert 'iifname "eth1" ct state new drop' in node["ruleset"]
            assert node["firewall"] is False
        elif host["network"] != "internet":
            assert node["gateway"]["interface"] == "eth1"
            assert node["gateway"]["address"].startswith("192.168.2.")
        if "node" in host:
            assert node["udp"] == [scenario.get("mesh", {}).get("port", 51820)]
            mesh_file = tmp_path / f"{host['name']}.toml"
            mesh_file.write_text(node["mesh"])
            check = subprocess.run([sys.executable, "-m", "whalescale", "check", str(mesh_file)],
                                   capture_output=True, text=True)
            assert check.returncode == 0, check.stderr
            mesh = tomllib.loads(node["mesh"])
            ours = next(n for n in mesh["node"] if n["name"] == host["name"])
            assert ours["address"] == host["node"]["address"]
            assert bool(ours["endpoints"]) == host["node"].get("endpoint", True)
        else:
            assert node["mesh"] is None


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in scenario_files()])
def test_every_scenario_node_has_its_test_key(path: Path) -> None:
    """The VM tests read nix/tests/keys/<role>.{key,pub}; checked without Nix, so a new
    scenario cannot lack them where the evaluation tests are skipped."""
    from whalescale import identity

    keys = REPO / "nix" / "tests" / "keys"
    for host in tomllib.loads(path.read_text())["host"]:
        if "node" in host:
            ident = identity.read_key_file(keys / f"{host['name']}.key")
            assert (keys / f"{host['name']}.pub").read_text().strip() == \
                identity.b64(ident.public), host["name"]
