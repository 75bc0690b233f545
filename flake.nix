{
  description = "whalescale: a peer-to-peer mesh VPN with one declarative mesh file";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: {
        default = pkgs.callPackage ./nix/package.nix { };
      });

      nixosModules.default = ./nix/module.nix;

      # One NixOS VM test per scenario file (scenarios/*.toml), named as the scenario.
      checks = forAllSystems (
        pkgs:
        import ./nix/tests {
          inherit pkgs;
          module = self.nixosModules.default;
          package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        }
      );
    };
}
