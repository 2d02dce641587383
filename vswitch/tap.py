"""Pod interfaces: a persistent TAP whose fd the daemon holds and whose
netdev lives in the pod's network namespace, configured over netlink
(pyroute2)."""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import secrets
import socket
from contextlib import contextmanager, nullcontext

import pytun
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .errors import Conflict, DeviceError, InvalidRequest, NamespaceGone, NotFound, VswitchError
from .netns import NetnsError, NetnsNotFound, entered, fd_identity, open_netns
from .protocol import IFNAME_RE, IFNAME_RULE

# linux/if_tun.h: offloads the pod's stack may use on a TAP with a
# virtio_net_hdr: partial checksums, TCP segmentation (v4, v6, ECN) and,
# on Linux 6.2+, UDP segmentation.
TUNSETOFFLOAD = 0x400454D0
TUN_F = {"csum": 0x01, "tso4": 0x02, "tso6": 0x04, "tso_ecn": 0x08, "uso4": 0x20, "uso6": 0x40}
# What a port asks for: everything, or, in overlay mode, what the data plane
# can cut into wire-size segments before encapsulation (TCP, not UDP).
OFFLOADS_ALL = tuple(TUN_F)
OFFLOADS_TCP = ("csum", "tso4", "tso6", "tso_ecn")
ADDR_GEN_MODE_EUI64 = 0     # linux/if_link.h IN6_ADDR_GEN_MODE_EUI64
IFA_F_NODAD = 0x02          # linux/if_addr.h


@contextmanager
def pod_namespace(netns: str | None):
    """An fd of a pod's namespace (None: ours, for the host port), opened
    once for everything done there; its errors become request errors."""
    if netns is None:
        yield None
        return
    try:
        fd = open_netns(netns)
    except NetnsNotFound as e:
        raise NamespaceGone(str(e)) from None
    except NetnsError as e:
        raise InvalidRequest(str(e)) from None
    try:
        yield fd
    finally:
        os.close(fd)


def random_mac() -> str:
    """A random unicast, locally administered MAC (02:xx:...)."""
    b = bytearray(secrets.token_bytes(6))
    b[0] = (b[0] & 0xFC) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def normalize_mac(mac: str) -> str:
    parts = mac.replace("-", ":").split(":")
    try:
        if len(parts) != 6 or any(len(p) != 2 for p in parts):
            raise ValueError
        octets = bytes(int(p, 16) for p in parts)
    except ValueError:
        raise InvalidRequest(f"bad MAC address {mac!r}: expected six hex octets "
                             "like 02:00:5e:10:00:01") from None
    if octets[0] & 1:
        raise InvalidRequest(f"bad MAC address {mac!r}: multicast addresses cannot be a port's MAC")
    if octets == bytes(6):
        raise InvalidRequest(f"bad MAC address {mac!r}: all-zero")
    return octets.hex(":")


def check_ifname(ifname: str) -> str:
    if not isinstance(ifname, str) or not IFNAME_RE.match(ifname):
        raise InvalidRequest(f"bad interface name {ifname!r}: {IFNAME_RULE}")
    return ifname


@contextmanager
def _netlink(netns: int | None = None):
    """A netlink socket in the namespace of fd `netns` (default: ours). The
    socket stays bound to the namespace it was opened in. (pyroute2's own
    netns support forks a child, which would inherit and trip the event
    loop's signal handling.)"""
    if netns is None:
        ipr = IPRoute()
    else:
        with entered(netns):
            ipr = IPRoute()
    with ipr:
        yield ipr


def quiet_ipv6(ifname: str):
    """No duplicate address detection on the device, for the link-local
    address the kernel forms either: port security already keeps every
    other port off it (it is derived from the port's pinned MAC), and DAD
    would hold it back for a second, in which the node cannot resolve a
    neighbour from the host port (the first IPv6 connections through it
    would wait for a retransmission). And no Router Solicitations: no
    router answers them here (routes come with the address, RA guard
    drops pods' RAs), and Linux sends them forever with backoff, each
    flooded to every port of the network: with 1,000 pods, hundreds a
    minute, a write to every port each."""
    for key in ("accept_dad", "router_solicitations"):
        try:
            with open(f"/proc/sys/net/ipv6/conf/{ifname}/{key}", "w") as f:
                f.write("0")
        except FileNotFoundError:           # no IPv6 in the namespace
            return


class Tap:
    """A TAP device whose netdev lives in a pod's namespace (or, for the host
    port, netns=None, in ours), configured there: name, MAC, MTU, addresses
    (IPv4 and IPv6), EUI-64 link-local address generation (port security
    binds the link-local address formed from the MAC), link up, and a
    default route per family via `gateways`.

    The device is persistent (TUNSETPERSIST): it outlives our fd, so pods
    keep their interface while the daemon restarts, and `reattach=True`
    opens the existing device of that name again (or makes it anew if it is
    gone). close(remove=True) deletes it. `netns_id`: the identity the
    namespace must have (that of the one the port was made in); the
    identity it has is kept as `self.netns_id`.

    `queues`: the device is multi-queue (IFF_MULTI_QUEUE) and this many of
    its queues are opened (one per forwarding thread: the pod's kernel
    spreads its flows over them). A device an older daemon made with one
    queue is re-attached with that one."""

    def __init__(self, netns: str | None, ifname: str, mac: str, mtu: int,
                 addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface],
                 offloads: tuple[str, ...] = OFFLOADS_ALL,
                 gateways: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = (),
                 reattach: bool = False, netns_id: tuple[int, int] | None = None,
                 queues: int = 1):
        with pod_namespace(netns) as fd:
            self.netns_id = fd_identity(fd) if fd is not None else None
            if netns_id is not None and self.netns_id != tuple(netns_id):
                raise NamespaceGone(f"namespace {netns!r} is not the one the port was made in")
            self._open(fd, netns, ifname, mac, mtu, addresses, offloads, gateways, reattach,
                       queues)

    @staticmethod
    def _queues(ifname: str, flags: int, n: int) -> list[pytun.TunTapDevice]:
        """n queues of the device (made multi-queue if it is new); one if it
        exists with a single queue (EINVAL for IFF_MULTI_QUEUE)."""
        try:
            first = pytun.TunTapDevice(name=ifname, flags=flags | pytun.IFF_MULTI_QUEUE)
        except pytun.Error as e:
            if e.args[0] != errno.EINVAL:
                raise
            return [pytun.TunTapDevice(name=ifname, flags=flags)]
        opened = [first]
        try:
            for _ in range(n - 1):
                opened.append(pytun.TunTapDevice(name=ifname, flags=flags | pytun.IFF_MULTI_QUEUE))
        except BaseException:
            for q in opened:
                q.close()
            raise
        return opened

    def _open(self, fd, netns, ifname, mac, mtu, addresses, offloads, gateways, reattach, queues):
        self.vnet_hdr = bool(offloads)      # frames on the fd carry a virtio_net_hdr
        flags = pytun.IFF_TAP | pytun.IFF_NO_PI | (pytun.IFF_VNET_HDR if offloads else 0)
        where = f"namespace {netns!r}" if netns else "the host namespace"
        # One netlink socket in the target namespace serves the check and the set-up.
        with _netlink(fd) as target:
            existed = bool(target.link_lookup(ifname=ifname))
            if existed and not reattach:
                raise Conflict(f"interface {ifname!r} already exists in {where}")
            try:
                # /dev/net/tun opened inside the namespace makes the device there.
                with entered(fd) if fd is not None else nullcontext():
                    self.queues = self._queues(ifname, flags, queues)
                self.device = self.queues[0]
            except pytun.Error as e:
                raise Conflict(f"cannot open TAP {ifname!r} in {where}: {e} (an interface of "
                               "that name already exists and is not a TAP?)") from None
            try:
                for q in self.queues:
                    os.set_blocking(q.fileno(), False)
                self.offloads = self._enable_offloads(offloads) if offloads else []
                index = target.link_lookup(ifname=ifname)[0]
                with entered(fd) if fd is not None else nullcontext():
                    quiet_ipv6(ifname)
                self._configure(target, index, mac, mtu, addresses, gateways)
                self.device.persist(True)
            except NetlinkError as e:
                self.close(remove=not existed)
                raise DeviceError(f"configuring {ifname!r} in {where} failed: {e.args[-1]}") from None
            except BaseException:
                self.close(remove=not existed)
                raise

    @staticmethod
    def _configure(ipr: IPRoute, index: int, mac, mtu, addresses, gateways):
        """Idempotent, so that re-attaching a configured device is fine.
        IPv6 addresses skip duplicate address detection (IPAM made them
        unique; DAD would hold them back for a second or two)."""
        ipr.link("set", index=index, address=mac, mtu=mtu)
        try:
            ipr.link("set", index=index, IFLA_AF_SPEC={"attrs": [("AF_INET6", {"attrs": [
                ("IFLA_INET6_ADDR_GEN_MODE", ADDR_GEN_MODE_EUI64)]})]})
        except NetlinkError as e:
            if e.code != errno.EACCES:      # IPv6 is off in the namespace: nothing to form
                raise
        for addr in addresses:
            if addr.version == 4:
                _exists_ok(ipr.addr, "add", index=index, address=str(addr.ip),
                           prefixlen=addr.network.prefixlen,
                           broadcast=str(addr.network.broadcast_address))
            else:
                try:
                    _exists_ok(ipr.addr, "add", index=index, address=str(addr.ip),
                               prefixlen=addr.network.prefixlen, flags=IFA_F_NODAD)
                except NetlinkError as e:
                    if e.code == errno.EACCES:
                        raise DeviceError(f"cannot give it {addr}: IPv6 is disabled in its "
                                          "namespace (net.ipv6.conf.*.disable_ipv6)") from None
                    raise
        ipr.link("set", index=index, state="up")
        for gateway in gateways:
            _exists_ok(ipr.route, "add", dst="0.0.0.0/0" if gateway.version == 4 else "::/0",
                       gateway=str(gateway), oif=index)

    def _enable_offloads(self, wanted: tuple[str, ...]) -> list[str]:
        """Turn on what is wanted and the kernel supports; returns the names."""
        without_uso = tuple(n for n in wanted if not n.startswith("uso"))
        for names in (wanted, without_uso):     # USO needs Linux 6.2+
            try:
                fcntl.ioctl(self.device.fileno(), TUNSETOFFLOAD, sum(TUN_F[n] for n in names))
                return list(names)
            except OSError:
                continue
        return []

    def fileno(self) -> int:
        return self.device.fileno()

    def fds(self) -> list[int]:
        """Its queues' fds (the first is fileno())."""
        return [q.fileno() for q in self.queues]

    def close(self, remove: bool = True):
        """Let go of the device; it stays (for a restart) unless `remove`."""
        if remove:
            try:
                self.device.persist(False)
            except pytun.Error:
                pass
        for q in self.queues:
            q.close()


def _exists_ok(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except NetlinkError as e:
        if e.code != errno.EEXIST:
            raise


def inspect(netns: str, ifname: str) -> dict | None:
    """What a pod interface looks like now (None if it is gone): its MAC,
    whether it is up, its addresses and default gateways (both families;
    link-local addresses left out)."""
    try:
        with pod_namespace(netns) as fd, _netlink(fd) as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                return None
            link = ipr.get_links(found[0])[0]
            addresses = [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                         for family in (socket.AF_INET, socket.AF_INET6)
                         for a in ipr.get_addr(index=found[0], family=family)
                         if not a.get_attr("IFA_ADDRESS").startswith("fe80:")]
            gateways = [r.get_attr("RTA_GATEWAY")
                        for family in (socket.AF_INET, socket.AF_INET6)
                        for r in ipr.get_routes(family=family)
                        if r["dst_len"] == 0 and r.get_attr("RTA_OIF") == found[0]
                        and r.get_attr("RTA_GATEWAY")]
    except VswitchError:                    # the namespace is gone or not acceptable
        return None
    return {"mac": link.get_attr("IFLA_ADDRESS"), "up": bool(link["flags"] & 1),
            "addresses": addresses, "gateways": gateways}


def remove_device(netns: str | None, ifname: str, netns_id: tuple[int, int] | None):
    """Delete a port's TAP that we do not hold open (one a previous run
    left), only in the namespace it was made in (netns_id) and only if it
    is a TAP: whatever else has that name there is not ours. Nothing to
    do if either is gone."""
    try:
        with pod_namespace(netns) as fd, _netlink(fd) as ipr:
            if netns_id is not None and fd_identity(fd) != tuple(netns_id):
                return
            found = ipr.link_lookup(ifname=ifname)
            if found and ipr.get_links(found[0])[0].get_nested(
                    "IFLA_LINKINFO", "IFLA_INFO_KIND") == "tun":
                ipr.link("del", index=found[0])
    except NetlinkError as e:
        if e.code != errno.ENODEV:
            raise DeviceError(f"deleting {ifname!r}: {e}") from None
    except NamespaceGone:
        pass


def set_mtu(netns: str | None, ifname: str, mtu: int):
    """Change the MTU of a pod's (or, netns=None, the host port's) interface."""
    try:
        with pod_namespace(netns) as fd, _netlink(fd) as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                raise NotFound(f"interface {ifname!r} is gone")
            ipr.link("set", index=found[0], mtu=mtu)
    except NetlinkError as e:
        raise DeviceError(f"setting the MTU of {ifname!r}: {e}") from None
