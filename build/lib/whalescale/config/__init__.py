"""The mesh file: one TOML file naming every node and WireGuard peer.

`load_mesh`/`parse_mesh` return a checked `Mesh` or raise `ConfigError` listing
every problem with its file, line, column and key path.
"""

from whalescale.config.errors import ConfigError, Problem
from whalescale.config.load import load_mesh, parse_mesh
from whalescale.config.schema import Endpoint, Mesh, Node, Peer, WireGuardPeer

__all__ = [
    "ConfigError",
    "Endpoint",
    "Mesh",
    "Node",
    "Peer",
    "Problem",
    "WireGuardPeer",
    "load_mesh",
    "parse_mesh",
]
