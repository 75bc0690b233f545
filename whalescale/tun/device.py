"""The TUN device: batched, non-blocking packet I/O with virtio-net offloads.

With offload on, the device is opened IFF_VNET_HDR and TUNSETOFFLOAD lets the kernel hand us
TCP (and UDP) super-packets; `read_batch` splits them into MTU-sized IP packets and
`write_batch` merges TCP segments back into super-packets (see `segment`). Callers only ever
see plain IP packets. A packet the kernel refuses, or a frame we cannot split, is dropped and
counted in `drops` under a named reason, never raised: one bad packet must not stop the agent.
"""

import errno
import fcntl
import ipaddress
import logging
import os
import socket
import struct
from collections import Counter
from typing import Self

from whalescale.netlink import RT_TABLE_MAIN, RTPROT_STATIC, Netlink, NetlinkError
from whalescale.tun import segment

log = logging.getLogger(__name__)

# linux/if_tun.h
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40
TCP_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
UDP_OFFLOADS = TUN_F_USO4 | TUN_F_USO6
IFNAMSIZ = 16

# A super-packet is at most 64 KB of IPv4 (IPv6 adds its 40-byte header outside the length).
_READ_SIZE = segment.VNET_HDR_LEN + 65535 + 40


# Routes we add carry proto "static"; on our own device those are ours to remove.


class TunError(OSError):
    """The TUN device could not be opened or configured."""


TUN_PATH = "/dev/net/tun"


def _open_tun_path() -> int:
    """Open the TUN clone device; a permission error says why and what to do, in one line.

    udev makes /dev/net/tun mode 0666 (creating an interface still takes CAP_NET_ADMIN);
    machines without udev (minimal VMs, containers) keep the kernel's 0600, which an
    unprivileged service user (the unit's DynamicUser=) cannot open.
    """
    try:
        return os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError as error:
        try:
            st = os.stat(TUN_PATH)
            mode = f"mode {st.st_mode & 0o777:04o}, owner uid {st.st_uid}"
        except OSError:
            mode = "mode unknown"
        raise TunError(
            errno.EACCES,
            f"cannot open {TUN_PATH} ({mode}) as uid {os.geteuid()}: permission denied; "
            f"make it readable and writable by all as udev does (`chmod 0666 {TUN_PATH}`, or "
            f"at every boot the tmpfiles.d line `z {TUN_PATH} 0666 - - -`; the Ansible role "
            f"and the NixOS module install that line)",
        ) from error


class TunDevice:
    """An open TUN interface; create with `TunDevice.open`."""

    def __init__(self, fd: int, name: str, offload: bool) -> None:
        self._fd = fd
        self.name = name
        self.offload = offload
        self.drops: Counter[str] = Counter()

    @classmethod
    def open(cls, name: str, *, offload: bool = True) -> Self:
        """Create (or attach to) TUN `name`; without offloads if the kernel refuses them."""
        if len(name.encode()) >= IFNAMSIZ:
            raise TunError(errno.EINVAL, f"interface name {name!r} is longer than 15 bytes")
        fd = _open_tun_path()
        try:
            if offload:
                try:
                    actual = cls._attach(fd, name, IFF_VNET_HDR)
                    offload = cls._enable_offloads(fd)
                except OSError as error:
                    log.warning("TUN %s: IFF_VNET_HDR refused (%s), no offloads", name, error)
                    os.close(fd)
                    fd = _open_tun_path()
                    offload = False
            if not offload:
                actual = cls._attach(fd, name, 0)
        except OSError as error:
            os.close(fd)
            raise TunError(error.errno, f"cannot open TUN {name!r}: {error.strerror}") from error
        return cls(fd, actual, offload)

    @staticmethod
    def _attach(fd: int, name: str, extra_flags: int) -> str:
        request = struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI | extra_flags)
        reply = fcntl.ioctl(fd, TUNSETIFF, request)
        return reply[:IFNAMSIZ].rstrip(b"\0").decode()

    @staticmethod
    def _enable_offloads(fd: int) -> bool:
        """Ask for TCP and UDP segmentation offload, then TCP alone; False if both refused."""
        # The header without num_buffers; set explicitly rather than trusting the default.
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", segment.VNET_HDR_LEN))
        for flags in (TCP_OFFLOADS | UDP_OFFLOADS, TCP_OFFLOADS):
            try:
                fcntl.ioctl(fd, TUNSETOFFLOAD, flags)
                return True
            except OSError as error:
                log.info("TUN offloads %#x refused: %s", flags, error)
        # Keeping IFF_VNET_HDR without offloads would only cost a header per packet.
        raise OSError(errno.EOPNOTSUPP, "TUNSETOFFLOAD refused")

    def fileno(self) -> int:
        return self._fd

    def read_batch(self, mtu: int, max_frames: int = 64) -> list[bytes]:
        """Read up to `max_frames` frames without blocking; return IP packets of <= `mtu`."""
        packets: list[bytes] = []
        read, fd = os.read, self._fd
        for _ in range(max_frames):
            try:
                # Never shorter than the largest frame: a short read truncates silently.
                frame = read(fd, _READ_SIZE)
            except BlockingIOError:
                break
            if not self.offload:
                if len(frame) <= mtu:
                    packets.append(frame)
                else:
                    self.drops["above_mtu"] += 1
                continue
            try:
                packets.extend(segment.split(frame, mtu))
            except segment.SegmentError as error:
                log.debug("TUN %s: dropping frame: %s", self.name, error)
                self.drops["unsplittable"] += 1
        return packets

    def write_batch(self, packets: list[bytes]) -> None:
        """Write IP packets to the kernel; ones it refuses are counted, not raised."""
        frames = segment.coalesce(packets) if self.offload else packets
        write, fd = os.write, self._fd
        for frame in frames:
            try:
                write(fd, frame)
            except BlockingIOError:
                # The device queue is full: the kernel would drop it anyway.
                self.drops["queue_full"] += 1
            except OSError as error:
                # EINVAL, EFAULT, EIO, ...: a malformed packet, blamed on this packet alone.
                self.drops[errno.errorcode.get(error.errno or 0, "oserror").lower()] += 1

    def configure(self, addresses: list[str], routes: dict[str, int]) -> None:
        """Converge the device on `addresses` ("100.96.0.1/32") and `routes` (network ->
        its MTU: a peer's route carries that peer's tunnel MTU, so one device serves
        peers whose sessions carry different sizes), and bring it up. The device's
        own MTU is the largest route's.

        Declarative, so a reload applies only the difference: routes to peers that
        stay are never removed, and their traffic never pauses.
        """
        try:
            self._converge(addresses, routes)
        except NetlinkError as exc:
            raise TunError(exc.errno, f"configuring {self.name}: {exc.strerror}") from exc

    def _converge(self, addresses: list[str], routes: dict[str, int]) -> None:
        try:
            index = socket.if_nametoindex(self.name)
        except OSError:
            raise TunError(errno.ENODEV, f"TUN {self.name!r} has vanished") from None
        want_routes = {ipaddress.ip_network(r): mtu for r, mtu in routes.items()}
        want_addrs = {ipaddress.ip_interface(a) for a in addresses}
        with Netlink() as netlink:
            if want_routes:
                netlink.set_link(index, mtu=max(want_routes.values()))
            have_addrs = {interface for _, interface in netlink.addresses(index)}
            for interface in have_addrs - want_addrs:
                if not interface.ip.is_link_local:
                    netlink.delete_address(index, interface)
            for interface in want_addrs - have_addrs:
                netlink.add_address(index, interface)
            netlink.set_link(index, up=True)
            # Only routes we add; the kernel's own (local, link-local) stay.
            have_routes = {
                route.network: route.mtu
                for family in (socket.AF_INET, socket.AF_INET6)
                for route in netlink.routes(family)
                if route.oif == index and route.table == RT_TABLE_MAIN
                and route.proto == RTPROT_STATIC and route.network.prefixlen > 0}
            for network in have_routes.keys() - want_routes.keys():
                netlink.delete_route(network, index)
            for network, mtu in want_routes.items():
                if have_routes.get(network) != mtu:
                    netlink.replace_route(network, index, mtu=mtu)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
