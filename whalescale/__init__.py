"""whalescale: a peer-to-peer mesh VPN.

First of all, before trio or anything else is imported: the modules a process only
seldom uses are deferred (deferred_imports.py: 4.5 MiB of the agent's RSS)."""

from . import deferred_imports

deferred_imports.defer()
