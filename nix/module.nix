# services.whalescale: one whalescale agent per host, on one mesh shared by every node.
#
# The mesh is public (every node has the same file): give it as Nix (`settings`, rendered
# to TOML at /etc/whalescale/mesh.toml) or as a file (`meshFile`). The private key never
# enters the Nix store: `privateKeyFile` is a path on the host, handed to the service as a
# systemd credential. The unit mirrors deploy/whalescale.service.
{
  config,
  options,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types literalExpression;

  cfg = config.services.whalescale;
  format = pkgs.formats.toml { };

  stateDir = "/var/lib/whalescale";
  exe = "${cfg.package}/bin/whalescale";
  # The routes and access options left empty (no routes, no exit node...) stay out of the
  # file, which has no null; they are the loader's defaults.
  unsetWhenEmpty = [
    "routes"
    "standby_routes"
    "exit_node"
    "groups"
    "firewall"
  ];
  renderedMesh = format.generate "whalescale-mesh.toml" (
    cfg.settings
    // {
      node = map (lib.filterAttrs (
        name: v: !(builtins.elem name unsetWhenEmpty && (v == null || v == [ ]))
      )) cfg.settings.node;
    }
  );
  # A stable path, so that a new mesh from `settings` changes no ExecStart line: the unit
  # is reloaded (sessions stay), not restarted.
  meshPath = if cfg.settings != null then "/etc/whalescale/mesh.toml" else toString cfg.meshFile;

  nodeNameType = types.strMatching "[a-z0-9][a-z0-9-]{0,62}";
  # This node's entry in `settings.node`, found by `nodeName` (the agent finds it by its
  # key, which the module never sees); null when unnamed or absent.
  ownNode =
    if cfg.settings == null || cfg.nodeName == null then
      null
    else
      lib.findFirst (node: node.name == cfg.nodeName) null cfg.settings.node;
  # The nodes with a `port` of their own, as "name: port": with any, the port to open
  # depends on which node this is.
  ownPorts =
    if cfg.settings == null then
      [ ]
    else
      map (node: "${node.name}: ${toString node.port}") (
        lib.filter (node: node ? port) cfg.settings.node
      );

  # Key paths in `settings` named like a secret, as `whalescale check` flags them
  # (whalescale/config/load.py: "private" or "secret", any case, at any depth).
  secretPaths =
    prefix: value:
    if builtins.isAttrs value then
      lib.concatLists (
        lib.mapAttrsToList (
          name: v:
          lib.optional (builtins.match ".*(private|secret).*" (lib.toLower name) != null) "${prefix}.${name}"
          ++ secretPaths "${prefix}.${name}" v
        ) value
      )
    else if builtins.isList value then
      lib.concatLists (lib.imap0 (i: v: secretPaths "${prefix}[${toString i}]" v) value)
    else
      [ ];

  nodeModule = types.submodule {
    freeformType = format.type;
    options = {
      name = mkOption {
        type = nodeNameType;
        description = "The node's name, unique in the mesh.";
        example = "anchor-1";
      };
      public_key = mkOption {
        type = types.str;
        description = "The node's base64 Ed25519 public key: `whalescale pubkey KEYFILE`.";
        example = "5hXK05P5xfCz5OVC4Uo/foDgtEaDaS41ww7eJUpEqak=";
      };
      address = mkOption {
        type = types.either types.str (types.listOf types.str);
        description = "The node's tunnel address or addresses (IPv4 and/or IPv6).";
        example = [
          "100.96.0.1"
          "fd77:7773::1"
        ];
      };
      endpoints = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = ''
          Static endpoints (IP literal and port) where the node can be reached. A node
          without any (behind NAT) is reached once it contacts its peers.
        '';
        example = [
          "192.0.2.10:51820"
          "[2001:db8::1]:51820"
        ];
      };
      anchor = mkOption {
        type = types.bool;
        default = false;
        description = "Whether the node is an anchor: stable and reachable by the others.";
        example = true;
      };
      routes = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = ''
          Networks behind this node that it forwards for (a subnet router): the other nodes
          route them into the tunnel, unless they sit in them. On the node itself the module
          turns on IP forwarding.
        '';
        example = [ "192.168.1.0/24" ];
      };
      standby_routes = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "The same networks as another node's `routes`, carried while it is unreachable.";
        example = [ "192.168.1.0/24" ];
      };
      exit = mkOption {
        type = types.bool;
        default = false;
        description = "Whether the node offers itself as an exit node (forwards and masquerades).";
        example = true;
      };
      exit_node = mkOption {
        type = types.nullOr nodeNameType;
        default = null;
        description = "The exit node this node sends its default route through.";
        example = "vps";
      };
      groups = mkOption {
        type = types.listOf nodeNameType;
        default = [ ];
        description = "Groups the node belongs to, named in other nodes' `firewall` rules.";
        example = [ "laptops" ];
      };
      firewall = mkOption {
        type = types.listOf (
          types.submodule {
            freeformType = format.type;
            options.action = mkOption {
              type = types.enum [
                "allow"
                "deny"
              ];
              description = "What a packet this rule matches gets; the first rule that matches decides.";
            };
          }
        );
        default = [ ];
        description = ''
          Inbound rules for traffic from the mesh to this node: `action`, and optionally
          `from` (node or group names), `proto` (any, tcp, udp, icmp), `ports` (22 or
          "8000-8100"). Replies to this node's own connections always pass.
        '';
        example = [
          {
            action = "deny";
            from = [ "kids" ];
            proto = "tcp";
            ports = [ 22 ];
          }
        ];
      };
    };
  };
  # This node forwards for the mesh: a subnet router, a standby or an exit node.
  forwards =
    ownNode != null && (ownNode.routes != [ ] || ownNode.standby_routes != [ ] || ownNode.exit);
  # This node sends its default route through an exit node (policy routing with a mark).
  usesExit = ownNode != null && ownNode.exit_node != null;
in
{
  options.services.whalescale = {
    enable = lib.mkEnableOption "the whalescale mesh VPN agent";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = literalExpression "pkgs.callPackage ./package.nix { } (this repository's package)";
      description = "The whalescale package to run.";
      example = literalExpression "inputs.whalescale.packages.\${pkgs.system}.default";
    };

    settings = mkOption {
      type = types.nullOr (
        types.submodule {
          freeformType = format.type;
          options.mesh = mkOption {
            type = types.submodule {
              freeformType = format.type;
              options.name = mkOption {
                type = types.str;
                description = "The mesh's name.";
                example = "home";
              };
              options.port = mkOption {
                type = types.port;
                default = 51820;
                description = "The UDP port of every node that sets none of its own.";
                example = 51821;
              };
            };
            description = "The mesh file's `[mesh]` table (see the mesh file schema in README.md).";
            example = {
              name = "home";
              keepalive_s = 25;
            };
          };
          options.node = mkOption {
            type = types.listOf nodeModule;
            default = [ ];
            description = "The mesh file's `[[node]]` entries: every whalescale node, this one included.";
          };
        }
      );
      default = null;
      description = ''
        The mesh file as Nix, rendered to TOML at /etc/whalescale/mesh.toml. Every node of
        the mesh gets the same value; a node finds its own entry by its key. Keys not
        declared here pass through to the file unchanged (`[[wireguard]]` peers, a node's
        `port`, ...); `whalescale check` validates the result before every start. Private
        keys must not appear here (an assertion refuses them): see `privateKeyFile`.
        Exactly one of `settings` and `meshFile` is set.
      '';
      example = literalExpression ''
        {
          mesh = { name = "home"; keepalive_s = 25; };
          node = [
            { name = "anchor-1"; public_key = "5hXK05P5...="; address = "100.96.0.1";
              endpoints = [ "192.0.2.10:51820" ]; anchor = true; }
            { name = "laptop"; public_key = "0Pq2...="; address = "100.96.0.2"; }
          ];
        }
      '';
    };

    meshFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = ''
        A mesh file kept outside Nix (e.g. one copied by other tooling), used as is.
        After changing it, `systemctl reload whalescale` applies it. Exactly one of
        `settings` and `meshFile` is set.
      '';
      example = "/etc/whalescale/mesh.toml";
    };

    privateKeyFile = mkOption {
      type = types.str;
      default = "/etc/whalescale/private.key";
      description = ''
        This node's private key file on the host (not in the Nix store): create it with
        `whalescale keygen /etc/whalescale/private.key` (mode 0600). systemd hands it to
        the service as the credential `private.key`; the file itself stays root's.
      '';
      example = "/run/keys/whalescale.key";
    };

    interfaceName = mkOption {
      type = types.strMatching "[A-Za-z0-9_.-]{1,15}";
      default = "ws0";
      description = "The TUN device the agent creates (at most 15 characters).";
      example = "mesh0";
    };

    nodeName = mkOption {
      type = types.nullOr nodeNameType;
      default = null;
      description = ''
        This node's `name` in `settings.node`, for its `port`. The agent finds its own
        entry by its key, which the module never sees. Needed with `openFirewall` when a
        node in `settings` sets its own `port`.
      '';
      example = "anchor-1";
    };

    port = mkOption {
      type = types.port;
      default =
        if ownNode != null && ownNode ? port then
          ownNode.port
        else if cfg.settings != null then
          cfg.settings.mesh.port
        else
          51820;
      defaultText = literalExpression ''
        the `port` of the node named `nodeName` in `settings.node`, else
        `settings.mesh.port`, else 51820
      '';
      description = ''
        The UDP port this node listens on, as the mesh file says (its node's `port`, else
        `mesh.port`). Used only by `openFirewall`: the agent reads its port from the mesh.
      '';
      example = 51821;
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Whether to open this node's UDP `port` in the firewall.";
      example = true;
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "More arguments for `whalescale up`.";
      example = [ "--no-offload" ];
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = (cfg.settings == null) != (cfg.meshFile == null);
        message = ''
          services.whalescale: set exactly one of `settings` (the mesh as Nix) and
          `meshFile` (a mesh file on the host); ${
            if cfg.settings == null then "neither is set" else "both are set"
          }.
        '';
      }
      (
        let
          found = if cfg.settings == null then [ ] else secretPaths "services.whalescale.settings" cfg.settings;
        in
        {
          assertion = found == [ ];
          message = ''
            ${lib.concatStringsSep ", " found}: private keys must not be in the mesh, which
            every node gets (and which lands in the world-readable Nix store); give this
            node's key with services.whalescale.privateKeyFile.
          '';
        }
      )
      {
        assertion = cfg.nodeName == null || cfg.settings == null || ownNode != null;
        message = ''
          services.whalescale.nodeName = "${toString cfg.nodeName}": settings.node has no node
          of that name.
        '';
      }
      {
        # Set by the user (above the default's priority), `port` needs no node name.
        assertion =
          !cfg.openFirewall
          || cfg.nodeName != null
          || ownPorts == [ ]
          || options.services.whalescale.port.highestPrio < (lib.mkOptionDefault null).priority;
        message = ''
          services.whalescale.openFirewall: nodes in settings.node set their own port
          (${lib.concatStringsSep ", " ownPorts}), so the port to open depends on which
          node this is: set services.whalescale.nodeName (or services.whalescale.port).
        '';
      }
      {
        assertion = lib.hasPrefix "/" cfg.privateKeyFile && !lib.hasPrefix builtins.storeDir cfg.privateKeyFile;
        message = ''
          services.whalescale.privateKeyFile = "${cfg.privateKeyFile}": give an absolute path
          on the host, outside the Nix store (the store is world-readable).
        '';
      }
    ];

    environment.systemPackages = [ cfg.package ];

    environment.etc."whalescale/mesh.toml" = lib.mkIf (cfg.settings != null) {
      source = renderedMesh;
    };

    networking.firewall.allowedUDPPorts = lib.mkIf cfg.openFirewall [ cfg.port ];

    # Forwarding is host policy: on for the node that forwards for the mesh (found by
    # `nodeName`), left alone elsewhere.
    boot.kernel.sysctl =
      lib.optionalAttrs forwards {
        "net.ipv4.ip_forward" = lib.mkDefault 1;
        "net.ipv6.conf.all.forwarding" = lib.mkDefault 1;
      }
      # Replies to the agent's marked datagrams pass strict reverse path filtering only
      # when the kernel takes the mark into account (as wg-quick sets it).
      // lib.optionalAttrs usesExit { "net.ipv4.conf.all.src_valid_mark" = lib.mkDefault 1; };
    # The firewall's own reverse path check is not mark-aware in its iptables form.
    networking.firewall.checkReversePath = lib.mkIf usesExit (lib.mkDefault "loose");
    # The agent answers DNS for the mesh's names on its tunnel addresses: open port 53 on
    # the tunnel only, never on the LAN.
    networking.firewall.interfaces.${cfg.interfaceName} = {
      allowedUDPPorts = [ 53 ];
      allowedTCPPorts = [ 53 ];
    };
    # The unit's user (deploy/whalescale.sysusers): static, so that the system bus
    # takes its connection; the unit keeps a dynamic user's sandbox.
    users.users.whalescale = {
      isSystemUser = true;
      group = "whalescale";
      description = "whalescale mesh VPN agent";
    };
    users.groups.whalescale = { };

    # systemd-resolved sends NAME.SUFFIX to the agent once it may register itself for
    # the interface.
    security.polkit.extraConfig =
      lib.mkIf config.services.resolved.enable (builtins.readFile ../deploy/50-whalescale.rules);

    # The dynamic user must open /dev/net/tun: udev makes it 0666, a system without udev
    # (a container) keeps 0600 (deploy/whalescale-tun.conf, the same line).
    systemd.tmpfiles.rules = [ "z /dev/net/tun 0666 - - -" ];

    systemd.services.whalescale = {
      description = "whalescale mesh VPN agent";
      wantedBy = [ "multi-user.target" ];
      # nft: an exit node's masquerade and the marks' table; resolvectl: the names'
      # registration with systemd-resolved.
      path = [
        pkgs.nftables
        config.systemd.package
      ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      # A new mesh from `settings` is applied by ExecReload, which keeps sessions to
      # unchanged peers; a new package, key path or argument restarts the agent.
      reloadTriggers = lib.optional (cfg.settings != null) renderedMesh;
      # A switch restarts the agent instead of stopping it before the activation and
      # starting it after: the tunnel is down for a moment, not for the whole switch, so
      # an upgrade applied over the mesh keeps its SSH session.
      stopIfChanged = false;
      # No start limit: a node that gives up restarting is off the mesh until someone
      # logs in, perhaps only possible through that mesh.
      startLimitIntervalSec = 0;

      serviceConfig = {
        Type = "exec";
        # Refuse to start on a broken mesh file: the error names file:line:col.
        ExecStartPre = "${exe} check ${meshPath}";
        ExecStart = lib.concatStringsSep " " (
          [
            exe
            "up"
            meshPath
            "--key"
            "%d/private.key"
            "--interface"
            cfg.interfaceName
            "--state-dir"
            stateDir
          ]
          ++ map lib.escapeShellArg cfg.extraArgs
        );
        # Applies a valid new mesh file without dropping sessions; a bad one is refused,
        # the running mesh stays, and the command and the journal say why.
        ExecReload = "${exe} reload --state-dir ${stateDir}";
        Restart = "on-failure";
        RestartSec = "2s";

        # The key reaches the service as a credential readable by it alone.
        LoadCredential = "private.key:${cfg.privateKeyFile}";
        # The last-known-good cache and the control socket live here.
        StateDirectory = "whalescale";
        StateDirectoryMode = "0700";
        # Not ConfigurationDirectory (as deploy/whalescale.service has): /etc/whalescale
        # belongs to environment.etc here, and the unit only reads it.

        # Least privilege: a dynamic user, nothing in the file system to write but its
        # state directory, and everything below locked unless a line says why not.
        DynamicUser = true;
        # ...under the static system user below: the system bus drops a dynamic user's
        # connection (systemd issue 22737), and the agent registers the mesh's names with
        # systemd-resolved over it.
        User = "whalescale";
        # Relaxed: CAP_NET_ADMIN creates and configures the TUN device, its routes and an
        # exit node's rules and nft tables, and raises socket buffers beyond rmem_max;
        # CAP_NET_BIND_SERVICE binds port 53 on the tunnel addresses (the mesh's names).
        CapabilityBoundingSet = [
          "CAP_NET_ADMIN"
          "CAP_NET_BIND_SERVICE"
        ];
        AmbientCapabilities = [
          "CAP_NET_ADMIN"
          "CAP_NET_BIND_SERVICE"
        ];
        NoNewPrivileges = true;
        # Relaxed: /dev/net/tun is the one device the agent opens. PrivateDevices would
        # hide it, so the device policy is closed with this single exception instead.
        DevicePolicy = "closed";
        DeviceAllow = [ "/dev/net/tun rw" ];
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectKernelLogs = true;
        ProtectKernelModules = true;
        ProtectKernelTunables = true;
        ProtectControlGroups = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        # Relaxed: the host's network (no PrivateNetwork) is the point of a VPN. Beyond
        # IP, AF_NETLINK configures the device and routes, AF_UNIX is the control socket.
        RestrictAddressFamilies = [
          "AF_INET"
          "AF_INET6"
          "AF_NETLINK"
          "AF_UNIX"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" ];
        SystemCallErrorNumber = "EPERM";
        UMask = "0077";
      };
    };
  };
}
