# Stand-ins for nixpkgs, for evaluating nix/module.nix, nix/package.nix, the flake and the
# VM tests' node configurations with nothing but nixpkgs' `lib` (tests/nix/test_nix.py).
# Nothing here builds: `pkgs.formats.toml`'s generate returns the TOML text itself,
# written by the small pure-Nix writer below instead of the real one (which needs a build).
{ lib }:

let
  inherit (lib) types mkOption;

  # Enough TOML for a mesh file: top-level tables of scalars and lists of scalars, and
  # arrays of such tables; inside those, a list of tables (a node's firewall rules) as
  # inline tables. Anything deeper is refused rather than written wrongly.
  tomlValue =
    v:
    if builtins.isString v then
      builtins.toJSON v
    else if builtins.isBool v then
      lib.boolToString v
    else if builtins.isInt v || builtins.isFloat v then
      toString v
    else if builtins.isList v then
      "[" + lib.concatMapStringsSep ", " tomlValue v + "]"
    else if builtins.isAttrs v && lib.all (x: !builtins.isAttrs x) (lib.attrValues v) then
      "{ "
      + lib.concatStringsSep ", " (lib.mapAttrsToList (k: x: "${tomlKey k} = ${tomlValue x}") v)
      + " }"
    else
      throw "stub TOML writer: cannot write ${builtins.typeOf v}";
  tomlKey = k: if builtins.match "[A-Za-z0-9_-]+" k != null then k else builtins.toJSON k;
  isTableList = v: builtins.isList v && v != [ ] && lib.all builtins.isAttrs v;
  tomlScalars =
    attrs:
    lib.concatStrings (
      lib.mapAttrsToList (
        k: v:
        if builtins.isAttrs v then
          throw "stub TOML writer: nested table ${k}"
        else
          "${tomlKey k} = ${tomlValue v}\n"
      ) attrs
    );
  toTOML =
    doc:
    let
      tables = lib.filterAttrs (_: v: builtins.isAttrs v || isTableList v) doc;
    in
    tomlScalars (removeAttrs doc (lib.attrNames tables))
    + lib.concatStrings (
      lib.mapAttrsToList (
        k: v:
        if builtins.isAttrs v then
          "\n[${tomlKey k}]\n" + tomlScalars v
        else
          lib.concatMapStrings (t: "\n[[${tomlKey k}]]\n" + tomlScalars t) v
      ) tables
    );

  tomlValueType =
    types.nullOr (
      types.oneOf [
        types.bool
        types.int
        types.float
        types.str
        (types.attrsOf tomlValueType)
        (types.listOf tomlValueType)
      ]
    )
    // {
      description = "TOML value";
    };

  # An option set that takes any attribute, with some list-valued options declared (a
  # list under `anything` would only merge identical definitions).
  open =
    options:
    mkOption {
      type = types.submodule {
        freeformType = types.lazyAttrsOf types.anything;
        inherit options;
      };
      default = { };
    };
  list = mkOption {
    type = types.listOf types.anything;
    default = [ ];
  };
in
rec {
  inherit toTOML;

  package = {
    type = "derivation";
    name = "whalescale-stub";
    outPath = "/nix/store/00000000000000000000000000000000-whalescale-stub";
  };

  # python3Packages holding only `names` (the test gives pyproject.toml's), each package
  # its own name: package.nix naming any other fails the evaluation.
  # buildPythonApplication returns its arguments.
  pythonPackages =
    names:
    lib.genAttrs names (name: name)
    // {
      buildPythonApplication = args: args;
    };

  pkgs = {
    inherit lib;
    formats.toml = _: {
      type = types.attrsOf tomlValueType;
      generate = _name: toTOML;
    };
    writeText = name: _text: "/nix/store/00000000000000000000000000000000-${name}";
    callPackage = fn: args: package;
    testers.runNixOSTest = test: test;
    nftables = "/nix/store/00000000000000000000000000000000-nftables";
  };

  # The NixOS options that nix/module.nix and nix/tests/scenario.nix set.
  nixos =
    { ... }:
    {
      options = {
        assertions = list;
        environment = open { systemPackages = list; };
        networking = open {
          firewall = open {
            allowedUDPPorts = list;
            # NixOS' default: strict
            checkReversePath = mkOption {
              type = types.anything;
              default = true;
            };
          };
        };
        virtualisation = open { vlans = list; };
        systemd = open {
          package = mkOption { default = "/nix/store/00000000000000000000000000000000-systemd"; };
        };
        boot = open { };
        security = open { };
        users = open { };
        # what the module reads of other modules' options
        services.resolved.enable = mkOption {
          type = types.bool;
          default = false;
        };
      };
    };

  evalNixOS =
    modules:
    lib.evalModules {
      modules = [
        nixos
        { _module.args.pkgs = pkgs; }
      ]
      ++ modules;
    };

  failedAssertions = config: map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
}
