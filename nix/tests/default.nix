# The NixOS VM tests: one per scenario file in scenarios/, named as the scenario.
{
  pkgs,
  module,
  package,
}:

let
  inherit (pkgs) lib;
  dir = ../../scenarios;
  files = lib.filter (lib.hasSuffix ".toml") (lib.attrNames (builtins.readDir dir));
in
lib.listToAttrs (
  map (
    file:
    let
      test = import ./scenario.nix {
        inherit lib pkgs module package;
        scenarioFile = dir + "/${file}";
      };
    in
    lib.nameValuePair test.name (pkgs.testers.runNixOSTest test)
  ) files
)
