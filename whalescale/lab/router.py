"""A home router for the lab: a NAT gateway namespace running Debian's `miniupnpd`.

Topology: internet <-wan-> gateway <-lan-> each LAN host. The gateway masquerades the LAN,
drops unsolicited new traffic arriving on its WAN side (`input` chain, as real routers
do), and lets miniupnpd add DNAT/forward rules to the three empty chains it owns.

miniupnpd gotchas this file works around (see docs of the lab):
- Debian's `nft_init.sh` is broken, so the ruleset with the empty chains `miniupnpd`,
  `prerouting_miniupnpd` and `postrouting_miniupnpd` is ours.
- It refuses to forward while its WAN address is private (every lab address is):
  `ext_perform_stun=yes` against our STUN responder in the internet namespace shows it an
  unfiltered 1:1 NAT, which enables forwarding.
- Its mappings survive its shutdown: `close` stops it, then flushes its chains.
- It answers NAT-PMP and PCP (both UDP 5351, `enable_natpmp=yes`) only on the LAN side.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from whalescale.lab.closing import Closing
from whalescale.lab.errors import LabError
from whalescale.lab.lab import Lab
from whalescale.lab.netns import Host, Link
from whalescale.lab.proc import Proc

STUN_PORT = 3478
NFT_TABLE = "filter"  # family inet; miniupnpd's default table name for both roles
MINIUPNPD_CHAINS = ("miniupnpd", "prerouting_miniupnpd", "postrouting_miniupnpd")
START_TIMEOUT_S = 10.0


def gateway_ruleset(lan_ifnames: Sequence[str], lan_subnets: Sequence[str], wan: str) -> str:
    """Masquerading NAT with miniupnpd's empty chains jumped to from forward and nat."""
    lans = ", ".join(f'"{name}"' for name in lan_ifnames)
    subnets = ", ".join(lan_subnets)
    return f"""\
table inet {NFT_TABLE}
delete table inet {NFT_TABLE}
table inet {NFT_TABLE} {{
    chain input {{
        type filter hook input priority 0; policy accept;
        iifname "{wan}" ct state new drop
    }}
    chain forward {{
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iifname {{ {lans} }} accept
        jump miniupnpd
    }}
    chain miniupnpd {{
    }}
    chain prerouting {{
        type nat hook prerouting priority -100; policy accept;
        jump prerouting_miniupnpd
    }}
    chain postrouting {{
        type nat hook postrouting priority 100; policy accept;
        jump postrouting_miniupnpd
        ip saddr {{ {subnets} }} oifname "{wan}" masquerade
    }}
    chain prerouting_miniupnpd {{
    }}
    chain postrouting_miniupnpd {{
    }}
}}
"""


def miniupnpd_config(
    *, wan: str, lan_ifnames: Sequence[str], stun_host: str, stun_port: int
) -> str:
    """A miniupnpd 2.3.1 configuration (key names as in its /usr/share/miniupnpd sample)."""
    listening = "".join(f"listening_ip={name}\n" for name in lan_ifnames)
    return (
        f"ext_ifname={wan}\n"
        f"{listening}"
        "http_port=0\n"
        "enable_upnp=yes\n"
        # There is no separate PCP switch: this one opens UDP 5351 for NAT-PMP and PCP.
        "enable_natpmp=yes\n"
        "secure_mode=yes\n"
        "ext_perform_stun=yes\n"
        f"ext_stun_host={stun_host}\n"
        f"ext_stun_port={stun_port}\n"
        f"upnp_table_name={NFT_TABLE}\n"
        f"upnp_nat_table_name={NFT_TABLE}\n"
        "min_lifetime=60\n"
        "max_lifetime=86400\n"
        "system_uptime=no\n"
        f"uuid={uuid.uuid4()}\n"
        "allow 1024-65535 0.0.0.0/0 1024-65535\n"
        "deny 0-65535 0.0.0.0/0 0-65535\n"
    )


@dataclass
class Router(Closing):
    """A running miniupnpd gateway; `close` (or leaving `with`) stops it and flushes."""

    gateway: Host
    wan: Link
    lans: list[Link]
    stun: Proc
    miniupnpd: Proc

    @property
    def wan_addr(self) -> str:
        """The gateway's address on the internet side (its "public" address)."""
        return self.wan.addr_of(self.gateway)

    def lan_addr(self, host: Host) -> str:
        """The gateway's address on `host`'s LAN link."""
        for link in self.lans:
            if host in (link.a, link.b):
                return link.addr_of(self.gateway)
        raise LabError(f"{host.name} is not on a LAN of {self.gateway.name}")

    def miniupnpd_rules(self) -> str:
        """The rules miniupnpd has added so far, as `nft list chain` prints them."""
        return "".join(
            self.gateway.run("nft", "list", "chain", "inet", NFT_TABLE, chain).stdout
            for chain in MINIUPNPD_CHAINS
        )

    def close(self) -> None:
        """Stop miniupnpd and the STUN responder, then flush miniupnpd's chains (its
        mappings outlive it). Idempotent; the lab's teardown remains the backstop."""
        self.miniupnpd.stop()
        self.stun.stop()
        for chain in MINIUPNPD_CHAINS:
            self.gateway.run("nft", "flush", "chain", "inet", NFT_TABLE, chain, check=False)


def miniupnpd_router(lab: Lab, lan_hosts: Sequence[Host], *, name: str = "gw",
                     wan_subnet: str | None = None) -> Router:
    """A gateway `name` between the internet and `lan_hosts` (one LAN link each), running
    miniupnpd with UPnP IGD, NAT-PMP and PCP; returns once miniupnpd listens.

    `wan_subnet`: its WAN network (default: the lab's next private one; a port mapper
    that refuses private external addresses needs a public-looking one)."""
    inet = lab.internet()
    gateway = lab.host(name)
    gateway.set_forwarding(True)
    wan = lab.link(inet, gateway, subnet=wan_subnet)
    gateway.route_via(wan)
    lans = []
    for host in lan_hosts:
        lan = lab.link(gateway, host)
        host.route_via(lan)
        lans.append(lan)
    lan_ifnames = [lan.a_ifname for lan in lans]
    gateway.nft(
        gateway_ruleset(
            lan_ifnames, [f"{lan.a_addr}/{lan.prefixlen}" for lan in lans], wan.b_ifname
        )
    )
    stun = inet.spawn(
        sys.executable, "-m", "whalescale.nat.stun_responder", "--port", str(STUN_PORT)
    )
    if not stun.wait_for_log(r"stun responder on", START_TIMEOUT_S):
        stun.stop()
        raise LabError(f"STUN responder did not start: {stun.log()}")
    conf = lab.tempdir / f"{name}-miniupnpd.conf"
    conf.write_text(
        miniupnpd_config(
            wan=wan.b_ifname, lan_ifnames=lan_ifnames, stun_host=wan.a_addr, stun_port=STUN_PORT
        )
    )
    pid_file = lab.tempdir / f"{name}-miniupnpd.pid"
    # -d: foreground with the log on stderr (so in the Proc's log file).
    daemon = gateway.spawn("miniupnpd", "-d", "-f", str(conf), "-P", str(pid_file))
    router = Router(gateway, wan, lans, stun, daemon)
    if not daemon.wait_for_log(r"Listening for NAT-PMP/PCP traffic", START_TIMEOUT_S):
        router.close()
        raise LabError(f"miniupnpd did not start in {name}: {daemon.log()[-2000:]}")
    if "does not support port forwarding" in daemon.log():
        router.close()
        raise LabError(f"miniupnpd in {name} disabled forwarding: {daemon.log()[-2000:]}")
    return router
