"""The node's ports: pods' TAPs and host ports, made, re-attached from
their records, held down (fenced), lost, retired and removed; their
addresses, MACs, rates and labels; their names and data-plane ids. The
Switch's part for ports (its base class), split out by concept; it works on
the switch's tables and data plane, declared here."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from typing import TYPE_CHECKING

from . import netpol
from .config import Config, NetworkConfig
from .datapath import PORT_PEER_BASE, PORT_TUNNEL, DataPlane
from .errors import Conflict, Exhausted, InvalidRequest, NamespaceGone, NotFound, VswitchError
from .ipam import AddressBlocks, Ipam
from .netns import fd_identity, netns_id
from .overlay import Overlay
from .policy import Policies
from .port import PodIdentity, Port, PortObserver, check_rates, unknown_network
from .protocol import MAX_MTU, MIN_MTU, PORT_COUNTERS, PORT_NAME_RE
from .state import PortRecord, State, Taken
from .tap import (
    OFFLOADS_ALL,
    OFFLOADS_TCP,
    Tap,
    check_ifname,
    normalize_mac,
    pod_namespace,
    random_mac,
    remove_device,
)

log = logging.getLogger("vswitch.switch")

# As many as port security binds to a port (_ports.pxd: 8 IPv4, and 4 IPv6
# addresses with the link-local one the pod's kernel forms).
MAX_PORT_IPV4, MAX_PORT_IPV6 = 8, 3


class Ports:
    """(A base of Switch.)"""

    config: Config
    loop: asyncio.AbstractEventLoop
    dataplane: DataPlane
    state: State
    ipam: Ipam
    addresses: AddressBlocks
    observer: PortObserver | None
    policy: Policies
    overlay: Overlay
    ports: dict[str, Port]
    # Ports being created (netlink work in a thread): name -> (network, addresses, MAC).
    _pending: dict[str, tuple[NetworkConfig, list[ipaddress.IPv4Interface |
                                                  ipaddress.IPv6Interface], str]]

    if TYPE_CHECKING:
        def network(self, name: str | None) -> NetworkConfig: ...
        def default_gateways(self, net: NetworkConfig) -> tuple[ipaddress.IPv4Address |
                                                                ipaddress.IPv6Address, ...]: ...

    async def _reattach(self, name: str, record: PortRecord | Exception):
        try:
            if isinstance(record, Exception):
                raise InvalidRequest(f"unreadable record: {record}")
            await self._restore(record)
        except Exception as e:     # one bad record must not keep every other pod down
            log.error("port %s: cannot re-attach, marked lost: %s", name, e)
            self.ports[name] = self._unrestored(name, record, str(e))

    def _held(self, rec: PortRecord) -> Port:
        """A recorded port held down: listed as fenced, not re-attached (its
        device, if a previous run left it, stays unopened: no carrier)."""
        net = self.config.network(rec.network) or unknown_network()
        return Port(rec.name, rec.netns, rec.ifname, net, rec.mac,
                    [ipaddress.ip_interface(a) for a in rec.addresses], None, -1, rec.mtu,
                    rec.secured, rec.attachment, rec.netns_id, rec.rates, state="fenced",
                    final_counters=dict.fromkeys(PORT_COUNTERS, 0),
                    identity=PodIdentity.from_json(rec.identity))

    async def fence(self, port: Port, why: str):
        """Hold a port down: out of the data plane, its interface (and with
        it its addresses and routes) deleted, its record and allocation
        kept for unfence. A port held since start has the device a
        previous run left, if any, deleted."""
        if port.state == "up":
            self.lose(port, why)
        else:
            await self.loop.run_in_executor(None, self._remove_device, port)
        port.state, port.tap = "fenced", None

    @staticmethod
    def _remove_device(port: Port):
        """Delete the device a previous run left for a port (not opened)."""
        try:
            remove_device(port.netns, port.ifname, port.netns_id)
        except VswitchError as e:
            log.error("port %s: %s", port.name, e)

    async def unfence(self, port: Port):
        """Bring a fenced port back from its record (its namespace must be
        the one it was made in; else it is forgotten, as at start)."""
        if self.ports.get(port.name) is not port or port.state != "fenced":
            return          # deleted, or made again by a repeated ADD, meanwhile
        del self.ports[port.name]
        await self._reattach(port.name, self._record(port))

    def _unrestored(self, name: str, rec: PortRecord | Exception, error: str) -> Port:
        """A recorded port that did not come back: listed as lost (with the
        error) until deleted; its record stays for the next start."""
        counters = dict.fromkeys(PORT_COUNTERS, 0)
        if not isinstance(rec, PortRecord):
            return Port(name, "?", "?", unknown_network(), "?", [], None, -1, 0,
                        state="lost", final_counters=counters, error=error)
        net = self.config.network(rec.network) or unknown_network()
        return Port(name, rec.netns, rec.ifname, net, rec.mac, [], None, -1, 0,
                    attachment=rec.attachment, state="lost", final_counters=counters, error=error)

    async def _restore(self, rec: PortRecord):
        """Re-open a recorded port's TAP in its namespace; forget the port
        (and release its address) if the namespace or network is gone, or
        another namespace is at its path now."""
        net = self.config.network(rec.network)
        addresses = [ipaddress.ip_interface(a) for a in rec.addresses]
        try:
            if net is None:
                raise NamespaceGone(f"network {rec.network} is gone")
            await self.create_port(rec.name, rec.netns, rec.ifname, net, rec.mac, addresses,
                                   rec.secured, rec.attachment, rec.mtu, reattach=True,
                                   rates=rec.rates, netns_identity=rec.netns_id,
                                   identity=PodIdentity.from_json(rec.identity))
        except NamespaceGone as e:
            log.info("port %s: %s; forgetting it", rec.name, e)
            await self.state.run(self.state.delete_port, rec.name)
            if rec.attachment:
                await self.state.run(self.ipam.release, *rec.attachment)

    def _address(self, net: NetworkConfig, cidr) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        """A hand-given address: in the subnet of its family, not a special
        one, not in use."""
        try:
            version = ipaddress.ip_interface(cidr).version
            subnet = net.subnet_of(version)
            if subnet is None:
                raise ValueError(f"network {net.name!r} has no IPv{version} subnet")
            addr = ipaddress.ip_interface(cidr if "/" in cidr else f"{cidr}/{subnet.prefixlen}")
        except (ValueError, TypeError) as e:
            raise InvalidRequest(f"bad address {cidr!r}: {e}") from None
        if addr.ip not in subnet:
            raise InvalidRequest(f"address {addr} is outside network {net.name!r} ({subnet})")
        if addr.ip in (subnet.network_address, subnet.broadcast_address):
            raise InvalidRequest(f"address {addr.ip} is the network or broadcast address of {subnet}")
        if not self.addresses.holds(net, addr.ip):
            raise Conflict(f"address {addr.ip} is in no address block this node holds in "
                           f"network {net.name!r} (vswitchctl ipam blocks)")
        if addr.ip in self.addresses_in_use(net):
            raise Conflict(f"address {addr.ip} is already used by port "
                           f"{self.addresses_in_use(net)[addr.ip]!r}")
        return addr

    def addresses_in_use(self, net: NetworkConfig) -> dict[ipaddress.IPv4Address |
                                                           ipaddress.IPv6Address, str]:
        """Address -> port name, for the ports of a network, made or being made."""
        ports = [(p.name, p.network, p.addresses) for p in self.ports.values()]
        ports += [(name, n, addresses) for name, (n, addresses, _) in self._pending.items()]
        return {a.ip: name for name, n, addresses in ports if n.name == net.name for a in addresses}

    def mac_in_use(self, net: NetworkConfig, mac: str) -> bool:
        """Whether a port of the network, made or being made, has mac, or the
        FDB knows it behind a peer (a pod of another node). Allocations and
        port records are checked with the record, atomically (create_port)."""
        if any(p.mac == mac and p.network.name == net.name for p in self.ports.values()) or \
                any(m == mac and n.name == net.name for n, _, m in self._pending.values()):
            return True
        return self.dataplane.behind_peer(net.name, mac)

    async def add_port(self, name: str, netns: str, ifname: str = "eth0",
                       network: str | None = None, ip: str | None = None,
                       mac: str | None = None, port_security: bool | None = None,
                       pod: dict | None = None) -> Port:
        """A port made by hand (vswitchctl port add). Port security is on by
        default when it has an address, and off for a port without one.
        ip: its addresses, comma-separated (at most one per family); pod:
        who the pod is for policy (PodIdentity.from_json)."""
        if not isinstance(name, str) or not PORT_NAME_RE.match(name):
            raise InvalidRequest(f"bad port name {name!r}: 1-64 letters, digits, '.', '_' or '-'")
        net = await self.addresses.ready(self.network(network))
        if ip:                  # (cluster mode: only while the node proves it holds them)
            await self.addresses.blocks(net)
        addresses = [self._address(net, a) for a in ip.split(",")] if ip else []
        if len({a.version for a in addresses}) != len(addresses):
            raise InvalidRequest("at most one address per family (IPv4, IPv6)")
        mac = normalize_mac(mac) if mac else random_mac()
        if self.mac_in_use(net, mac):
            raise Conflict(f"MAC {mac} is already used in network {net.name!r}")
        secured = bool(addresses) if port_security is None else port_security
        return await self.create_port(name, netns, ifname, net, mac, addresses, secured,
                                      identity=PodIdentity.from_json(pod))

    @staticmethod
    def _record(port: Port) -> PortRecord:
        return PortRecord(port.name, port.netns, port.ifname, port.network.name, port.mac,
                          tuple(str(a) for a in port.addresses), port.mtu, port.secured,
                          port.attachment, port.rates, port.netns_id, port.identity.to_json())

    def name_taken(self, name: str) -> bool:
        return name in self.ports or name in self._pending

    async def create_port(self, name: str, netns: str, ifname: str, net: NetworkConfig, mac: str,
                          addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface],
                          secured: bool,
                          attachment: tuple[str, str] | None = None, mtu: int | None = None,
                          reattach: bool = False, rates: dict | None = None,
                          netns_identity: tuple[int, int] | None = None,
                          identity: PodIdentity | None = None) -> Port:
        """Make the TAP in the pod's namespace (reattach: open the one a
        previous run left, in the namespace of identity netns_identity) and
        attach it to the data plane. Everything is validated before anything
        is made; the port is recorded before its TAP exists, so that a crash
        in between leaves a record the next start completes, never a TAP
        nobody knows; a failure after the TAP exists undoes it."""
        if self.name_taken(name):
            raise Conflict(f"port {name!r} already exists")
        check_ifname(ifname)
        rates = check_rates(rates or {})
        if not MIN_MTU <= (mtu or net.mtu) <= MAX_MTU or \
                sum(a.version == 4 for a in addresses) > MAX_PORT_IPV4 or \
                sum(a.version == 6 for a in addresses) > MAX_PORT_IPV6:
            raise InvalidRequest(f"bad port record: mtu {mtu}, {len(addresses)} addresses")
        gateways = tuple(gw for gw in self.default_gateways(net)
                         if any(a.version == gw.version for a in addresses))
        mtu = mtu or net.mtu
        if netns_identity is None and netns is not None:
            with pod_namespace(netns) as fd:        # Tap checks it is still this one
                netns_identity = fd_identity(fd)
        identity = identity or PodIdentity()
        record = PortRecord(name, netns, ifname, net.name, mac, tuple(str(a) for a in addresses),
                            mtu, secured, attachment, rates, netns_identity, identity.to_json())
        self._pending[name] = (net, addresses, mac)
        tap = None
        try:
            try:
                await self.state.run(self.state.save_port, record, not reattach)
            except Taken as e:
                raise Conflict(str(e)) from None
            # Netlink work runs off the loop so forwarding goes on meanwhile.
            tap = await self.loop.run_in_executor(
                None, functools.partial(Tap, netns, ifname, mac, mtu, addresses, self._offloads(),
                                        gateways, reattach, netns_identity,
                                        queues=self.dataplane.workers))
            # A reload may have removed the network while the TAP was being made.
            net = self.config.network(net.name) or net
            if not self.dataplane.has_network(net.name):
                raise Conflict(f"network {net.name!r} was removed while port {name!r} was "
                               "being made")
            port = self._register(name, netns, net, mac, addresses, tap, secured, attachment,
                                  ifname, mtu, "re-attached" if reattach else "added",
                                  identity=identity)
            if rates:
                self._apply_rates(port, rates)
            return port
        except BaseException:
            if name in self.ports:
                self.dataplane.remove_port(self.ports.pop(name).port_id)
            if tap is not None:
                tap.close(remove=not reattach)
            if not reattach:
                await self.state.run(self.state.delete_port, name)
            raise
        finally:
            del self._pending[name]

    async def set_rates(self, name: str, rates: dict) -> Port:
        """Change a port's rate limits (missing keys keep their value)."""
        port = self.port(name)
        if port.state != "up":
            raise Conflict(f"port {name!r} is {port.state}")
        if not isinstance(rates, dict):
            raise InvalidRequest("rates must be an object of rate limits")
        self._apply_rates(port, check_rates({**port.rates, **rates}))
        if not port.is_host:
            await self.state.run(self.state.save_port, self._record(port))
        log.info("port %s: rates %s", name, port.rates or "unlimited")
        return port

    async def label_port(self, name: str, changes: list[str]) -> Port:
        """Change a pod's labels (key=value sets, key- removes), as kubectl
        label does; policies follow at once, here and on other nodes."""
        port = self.port(name)
        if port.is_host:
            raise Conflict(f"port {name!r} is a host port: the node, not a pod")
        sets, removes = netpol.parse_label_changes(changes)
        port.identity.labels = {k: v for k, v in {**port.identity.labels, **sets}.items()
                                if k not in removes}
        await self.state.run(self.state.save_port, self._record(port))
        if self.observer and port.state == "up":
            self.observer.port_up(port)         # republished with its labels
        self.policy.schedule()
        log.info("port %s: labels %s", name, port.identity.labels)
        return port

    def _apply_rates(self, port: Port, rates: dict):
        self.dataplane.set_rates(port.port_id, rates)
        port.rates = {k: v for k, v in rates.items() if v}

    def _register(self, name, netns, net, mac, addresses, tap, secured, attachment=None,
                  ifname=None, mtu=None, how="added", router=False,
                  identity: PodIdentity | None = None) -> Port:
        try:
            port_id = self.dataplane.add_port(tap.fds(), net.name, tap.vnet_hdr, router)
        except Exhausted:
            tap.close()
            raise
        port = Port(name, netns, ifname or net.host_port, net, mac, addresses, tap, port_id,
                    mtu or net.mtu, secured, attachment, tap.netns_id,
                    identity=identity or PodIdentity())
        self.ports[name] = port
        try:
            if secured:
                self.dataplane.secure_port(port_id, mac, addresses)
            elif router:            # the gateway's MAC: nobody else may take it either
                self.dataplane.pin_mac(port_id, mac)
                self.dataplane.set_host_addresses(port_id, mac, addresses)
        except Conflict as e:
            raise Conflict(f"port {name!r}: {e}") from None
        if not router:
            # Its own tables before its first frame; then everyone's (a new peer).
            self.policy.enforce_port(port)
            self.policy.schedule()
        log.info("port %s %s: %s in %s, network %s, mac %s%s%s", name, how, port.ifname,
                 netns or "the host namespace", net.name, mac,
                 "".join(f", {a}" for a in addresses), ", port security" if secured else "")
        if self.observer:
            self.observer.port_up(port)
        return port

    def _offloads(self) -> tuple[str, ...]:
        if not self.config.offloads:
            return ()
        # Superframes bound for the tunnel are segmented before encapsulation;
        # the data plane does that for TCP, not (yet) for UDP.
        return OFFLOADS_TCP if self.overlay.tunnel else OFFLOADS_ALL

    def check_namespaces(self):
        """Ports whose namespace was deleted (or replaced under the same
        path) are lost. Our fd holds a reference on the namespace, so the
        kernel would keep it, and the pod's interface, alive: let go."""
        for port in list(self.ports.values()):
            if port.state == "up" and not port.is_host and netns_id(port.netns) != port.netns_id:
                self.lose(port, f"namespace {port.netns} gone")

    def lose(self, port: Port, why: str):
        """Stop forwarding for a port whose pod is gone; it stays listed as
        lost (with its last counters) until deleted."""
        if self.observer:
            self.observer.port_down(port)
        port.final_counters = self.dataplane.port_counters(port.port_id)
        self.dataplane.remove_port(port.port_id)
        if port.tap:
            port.tap.close(remove=True)
        port.state = "lost"
        self.policy.schedule()
        log.warning("port %s: %s, no longer forwarding", port.name, why)

    def port(self, name: str) -> Port:
        try:
            return self.ports[name]
        except KeyError:
            raise NotFound(f"no port {name!r}") from None

    async def remove_port(self, name: str):
        port = self.port(name)
        if port.is_host:
            raise Conflict(f"port {name!r} is the host port of network {port.network.name!r}; "
                           "it comes and goes with the config")
        await self.detach_port(port)

    def _take_off(self, port: Port, remove: bool):
        if port.state == "up":
            if self.observer and remove:
                self.observer.port_down(port)
            self.dataplane.remove_port(port.port_id)
            if port.tap:
                port.tap.close(remove)
        del self.ports[port.name]
        if not port.is_host:
            self.policy.schedule()

    async def detach_port(self, port: Port):
        """Take any port off the switch (the host port too, which
        remove_port refuses), and delete its TAP and record."""
        fenced = port.state == "fenced"
        self._take_off(port, True)
        if fenced:
            await self.loop.run_in_executor(None, self._remove_device, port)
        if not port.is_host:
            await self.state.run(self.state.delete_port, port.name)
        log.info("port %s removed", port.name)

    async def retire(self, port: Port, why: str):
        """Take a port off for good (detach_port) but keep it listed as lost,
        with why, until it is deleted: its pod is cut off, visibly."""
        counters = port.final_counters or self.dataplane.port_counters(port.port_id)
        await self.detach_port(port)
        port.state, port.tap, port.error, port.final_counters = "lost", None, why, counters
        self.ports[port.name] = port

    # ----------------------------------------------------- names and ids

    def port_label(self, port_id: int) -> str:
        """The name of a data-plane port id: a port's name, "vxlan:IP" for a
        peer, "vxlan" for the tunnel itself, "#ID" for one nobody has now."""
        if port_id == PORT_TUNNEL:
            return "vxlan"
        if port_id >= PORT_PEER_BASE:
            return f"vxlan:{self.dataplane.peer_address(port_id)}"
        for port in self.ports.values():
            if port.port_id == port_id and port.state == "up":
                return port.name
        return f"#{port_id}"

    def up_port(self, name: str) -> Port:
        """A port that is in the data plane now (one fenced or lost is not:
        Conflict)."""
        port = self.port(name)
        if port.state != "up":
            raise Conflict(f"port {name!r} is {port.state}")
        return port

    def port_id(self, name: str) -> int:
        """The data-plane id of a port name, or of "vxlan:IP" (a peer)."""
        if name.startswith("vxlan:"):
            return self.overlay.peer_port_id(name[6:])
        return self.up_port(name).port_id
