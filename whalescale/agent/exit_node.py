"""Exit nodes in the shell: carries ConfigureExit out (exit_routes.py and nft.py's marks
table for the node using an exit, nft.py's exit table for the one offering it), logs what
changed and why, undoes it all at a clean stop, and adds what only the OS knows to the
status."""

from __future__ import annotations

import logging

from ..node.effects import ConfigureExit
from . import nft, sysctl
from .exit_routes import FWMARK, TABLE, ExitRoutes

log = logging.getLogger("whalescale.agent")

_RP_FILTER = ("strict reverse path filtering (rp_filter = 1) with "
              "net.ipv4.conf.all.src_valid_mark = 0 drops the answers to our own datagrams: "
              "the host's policy must set src_valid_mark = 1 (or rp_filter = 2)")


class ExitNode:
    def __init__(self, interface: str) -> None:
        self.interface = interface
        self.routes = ExitRoutes(interface)
        self.config: ConfigureExit | None = None  # what is in force
        self.asked: ConfigureExit | None = None  # what was last asked, perhaps in part
        self.error: str | None = None
        self._marks: str | None = None  # the marks table in force (resolv.conf may change)

    def configure(self, config: ConfigureExit) -> str | None:
        """Converge on `config`; the error (also logged), or None."""
        before, self.asked = self.config, config
        try:
            stale = self.routes.apply(config)
            if before is None and stale and config.via is None:
                # a crashed run used an exit: its marks table goes with its rules
                nft.delete(nft.MARKS_TABLE)
            # nft only when something changes
            using, used = config.via is not None, before is not None and before.via is not None
            marks = (nft.marks_ruleset(FWMARK, self.interface, self.routes.resolvers)
                     if using else None)
            if marks is not None and marks != self._marks:
                nft.load(marks)
            elif used and not using:
                nft.delete(nft.MARKS_TABLE)
            self._marks = marks
            if config.offer and (before is None or not before.offer):
                nft.load(nft.exit_ruleset(self.interface))
            elif before is not None and before.offer and not config.offer:
                nft.delete(nft.EXIT_TABLE)
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
            if sysctl.strict_rp_filter_without_marks():
                log.warning("exit node: %s", _RP_FILTER)
        elif now.via is None and before is not None and before.via is not None:
            log.info("no longer using exit node %s: the host's routes are back", before.via)
        if now.offer and (before is None or not before.offer):
            off = sysctl.forwarding_off()
            log.info("offering ourselves as an exit node: masquerading what the mesh sends "
                     "out of other interfaces (nft table inet %s)", nft.EXIT_TABLE)
            if off:
                log.warning("exit node: forwarding is off (%s = 0): the host drops what the "
                            "mesh sends through us; the host's policy must set it",
                            ", ".join(off))
        elif not now.offer and before is not None and before.offer:
            log.info("no longer offering ourselves as an exit node")

    def stop(self) -> None:
        """A clean stop: remove exactly what we added, so the host's routes are as they
        were (the kill switch too: it is for crashes, not for stops)."""
        asked = [c for c in (self.config, self.asked) if c is not None]
        if not asked:
            return
        try:
            self.routes.apply(None)
            tables = [name for name, added in (
                (nft.MARKS_TABLE, any(c.via is not None for c in asked)),
                (nft.EXIT_TABLE, any(c.offer for c in asked))) if added]
            if tables:
                nft.delete(*tables)
            self._marks = None
        except OSError as exc:
            log.error("exit node: cleaning up at stop: %s", exc)

    def status(self) -> tuple[dict[str, object], list[str]]:
        """(what the node's exit status lacks, warnings)."""
        warnings = [self.error] if self.error else []
        if self.config is not None and self.config.offer:
            warnings += [f"exit node: forwarding is off ({name} = 0)"
                         for name in sysctl.forwarding_off()]
        using = self.config is not None and self.config.via is not None
        if using and sysctl.strict_rp_filter_without_marks():
            warnings.append(f"exit node: {_RP_FILTER}")
        return {"table": TABLE if using else None,
                "dns": [str(a) for a in self.routes.resolvers]}, warnings
