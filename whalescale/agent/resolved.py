"""Telling systemd-resolved that names under the mesh's suffix are asked of the agent on
this interface (`resolvectl`, its D-Bus client), and taking it back on stop.

The domain is routing-only (`~SUFFIX`) and the link is no default route, so resolved
sends the mesh's names here and nothing else: other names never reach the mesh.
Where resolved is absent (no resolvectl, or it cannot reach the daemon), the caller
logs where names are served, for the admin to point a resolver at.
"""

from __future__ import annotations

import shutil
import subprocess

import trio

from ..config.schema import TunnelAddress

RESOLVECTL_TIMEOUT_S = 5.0


def register_commands(interface: str, addresses: list[TunnelAddress], suffix: str
                      ) -> list[list[str]]:
    return [["resolvectl", "dns", interface, *map(str, addresses)],
            ["resolvectl", "domain", interface, f"~{suffix}"],
            ["resolvectl", "default-route", interface, "false"]]


def revert_command(interface: str) -> list[str]:
    return ["resolvectl", "revert", interface]


async def register(interface: str, addresses: list[TunnelAddress], suffix: str
                   ) -> str | None:
    """None once resolved took it all, else why not (resolvectl's own words); all or
    nothing: a half-done registration is taken back."""
    if shutil.which("resolvectl") is None:
        return "resolvectl not found"
    for done, command in enumerate(register_commands(interface, addresses, suffix)):
        why = await _run(command)
        if why is not None:
            if done:
                await revert(interface)
            return why
    return None


async def revert(interface: str) -> str | None:
    """Forget our settings for `interface` (a TUN that stays would keep them otherwise)."""
    return await _run(revert_command(interface))


async def _run(command: list[str]) -> str | None:
    with trio.move_on_after(RESOLVECTL_TIMEOUT_S):
        try:
            result = await trio.run_process(command, capture_stdout=True, capture_stderr=True,
                                            check=False, stdin=subprocess.DEVNULL)
        except OSError as exc:
            return f"{' '.join(command)}: {exc.strerror or exc}"
        if result.returncode == 0:
            return None
        said = result.stderr.decode(errors="replace").strip() or f"exit {result.returncode}"
        return f"{' '.join(command)}: {said}"
    return f"{' '.join(command)}: no answer within {RESOLVECTL_TIMEOUT_S:g} s"
