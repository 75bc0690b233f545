# One NixOS VM test from one scenario file (scenarios/*.toml), the file the Python lab
# runs too (whalescale/lab/scenario.py). The result is a test module for
# pkgs.testers.runNixOSTest.
#
# Networks become VLANs: the internet is VLAN 1, each LAN the next number in file order.
# The test driver gives a node on VLAN v the address 192.168.v.<node number> on eth1,
# eth2, ... in the order of its `virtualisation.vlans`, so a gateway's eth1 is its WAN and
# eth2 its LAN. Gateways load scenarios/nat/<nat>.nft, as the lab does. Nodes use the
# test-only keys in ./keys.
{
  lib,
  pkgs,
  module,
  package,
  scenarioFile,
}:

let
  scenario = builtins.fromTOML (builtins.readFile scenarioFile);
  meshSpec = scenario.mesh or { };
  port = meshSpec.port or 51820;

  lans = lib.filter (net: net.name != "internet") scenario.network;
  vlanOf = name: if name == "internet" then 1 else 2 + lib.lists.findFirstIndex (net: net.name == name) (throw "no network ${name}") lans;
  lansServedBy = host: lib.filter (net: net.gateway == host.name) lans;
  nodeHosts = lib.filter (host: host ? node) scenario.host;
  nodesByName = lib.listToAttrs (map (host: lib.nameValuePair host.name host) nodeHosts);

  # The mesh every node gets; endpoints are the nodes' addresses on the internet.
  meshSettings = nodes: {
    mesh = meshSpec // {
      name = scenario.name;
    };
    node = map (host: {
      inherit (host) name;
      public_key = lib.fileContents (./keys + "/${host.name}.pub");
      address = host.node.address;
      anchor = host.node.anchor or false;
      endpoints = lib.optional (host.node.endpoint or true) "${nodes.${host.name}.networking.primaryIPAddress}:${toString port}";
    }) nodeHosts;
  };

  gatewayConfig =
    host:
    let
      served = lansServedBy host;
      lan = lib.head served;
    in
    lib.optionalAttrs (served != [ ]) {
      assertions = [
        {
          assertion = lib.length served == 1;
          message = "${scenario.name}: gateway ${host.name} serves ${toString (lib.length served)} LANs; these tests support one.";
        }
      ];
      virtualisation.vlans = [ (vlanOf lan.name) ];
      boot.kernel.sysctl."net.ipv4.conf.all.forwarding" = true;
      # The NAT rule set carries the gateway's own input chain (dropping unsolicited
      # new traffic from the WAN), so the NixOS firewall stays out of the way.
      networking.firewall.enable = false;
      networking.nftables.enable = true;
      networking.nftables.ruleset =
        builtins.replaceStrings [ "@WAN@" "@LAN@" ] [ "eth1" "eth2" ]
          (builtins.readFile (../../scenarios/nat + "/${lan.nat}.nft"));
    };

  lanHostConfig =
    host: nodes:
    let
      lan = lib.findFirst (net: net.name == host.network) null lans;
    in
    lib.optionalAttrs (lan != null) {
      networking.defaultGateway = {
        address = (lib.head nodes.${lan.gateway}.networking.interfaces.eth2.ipv4.addresses).address;
        interface = "eth1";
      };
    };

  nodeConfig =
    host: nodes:
    lib.optionalAttrs (host ? node) {
      services.whalescale = {
        enable = true;
        inherit package;
        settings = meshSettings nodes;
        nodeName = host.name;
        privateKeyFile = "/etc/whalescale/private.key";
        openFirewall = true;
      };
      # Test-only key (see keys/README.md); a real node's key never enters the store.
      environment.etc."whalescale/private.key" = {
        source = ./keys + "/${host.name}.key";
        mode = "0600";
      };
    };

  mkNode =
    host:
    { nodes, ... }:
    {
      imports = [ module ];
      # Not in `imports`: what depends on `nodes` (a module argument) must stay in config.
      config = lib.mkMerge [
        { virtualisation.vlans = lib.mkBefore [ (vlanOf host.network) ]; }
        (gatewayConfig host)
        (lanHostConfig host nodes)
        (nodeConfig host nodes)
      ];
    };

  py = builtins.toJSON;

  checkScript =
    nodes: index: check:
    if check.kind == "ping" then
      ''
        with subtest(${py "check ${toString index}: ping ${check.from} -> ${check.to}"}):
            by_name[${py check.from}].wait_until_succeeds(
                ${py "ping -c 1 -W 2 ${nodesByName.${check.to}.node.address}"}, timeout=60
            )
      ''
    else if check.kind == "reload" then
      let
        newMesh = pkgs.writeText "${scenario.name}-check-${toString index}.toml" check.mesh;
        expectedExit = if check.expect == "refused" then 1 else 0;
      in
      ''
        with subtest(${py "check ${toString index}: reload on ${check.on} is ${check.expect}"}):
            m = by_name[${py check.on}]
            m.succeed("rm -f /etc/whalescale/mesh.toml", ${py "cp ${newMesh} /etc/whalescale/mesh.toml"})
            status, out = m.execute("whalescale reload --state-dir /var/lib/whalescale 2>&1")
            assert status == ${toString expectedExit}, f"reload exited {status}: {out}"
            ${lib.optionalString (check.expect == "refused") ''
              assert re.search(r"^\S+:\d+:\d+: ", out, re.MULTILINE), f"no FILE:LINE:COL: {out}"
            ''}
            m.wait_until_succeeds(${py "journalctl -u whalescale.service | grep -q 'reload ${check.expect}'"}, timeout=10)
      ''
    else
      throw "${scenario.name}: unknown check kind ${check.kind}";
in
{
  inherit (scenario) name;
  meta.description = scenario.summary;

  nodes = lib.listToAttrs (map (host: lib.nameValuePair host.name (mkNode host)) scenario.host);

  testScript =
    { nodes, ... }:
    ''
      import re

      # Machines by node name: names such as "peer-a" are not Python identifiers.
      by_name = {m.name: m for m in machines}
      start_all()
      for name in ${py (map (host: host.name) nodeHosts)}:
          by_name[name].wait_for_unit("whalescale.service")

    ''
    + lib.concatStrings (lib.imap1 (checkScript nodes) scenario.check);
}
