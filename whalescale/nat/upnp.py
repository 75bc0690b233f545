"""UPnP IGD port mapping through PyPI `miniupnpc`: blocking calls, run in a thread.

`miniupnpc` is optional: without it `UpnpError` says so and the state machine moves on.
Discovery is slow (it waits `discover_delay_ms` for SSDP answers, and about 4 s when no
IGD answers), so the IGD found is cached for the next call.
"""

from __future__ import annotations

import threading
from typing import Any

DESCRIPTION = "whalescale"
DEFAULT_DISCOVER_DELAY_MS = 1000


class UpnpError(Exception):
    """No IGD, or it refused; the text says which call failed and why."""


class UpnpClient:
    """One IGD, found on first use; every method blocks (call from a worker thread)."""

    def __init__(self, *, discover_delay_ms: int = DEFAULT_DISCOVER_DELAY_MS) -> None:
        self.discover_delay_ms = discover_delay_ms
        self._igd: Any = None
        self._lock = threading.Lock()  # one call at a time: miniupnpc objects are not shared

    def _device(self) -> Any:
        if self._igd is not None:
            return self._igd
        try:
            import miniupnpc
        except ImportError as exc:
            raise UpnpError("UPnP needs the PyPI package miniupnpc") from exc
        igd = miniupnpc.UPnP()
        igd.discoverdelay = self.discover_delay_ms
        try:
            if igd.discover() == 0:
                raise UpnpError("no UPnP device answered discovery")
            igd.selectigd()
        except UpnpError:
            raise
        except Exception as exc:  # miniupnpc raises bare Exception
            raise UpnpError(f"no UPnP IGD: {exc}") from exc
        self._igd = igd
        return igd

    def add_udp_mapping(
        self, internal_port: int, suggested_external_port: int, lifetime_s: int
    ) -> tuple[str, int, int]:
        """Map UDP `suggested_external_port` to our `internal_port`; returns the external
        address, the external port and the lease in seconds."""
        with self._lock:
            igd = self._device()
            try:
                external_address = igd.externalipaddress()
                # The binding has no lease argument: the lease is 0 (until removed), and
                # renewal at half our own lifetime re-adds the same mapping.
                igd.addportmapping(
                    suggested_external_port, "UDP", igd.lanaddr, internal_port, DESCRIPTION, ""
                )
            except Exception as exc:
                self._igd = None  # look for the IGD again next time
                raise UpnpError(f"AddPortMapping UDP {suggested_external_port}: {exc}") from exc
            return str(external_address), suggested_external_port, lifetime_s

    def delete_udp_mapping(self, external_port: int) -> None:
        with self._lock:
            igd = self._device()
            try:
                igd.deleteportmapping(external_port, "UDP")
            except Exception as exc:
                raise UpnpError(f"DeletePortMapping UDP {external_port}: {exc}") from exc
