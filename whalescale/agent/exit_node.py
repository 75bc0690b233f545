"""Exit nodes in the shell: carries ConfigureExit out (exit_routes.py for the node using
an exit, exit_nat.py for the one offering it), logs what changed and why, undoes it all
at a clean stop, and adds what only the OS knows to the status."""

from __future__ import annotations

import logging

from ..node.effects import ConfigureExit
from . import exit_nat
from .exit_routes import TABLE, ExitRoutes

log = logging.getLogger("whalescale.agent")


class ExitNode:
    def __init__(self, interface: str) -> None:
        self.interface = interface
        self.routes = ExitRoutes(interface)
        self.config: ConfigureExit | None = None
        self.error: str | None = None

    def configure(self, config: ConfigureExit) -> str | None:
        """Converge on `config`; the error (also logged), or None."""
        before = self.config
        try:
            self.routes.apply(config)
            if config.offer:
                exit_nat.offer(self.interface)
            elif before is None or before.offer:  # at start: a crashed run's table
                exit_nat.withdraw()
        except OSError as exc:
            self.error = f"exit node: {exc}"
            log.error("%s", self.error)
            return self.error
        self.config, self.error = config, None
        self._say_what_changed(before, config)
        return None

    def _say_what_changed(self, before: ConfigureExit | None, now: ConfigureExit) -> None:
        if now.via is not None and (before is None or before.via != now.via
                                    or before.kill_switch != now.kill_switch):
            dns = ", ".join(map(str, self.routes.resolvers)) or "none found"
            log.info("using exit node %s: the default route (IPv4 and IPv6) goes through "
                     "it (table %d), the LAN and our own traffic stay outside; DNS to %s "
                     "goes through it too; a crash %s", now.via, TABLE, dns,
                     "blocks traffic (kill switch)" if now.kill_switch else
                     "restores the host's routes")
        elif now.via is None and before is not None and before.via is not None:
            log.info("no longer using exit node %s: the host's routes are back", before.via)
        if now.offer and (before is None or not before.offer):
            off = exit_nat.forwarding_off()
            log.info("offering ourselves as an exit node: masquerading what the mesh sends "
                     "out of other interfaces (nft table inet %s)", exit_nat.NFT_TABLE)
            if off:
                log.warning("exit node: forwarding is off (%s = 0): the host drops what the "
                            "mesh sends through us; the host's policy must set it",
                            ", ".join(off))
        elif not now.offer and before is not None and before.offer:
            log.info("no longer offering ourselves as an exit node")

    def stop(self) -> None:
        """A clean stop: remove exactly what we added, so the host's routes are as they
        were (the kill switch too: it is for crashes, not for stops)."""
        if self.config is None:
            return
        try:
            self.routes.apply(None)
            if self.config.offer:
                exit_nat.withdraw()
        except OSError as exc:
            log.error("exit node: cleaning up at stop: %s", exc)

    def status(self) -> tuple[dict[str, object], list[str]]:
        """(what the node's exit status lacks, warnings)."""
        warnings = [self.error] if self.error else []
        if self.config is not None and self.config.offer:
            warnings += [f"exit node: forwarding is off ({name} = 0)"
                         for name in exit_nat.forwarding_off()]
        using = self.config is not None and self.config.via is not None
        return {"table": TABLE if using else None,
                "dns": [str(a) for a in self.routes.resolvers]}, warnings
