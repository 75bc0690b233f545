# whalescale as a Python application, built from pyproject.toml with setuptools.
# Name, version and the entry point (`whalescale`) come from pyproject.toml itself.
{ lib, python3Packages }:

let
  project = (builtins.fromTOML (builtins.readFile ../pyproject.toml)).project;
in
python3Packages.buildPythonApplication {
  pname = project.name;
  inherit (project) version;
  # A PEP 517 build (the spelling `format = "pyproject"` in older nixpkgs).
  pyproject = true;

  # Only what the wheel is built from: a change to tests or docs does not rebuild it.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../pyproject.toml
      ../whalescale
    ];
  };

  build-system = [ python3Packages.setuptools ];

  # pyproject.toml's [project] dependencies, by their nixpkgs attribute names, in its
  # order; tests/nix/test_nix.py fails when the two lists differ.
  dependencies = with python3Packages; [
    trio
    noiseprotocol # pinned ==0.3.1 upstream: the session core reads its split keys
    cryptography
    pynacl
    attrs
    cattrs
    tomlkit
    rich
    numpy
    prometheus-client
    miniupnpc
  ];

  # pyproject.toml's extras. Not installed: without matplotlib, the commands that plot
  # say how to get it (whalescale/plots.py).
  optional-dependencies = with python3Packages; {
    plots = [ matplotlib ];
  };

  # The test suite needs root, network namespaces and lab tools; the build only proves
  # that the package imports with nixpkgs' versions of its dependencies.
  pythonImportsCheck = [
    "whalescale"
    "whalescale.cli"
    "whalescale.agent.agent"
  ];

  meta = {
    description = project.description;
    license = lib.licenses.mit;
    mainProgram = "whalescale";
    platforms = lib.platforms.linux;
  };
}
