"""The control plane's model of the switch: networks, ports and the data
plane that forwards between them. The API calls these methods. The data
plane's state is written through its small API (datapath.py) by the
switch (networks, ports, peers), the policy engine (policy tables) and, in
cluster mode, the cluster's reconcilers (peers, FDB and neighbour entries)."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import sqlite3
import time
from typing import Protocol

from . import netpol, reconfig
from .capture import Captures
from .config import Config, ConfigError, NetworkConfig
from .datapath import PORT_PEER_BASE, PORT_TUNNEL, DataPlane
from .errors import Conflict, Exhausted, InvalidRequest, NamespaceGone, NotFound, VswitchError
from .hooks import Hooks
from .ipam import AddressBlocks, Ipam, StaticBlocks, gateway, gateway6
from .masquerade import Masquerade
from .netns import fd_identity, netns_id
from .overlay import Overlay
from .policy import Policies
from .port import PodIdentity, Port, PortObserver, check_rates, unknown_network
from .protocol import MAX_MTU, MIN_MTU, PORT_COUNTERS, PORT_NAME_RE
from .state import PortRecord, State, StateInUse, Taken
from .tap import (
    OFFLOADS_ALL,
    OFFLOADS_TCP,
    Tap,
    check_ifname,
    normalize_mac,
    pod_namespace,
    random_mac,
    remove_device,
    set_mtu,
)


class Membership(Protocol):
    """Cluster mode as the switch and its reports see it (cluster.Cluster)."""

    def is_node_vtep(self, address) -> bool: ...
    def metrics(self) -> dict: ...

log = logging.getLogger("vswitch.switch")

FDB_SWEEP_SLOTS = 65536     # FDB slots the expiry sweep looks at per housekeeping step


class Switch:
    """One node: its networks, ports and state, the data plane they program,
    the overlay, captures and hooks. The API calls these methods; only they
    change data-plane state, through DataPlane (datapath.py)."""

    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop):
        self.config = config
        self.loop = loop
        self.dataplane = DataPlane(config.fdb_max_entries, config.aging_time, config.batch,
                                   config.busy_poll_us, config.fdb_max_per_port,
                                   config.fdb_max_per_peer, config.conntrack_max,
                                   config.conntrack_max_per_pod)
        self.dataplane.set_service_ranges(config.service_cidrs)
        for net in config.networks:             # data-plane ids 1.. in config order
            self.dataplane.add_network(net.name, net.vni, net.mtu)
            if net.mtu_from != "config":
                log.info("network %s: mtu %d, from %s", net.name, net.mtu, net.mtu_from)
        self.ports: dict[str, Port] = {}
        # Ports being created (netlink work in a thread): name -> (network, addresses, MAC).
        self._pending: dict[str, tuple[NetworkConfig, list[ipaddress.IPv4Interface |
                                                           ipaddress.IPv6Interface], str]] = {}
        try:
            self.state = State(config.state_dir)
        except StateInUse as e:
            raise ConfigError("node.state_dir", str(e)) from None
        except (OSError, sqlite3.Error) as e:
            raise ConfigError("node.state_dir", f"cannot open the state database: {e}") from None
        self.ipam = Ipam(self.state)
        # Cluster mode replaces these with the Cluster, which claims blocks and
        # publishes ports; the rest of the switch works the same in both modes.
        self.addresses: AddressBlocks = StaticBlocks()
        self.observer: PortObserver | None = None
        self.cluster: Membership | None = None      # (cluster mode)
        self._reload_lock = asyncio.Lock()
        self.captures = Captures(self)
        self.policy = Policies(self.dataplane, self.state, loop, self.ports)
        self.masquerade = Masquerade()
        self.egress_warnings: list[str] = []       # what keeps pods from reaching outside
        self.hooks: Hooks | None = None
        self.overlay = Overlay(config, self.dataplane, self.network)
        try:
            self.overlay.start()
        except BaseException:
            self.close()
            raise
        loop.add_reader(self.dataplane.fileno(), self._poll)
        self.started = time.monotonic()
        self.started_at = time.time()

    async def start(self):
        """Make (or re-open) the host ports, and re-attach the pod ports a
        previous run left (netlink work, in threads)."""
        await self.policy.restore()
        for i, net in enumerate(self.config.networks):
            if net.host_port and f"host-{net.name}" not in self.ports:   # (cluster: made already)
                await self._add_host_port(i, net)
        await self._egress()
        for name, record in await self.state.run(self.state.ports):
            if isinstance(record, PortRecord) and self.addresses.fenced:
                self.ports[name] = self._held(record)   # until the node proves its blocks
            else:
                await self._reattach(name, record)
        self.hooks = Hooks(self.captures, self.config.hooks)
        await self.hooks.start()

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

    # --------------------------------------------------------------- reload

    def check_reload(self, new: Config):
        """ReloadRefused if `new` changes what only a restart can."""
        reconfig.check(self.config, new)

    async def reload(self, new: Config) -> list[str]:
        """Apply a new config without touching what did not change (the
        steps of reconfig.plan): networks come and go (with their ports and
        host port), MTUs, peers, aging and the underlay MTU change in place.
        Refused as a whole (ReloadRefused) if it changes what only a restart
        can."""
        async with self._reload_lock:       # SIGHUP and the cluster both reconfigure
            return await self._reload(new)

    async def _reload(self, new: Config) -> list[str]:
        steps = reconfig.plan(self.config, new)
        for step in steps:
            if step.action == "remove_network":
                await self._remove_network(step.net)
        self.config = self.overlay.config = new
        for port in self.ports.values():        # the ports' networks, as now configured
            port.network = new.network(port.network.name) or port.network
        for step in steps:
            if step.action == "add_network":
                await self._add_network(step.index, step.net)
            elif step.action == "set_mtu":
                await self._set_mtu(step.net)
            elif step.action == "host_port":
                await self._replace_host_port(step.index, step.value, step.net)
            elif step.action == "masquerade":
                await self._egress()
            elif step.action == "aging_time":
                self.dataplane.aging_time = step.value
            elif step.action == "busy_poll_us":
                self.dataplane.busy_poll_us = step.value
            elif step.action == "tunnel":
                self.overlay.set_tunnel(step.value)
            elif step.action == "remove_peer":
                # A static peer that is also a live cluster node's VTEP stays a peer.
                if not (self.cluster and self.cluster.is_node_vtep(step.value)):
                    self.dataplane.remove_peer(step.value)
            elif step.action == "add_peer":
                self.dataplane.add_peer(step.value)
        return [step.text for step in steps]

    async def _remove_network(self, net: NetworkConfig):
        for port in [p for p in self.ports.values() if p.network.name == net.name]:
            await self.detach_port(port)
        for alloc in await self.state.run(self.ipam.list, net.name):
            await self.state.run(self.ipam.release, alloc.container_id, alloc.ifname)
        self.dataplane.remove_network(net.name)

    async def _add_network(self, index: int, net: NetworkConfig):
        self.dataplane.add_network(net.name, net.vni, net.mtu)
        self.overlay.network_added(net.name)
        if net.host_port:
            try:
                await self._add_host_port(index, net)
            except ConfigError as e:
                log.error("host port of new network %s: %s", net.name, e)

    async def _replace_host_port(self, index: int, old: NetworkConfig, net: NetworkConfig):
        """A cluster network's host port, as its gateway now is (the node
        took one, or lost it with its block)."""
        port = self.ports.get(f"host-{net.name}")
        if port and old.host_port:
            await self.detach_port(port)
        if net.host_port:
            try:
                await self._add_host_port(index, net)
            except ConfigError as e:
                log.error("host port of network %s: %s", net.name, e)
            await self._egress()

    async def _set_mtu(self, net: NetworkConfig):
        """The network's MTU, in the data plane and on its ports' interfaces."""
        self.dataplane.set_mtu(net.name, net.vni, net.mtu)
        for port in [p for p in self.ports.values() if p.network.name == net.name]:
            try:
                await self.loop.run_in_executor(None, set_mtu, port.netns, port.ifname, net.mtu)
            except VswitchError as e:
                log.warning("port %s: %s", port.name, e)
                continue
            port.mtu = net.mtu
            if not port.is_host:
                await self.state.run(self.state.save_port, self._record(port))

    # ---------------------------------------------------------------- ports

    async def _add_host_port(self, index: int, net: NetworkConfig):
        """The network's gateway addresses on a TAP left in our own namespace."""
        addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = []
        if net.subnet:
            addresses.append(ipaddress.IPv4Interface(f"{gateway(net)}/{net.subnet.prefixlen}"))
        if net.subnet6:
            addresses.append(ipaddress.IPv6Interface(f"{gateway6(net)}/{net.subnet6.prefixlen}"))
        # The same MAC every start, so that pods' ARP entries for the gateway stay right.
        digest = hashlib.sha256(f"{self.config.node_name}/{net.name}".encode()).digest()
        mac = "02:" + digest[:5].hex(":")
        ifname = net.host_port
        assert ifname is not None
        try:
            tap = await self.loop.run_in_executor(
                None, Tap, None, ifname, mac, net.mtu, addresses, self._offloads(), (), True)
        except VswitchError as e:
            raise ConfigError(f"network[{index}].host_port", str(e)) from None
        await self.loop.run_in_executor(None, refuse_router_messages, ifname)
        # The host routes for others: no port security on its port, and only
        # it may send Router Advertisements.
        self._register(f"host-{net.name}", None, net, mac, addresses, tap, secured=False,
                       router=True)

    async def _egress(self):
        """Masquerade rules as the networks now are, and what the node lacks
        for pods to reach outside (logged, and shown in status)."""
        self.masquerade.apply(self.config.networks)
        for net in self.config.networks:
            if net.masquerade and f"host-{net.name}" in self.ports:
                route_for_pods(self.ports[f"host-{net.name}"].ifname)
        # (netlink: off the loop)
        self.egress_warnings = await self.loop.run_in_executor(None, egress_checks,
                                                               self.config.networks)
        for warning in self.egress_warnings:
            log.error("%s", warning)

    def default_gateways(self, net: NetworkConfig) -> tuple[ipaddress.IPv4Address |
                                                            ipaddress.IPv6Address, ...]:
        """Where pods of the network send what is not on their subnets: the
        host port's addresses, when the network has one."""
        if not net.host_port:
            return ()
        return tuple(gw for gw in (gateway(net), gateway6(net)) if gw is not None)

    def network(self, name: str | None) -> NetworkConfig:
        if not name and not self.config.networks:
            raise NotFound("no network exists yet" + (" (create one with `vswitchctl network "
                           "create`)" if self.config.cluster else ""), kind="unknown_network")
        net = self.config.network(name) if name else self.config.networks[0]
        if net is None:
            known = ", ".join(n.name for n in self.config.networks)
            raise NotFound(f"unknown network {name!r} (known: {known})", kind="unknown_network")
        return net

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
                None, Tap, netns, ifname, mac, mtu, addresses, self._offloads(), gateways, reattach,
                netns_identity)
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
            port_id = self.dataplane.add_port(tap.fileno(), net.name, tap.vnet_hdr, router)
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

    def _poll(self):
        """The data plane has frames: it serves every ready fd in C."""
        if self.dataplane.poll():
            by_id = {p.port_id: p for p in self.ports.values() if p.state == "up"}
            for port_id in self.dataplane.take_failed():
                if port_id == PORT_TUNNEL:
                    log.error("VXLAN socket failed; tunnel traffic stops")
                elif port_id in by_id:
                    self.lose(by_id[port_id], "device gone")

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

    def close(self, remove_ports: bool = False):
        """Stop switching. The pods' TAPs stay (and keep their addresses and
        routes) for the next start, unless remove_ports."""
        if self.hooks:
            self.hooks.close()
        for port in list(self.ports.values()):
            if remove_ports and port.state == "fenced":
                self._remove_device(port)
            self._take_off(port, remove_ports)
            if remove_ports and not port.is_host:
                self.state.run_sync(self.state.delete_port, port.name)
        self.masquerade.remove()        # without the data plane, pods go nowhere anyway
        self.loop.remove_reader(self.dataplane.fileno())
        self.overlay.close()
        self.state.close()

    # ----------------------------------------------------------------- FDB

    def fdb_del(self, mac: str, network: str | None = None):
        if not self.dataplane.fdb_delete(self.network(network).name, normalize_mac(mac)):
            raise NotFound(f"no FDB entry for {mac}")

    def fdb_flush(self, network: str | None = None) -> int:
        return self.dataplane.fdb_flush(self.network(network).name if network else None)

    def expire_conntrack(self) -> int:
        """One slice of the connection table's expiry sweep (as the FDB's)."""
        return self.dataplane.expire_conntrack(FDB_SWEEP_SLOTS)

    def expire_fdb(self) -> int:
        """One slice of the FDB's expiry sweep (a whole sweep of a large
        table would hold up forwarding)."""
        return self.dataplane.expire_fdb(FDB_SWEEP_SLOTS)

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


# As many as port security binds to a port (_ports.pxd: 8 IPv4, and 4 IPv6
# addresses with the link-local one the pod's kernel forms).
MAX_PORT_IPV4, MAX_PORT_IPV6 = 8, 3


def refuse_router_messages(ifname: str):
    """The host port's stack takes no Router Advertisements or Redirects
    (defence in depth behind the data plane's RA guard): pods must never
    set the node's routes."""
    for key in ("accept_ra", "accept_redirects"):
        try:
            with open(f"/proc/sys/net/ipv6/conf/{ifname}/{key}", "w") as f:
                f.write("0")
        except FileNotFoundError:       # no IPv6 on this interface: nothing to refuse
            return


def route_for_pods(ifname: str):
    """The host port of a masquerading network routes pods' traffic: IPv4
    forwarding on for packets it receives, loose reverse-path filtering
    (pods' sources are on-link here, but replies of the node's NAT may not
    look so to a strict filter), and no ICMP redirects: Service traffic
    leaves by the port it came in, and a redirect would send the client
    straight to the backend, past the DNAT (the kernel still sends them
    while net.ipv4.conf.all.send_redirects is 1: egress_checks says so)."""
    for key, value in (("forwarding", "1"), ("rp_filter", "2"), ("send_redirects", "0")):
        with open(f"/proc/sys/net/ipv4/conf/{ifname}/{key}", "w") as f:
            f.write(value)


def egress_checks(networks) -> list[str]:
    """Why pods of masquerading networks could not reach outside, as the
    operator should read it: replies come back in through the uplinks (the
    interfaces of the IPv4 default routes), which must forward them."""
    def but(nets) -> str:
        return f"network {', '.join(n.name for n in nets)}: masquerade is on, but"
    out = []
    six = [n for n in networks if n.masquerade and n.subnet6]
    if six and _sysctl("net/ipv6/conf/all/forwarding") == "0":
        out.append(f"{but(six)} net.ipv6.conf.all.forwarding is 0: the node does not route "
                   "pods' IPv6 (sysctl -w net.ipv6.conf.all.forwarding=1)")
    four = [n for n in networks if n.masquerade and n.subnet]
    if not four:
        return out
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        uplinks = sorted({ipr.get_links(r.get_attr("RTA_OIF"))[0].get_attr("IFLA_IFNAME")
                          for r in ipr.get_default_routes(family=2) if r.get_attr("RTA_OIF")})
    what = but(four)
    if not uplinks:
        return out + [f"{what} this node has no IPv4 default route: pods' traffic to outside "
                      "has nowhere to go"]
    if _sysctl("net/ipv4/conf/all/send_redirects") == "1":
        out.append(f"{what} net.ipv4.conf.all.send_redirects is 1: the node sends pods ICMP "
                   "redirects for Service traffic it forwards back out the host port, which "
                   "would route them past the Service's DNAT (sysctl -w "
                   "net.ipv4.conf.all.send_redirects=0)")
    for ifname in uplinks:
        if _sysctl(f"net/ipv4/conf/{ifname}/forwarding") == "0":
            out.append(f"{what} net.ipv4.conf.{ifname}.forwarding is 0: replies from outside "
                       f"cannot reach pods (sysctl -w net.ipv4.conf.{ifname}.forwarding=1, or "
                       "net.ipv4.ip_forward=1)")
    return out


def _sysctl(key: str) -> str | None:
    try:
        with open(f"/proc/sys/{key}") as f:
            return f.read().strip()
    except OSError:
        return None
