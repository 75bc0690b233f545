"""rtnetlink, the few requests the agent makes, over a plain socket.

The agent needs about a dozen netlink calls: read the host's addresses and default gateway,
hear when addresses change, set its TUN's addresses, MTU and routes, and (using an exit
node) the policy routing rules and the routes of its own table. pyroute2 did
this at a cost of 0.15 s of CPU and 22 MiB at every start (its package imports everything
it can do); these are the same messages, packed with `struct` (linux/rtnetlink.h).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# linux/netlink.h
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x100, 0x200, 0x400, 0x300
# linux/rtnetlink.h
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 16, 18, 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
IFLA_IFNAME, IFLA_MTU = 3, 4
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_METRICS, RTA_TABLE = 1, 4, 5, 6, 8, 15
RTAX_MTU = 2
RT_TABLE_COMPAT, RT_TABLE_MAIN = 252, 254
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_NOWHERE = 0, 253, 255
RTN_UNICAST, RTN_UNREACHABLE = 1, 7
# linux/fib_rules.h
FRA_DST, FRA_PRIORITY, FRA_FWMARK, FRA_SUPPRESS_PREFIXLEN, FRA_TABLE, FRA_FWMASK = (
    1, 6, 10, 14, 15, 16)
FR_ACT_TO_TBL = 1
FIB_RULE_INVERT = 0x2
IFF_UP, IFF_RUNNING = 0x1, 0x40

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst/src len, tos, table, proto, scope, type
_FIB_RULE = struct.Struct("=BBBBBBBBI")  # family, dst/src len, tos, table, -, -, action, flags
_ATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_RECV_BYTES = 1 << 17


class NetlinkError(OSError):
    """The kernel refused a request (the errno it answered, and which request)."""


@dataclass(frozen=True)
class Route:
    network: IPNetwork
    oif: int | None
    table: int
    proto: int
    gateway: str | None
    mtu: int | None
    kind: int = RTN_UNICAST  # RTN_UNREACHABLE: "unreachable <network>"
    metric: int = 0


@dataclass(frozen=True)
class Rule:
    """A policy routing rule that looks a table up (`ip rule`): for packets of `family`
    to `dst` (None: any), with firewall mark `fwmark` (None: any; `invert`: any other
    mark), at `priority`; `suppress_prefixlen`: ignore that table's routes of this
    prefix length or shorter (0: every route but the default)."""

    family: int
    priority: int
    table: int
    dst: IPNetwork | None = None
    fwmark: int | None = None
    invert: bool = False
    suppress_prefixlen: int | None = None


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, data: bytes) -> bytes:
    return _ATTR.pack(_ATTR.size + len(data), kind) + data.ljust(_align(len(data)), b"\0")


def _attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size:
            return  # malformed: stop rather than loop
        yield kind & 0x3FFF, data[offset + _ATTR.size:offset + length]  # no NESTED flag
        offset += _align(length)


def _table_byte(table: int) -> int:
    """The one-byte table field: the id itself, or "see RTA_TABLE/FRA_TABLE" above 255."""
    return table if table < 256 else RT_TABLE_COMPAT


def _route_key(network: IPNetwork, oif: int | None, table: int, metric: int) -> bytes:
    """What names one route: destination, device, table, metric."""
    attrs = _attr(RTA_DST, network.network_address.packed) + _attr(RTA_TABLE, _U32.pack(table))
    if oif is not None:
        attrs += _attr(RTA_OIF, _U32.pack(oif))
    if metric:
        attrs += _attr(RTA_PRIORITY, _U32.pack(metric))
    return attrs


def pack_rule(rule: Rule) -> bytes:
    """A fib_rule_hdr and its attributes, for RTM_NEWRULE and RTM_DELRULE."""
    dst_len = rule.dst.prefixlen if rule.dst is not None else 0
    header = _FIB_RULE.pack(rule.family, dst_len, 0, 0, _table_byte(rule.table), 0, 0,
                            FR_ACT_TO_TBL, FIB_RULE_INVERT if rule.invert else 0)
    attrs = _attr(FRA_PRIORITY, _U32.pack(rule.priority)) + _attr(FRA_TABLE,
                                                                  _U32.pack(rule.table))
    if rule.dst is not None:
        attrs += _attr(FRA_DST, rule.dst.network_address.packed)
    if rule.fwmark is not None:
        attrs += _attr(FRA_FWMARK, _U32.pack(rule.fwmark))
        attrs += _attr(FRA_FWMASK, _U32.pack(0xFFFFFFFF))
    if rule.suppress_prefixlen is not None:
        attrs += _attr(FRA_SUPPRESS_PREFIXLEN, _U32.pack(rule.suppress_prefixlen))
    return header + attrs


def parse_rule(payload: bytes) -> Rule | None:
    """A rule from a RTM_NEWRULE payload; None for one that is not ours to read (not a
    table lookup, an unknown family, a mark under a partial mask, a short message)."""
    if len(payload) < _FIB_RULE.size:
        return None
    family, dst_len, _, _, table, _, _, action, flags = _FIB_RULE.unpack_from(payload)
    if action != FR_ACT_TO_TBL or family not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs = dict(_attrs(payload[_FIB_RULE.size:]))
    u32 = {kind: _U32.unpack(data[:4])[0] for kind, data in attrs.items() if len(data) >= 4}
    if u32.get(FRA_FWMASK, 0xFFFFFFFF) != 0xFFFFFFFF:
        return None
    dst = None
    if FRA_DST in attrs:
        width = 4 if family == socket.AF_INET else 16
        if len(attrs[FRA_DST]) != width or dst_len > width * 8:
            return None
        dst = ipaddress.ip_network((_ip(family, attrs[FRA_DST]), dst_len), strict=False)
    suppress = u32.get(FRA_SUPPRESS_PREFIXLEN)
    return Rule(family=family, priority=u32.get(FRA_PRIORITY, 0),
                table=u32.get(FRA_TABLE, table), dst=dst, fwmark=u32.get(FRA_FWMARK),
                invert=bool(flags & FIB_RULE_INVERT),
                # the kernel reports "not set" as -1, when it reports it at all
                suppress_prefixlen=None if suppress in (None, 0xFFFFFFFF) else suppress)


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def _ip(family: int, data: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(socket.inet_ntop(family, data))


class Netlink:
    """One NETLINK_ROUTE socket: requests and their answers, or (with `groups`) the
    kernel's notices of changes, read with `drain` when `fileno` is readable."""

    def __init__(self, groups: int = 0) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock.bind((0, groups))
        self._seq = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self) -> int:
        """Read every pending notice without waiting; how many datagrams were read. An
        overflowed queue (ENOBUFS: notices were lost) counts as one: something changed."""
        count = 0
        while True:
            try:
                self._sock.recv(_RECV_BYTES, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return count
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
            count += 1

    # -- reading

    def links(self) -> dict[int, tuple[str, int]]:
        """Interface index -> (name, flags: IFF_UP, IFF_RUNNING, ...)."""
        found = {}
        for payload in self._dump(RTM_GETLINK, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            _, _, index, flags, _ = _IFINFO.unpack_from(payload)
            name = dict(_attrs(payload[_IFINFO.size:])).get(IFLA_IFNAME, b"")
            found[index] = (name.rstrip(b"\0").decode(errors="replace"), flags)
        return found

    def addresses(self, index: int | None = None) -> list[tuple[int, IPInterface]]:
        """(interface index, address/prefix) of every address, or those of one interface."""
        found = []
        for payload in self._dump(RTM_GETADDR, _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            family, prefixlen, _, _, at = _IFADDR.unpack_from(payload)
            if index is not None and at != index:
                continue
            attrs = dict(_attrs(payload[_IFADDR.size:]))
            # IFA_LOCAL is our own address where it differs (the far end of a
            # point-to-point link is IFA_ADDRESS); IPv6 has IFA_ADDRESS alone.
            data = attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS))
            if data is not None:
                found.append((at, ipaddress.ip_interface(f"{_ip(family, data)}/{prefixlen}")))
        return found

    def routes(self, family: int, kinds: tuple[int, ...] = (RTN_UNICAST,)) -> list[Route]:
        """The routes of one address family and of `kinds`, every table."""
        found = []
        request = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        for payload in self._dump(RTM_GETROUTE, request):
            _, dst_len, _, _, table, proto, _, kind, _ = _RTMSG.unpack_from(payload)
            if kind not in kinds:
                continue
            attrs = dict(_attrs(payload[_RTMSG.size:]))
            if RTA_TABLE in attrs:
                table = _U32.unpack(attrs[RTA_TABLE])[0]
            dst = _ip(family, attrs[RTA_DST]) if RTA_DST in attrs else (
                ipaddress.IPv4Address(0) if family == socket.AF_INET else ipaddress.IPv6Address(0))
            metrics = dict(_attrs(attrs.get(RTA_METRICS, b"")))
            found.append(Route(
                network=ipaddress.ip_network(f"{dst}/{dst_len}"),
                oif=_U32.unpack(attrs[RTA_OIF])[0] if RTA_OIF in attrs else None,
                table=table, proto=proto,
                gateway=str(_ip(family, attrs[RTA_GATEWAY])) if RTA_GATEWAY in attrs else None,
                mtu=_U32.unpack(metrics[RTAX_MTU])[0] if RTAX_MTU in metrics else None,
                kind=kind,
                metric=_U32.unpack(attrs[RTA_PRIORITY])[0] if RTA_PRIORITY in attrs else 0))
        return found

    def rules(self, family: int) -> list[Rule]:
        """The policy routing rules of one address family that look a table up."""
        return [rule for payload in self._dump(RTM_GETRULE, _FIB_RULE.pack(family, *[0] * 8))
                if (rule := parse_rule(payload)) is not None]

    # -- changing

    def set_link(self, index: int, *, up: bool | None = None, mtu: int | None = None) -> None:
        """Bring a link up or down and/or set its MTU (what is None stays as it is)."""
        info = _IFINFO.pack(socket.AF_UNSPEC, 0, index, IFF_UP if up else 0,
                            0 if up is None else IFF_UP)
        attrs = _attr(IFLA_MTU, _U32.pack(mtu)) if mtu is not None else b""
        self._request(RTM_NEWLINK, NLM_F_ACK, info + attrs, f"setting link {index}")

    def add_address(self, index: int, interface: IPInterface) -> None:
        self._address(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, index, interface)

    def delete_address(self, index: int, interface: IPInterface) -> None:
        self._address(RTM_DELADDR, NLM_F_ACK, index, interface)

    def replace_route(self, network: IPNetwork, oif: int | None, *, mtu: int | None = None,
                      proto: int = RTPROT_STATIC, table: int = RT_TABLE_MAIN,
                      kind: int = RTN_UNICAST, metric: int = 0) -> None:
        """The route to `network` through `oif` (None with RTN_UNREACHABLE) in `table`,
        replacing the one there of the same metric."""
        scope = RT_SCOPE_LINK if kind == RTN_UNICAST else RT_SCOPE_UNIVERSE
        header = _RTMSG.pack(_family(network.version), network.prefixlen, 0, 0,
                             _table_byte(table), proto, scope, kind, 0)
        attrs = _route_key(network, oif, table, metric)
        if mtu is not None:
            attrs += _attr(RTA_METRICS, _attr(RTAX_MTU, _U32.pack(mtu)))
        self._request(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, header + attrs,
                      f"adding route {network} (table {table})")

    def delete_route(self, network: IPNetwork, oif: int | None, *,
                     table: int = RT_TABLE_MAIN, metric: int = 0) -> None:
        # NOWHERE scope and no type: the kernel matches the route whatever they are
        header = _RTMSG.pack(_family(network.version), network.prefixlen, 0, 0,
                             _table_byte(table), 0, RT_SCOPE_NOWHERE, 0, 0)
        self._request(RTM_DELROUTE, NLM_F_ACK, header + _route_key(network, oif, table, metric),
                      f"deleting route {network} (table {table})")

    def add_rule(self, rule: Rule) -> None:
        self._request(RTM_NEWRULE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, pack_rule(rule),
                      f"adding rule {rule}")

    def delete_rule(self, rule: Rule) -> None:
        self._request(RTM_DELRULE, NLM_F_ACK, pack_rule(rule), f"deleting rule {rule}")

    def _address(self, kind: int, flags: int, index: int, interface: IPInterface) -> None:
        family = _family(interface.version)
        packed = interface.ip.packed
        header = _IFADDR.pack(family, interface.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
        attrs = _attr(IFA_ADDRESS, packed)
        if family == socket.AF_INET:
            attrs = _attr(IFA_LOCAL, packed) + attrs
        verb = "adding" if kind == RTM_NEWADDR else "deleting"
        self._request(kind, flags, header + attrs, f"{verb} address {interface}")

    # -- the exchange

    def _send(self, kind: int, flags: int, body: bytes) -> int:
        self._seq += 1
        self._sock.send(_HEADER.pack(_HEADER.size + len(body), kind, NLM_F_REQUEST | flags,
                                     self._seq, 0) + body)
        return self._seq

    def _replies(self, seq: int, what: str) -> Iterator[bytes]:
        """Payloads answering request `seq`, until its end (DONE, or the error/ACK)."""
        while True:
            data = self._sock.recv(_RECV_BYTES)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind, flags, got_seq, _ = _HEADER.unpack_from(data, offset)
                if length < _HEADER.size:
                    raise NetlinkError(errno.EBADMSG, f"{what}: a malformed netlink answer")
                payload = data[offset + _HEADER.size:offset + length]
                offset += _align(length)
                if got_seq != seq:
                    continue  # an answer to an earlier request we stopped reading
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise NetlinkError(code, f"{what}: {os.strerror(code)}")
                    return
                yield payload
                if not flags & NLM_F_MULTI:
                    return

    def _request(self, kind: int, flags: int, body: bytes, what: str) -> None:
        for _ in self._replies(self._send(kind, flags, body), what):
            pass

    def _dump(self, kind: int, body: bytes) -> Iterator[bytes]:
        return self._replies(self._send(kind, NLM_F_DUMP, body), f"reading ({kind})")

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

