"""The control plane's model of the switch: networks, ports and the data
plane that forwards between them. The API calls these methods. The data
plane's state is written through its small API (datapath.py) by the
switch (networks, ports, peers), the policy engine (policy tables) and, in
cluster mode, the cluster's reconcilers (peers, FDB and neighbour entries)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import logging
import sqlite3
import time
from typing import Protocol

from . import reconfig
from .capture import Captures
from .config import Config, ConfigError, NetworkConfig
from .datapath import PORT_TUNNEL, DataPlane
from .egress import egress_checks, refuse_router_messages, route_for_pods
from .errors import NotFound, VswitchError
from .hooks import Hooks
from .ipam import AddressBlocks, Ipam, StaticBlocks, gateway, gateway6
from .looplag import LoopLag
from .masquerade import Masquerade
from .overlay import Overlay
from .policy import Policies
from .port import Port, PortObserver
from .ports import Ports
from .protocol import ErrorKind, ReloadAction
from .state import PortRecord, State, StateInUse
from .tap import (
    Tap,
    normalize_mac,
    set_mtu,
)


class Membership(Protocol):
    """Cluster mode as the switch and its reports see it (cluster.Cluster)."""

    def metrics(self) -> dict: ...

log = logging.getLogger("vswitch.switch")

FDB_SWEEP_SLOTS = 65536     # FDB slots the expiry sweep looks at per housekeeping step


class Switch(Ports):
    """One node: its networks, ports and state, the data plane they program,
    the overlay, captures and hooks. The API calls these methods; they
    change data-plane state through DataPlane (datapath.py), as the policy
    engine and the cluster's reconcilers do."""

    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop,
                 dataplane: DataPlane | None = None):
        self.config = config
        self.loop = loop
        self.dataplane = dataplane or DataPlane(config.datapath_settings())
        self.dataplane.set_service_ranges(config.service_cidrs)
        for net in config.networks:             # data-plane ids 1.. in config order
            self.dataplane.add_network(net.name, net.vni, net.mtu)
            if net.mtu_from != "config":
                log.info("network %s: mtu %d, from %s", net.name, net.mtu, net.mtu_from)
        self.ports: dict[str, Port] = {}
        self._pending = {}
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
        # The forwarding threads poll; the event loop hears of failed fds.
        loop.add_reader(self.dataplane.failures_fd(), self._failed)
        self.dataplane.start()
        self.loop_lag = LoopLag()                   # (the daemon runs it)
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
            if step.action is ReloadAction.REMOVE_NETWORK:
                await self._remove_network(step.net)
        self.config = self.overlay.config = new
        for port in self.ports.values():        # the ports' networks, as now configured
            port.network = new.network(port.network.name) or port.network
        for step in steps:
            match step.action:
                case ReloadAction.ADD_NETWORK:
                    await self._add_network(step.index, step.net)
                case ReloadAction.SET_MTU:
                    await self._set_mtu(step.net)
                case ReloadAction.HOST_PORT:
                    await self._replace_host_port(step.index, step.value, step.net)
                case ReloadAction.MASQUERADE:
                    await self._egress()
                case ReloadAction.AGING_TIME:
                    self.dataplane.aging_time = step.value
                case ReloadAction.BUSY_POLL_US:
                    self.dataplane.busy_poll_us = step.value
                case ReloadAction.TUNNEL:
                    self.overlay.set_tunnel(step.value)
                case ReloadAction.REMOVE_PEER:
                    # (a peer a cluster node also holds stays: the peer table says so)
                    self.overlay.peer_table.release(step.value, "config")
                case ReloadAction.ADD_PEER:
                    self.overlay.peer_table.hold(step.value, "config")
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
                None, functools.partial(Tap, None, ifname, mac, net.mtu, addresses, self._offloads(),
                                        (), True, queues=self.dataplane.workers))
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
                           "create`)" if self.config.cluster else ""), kind=ErrorKind.UNKNOWN_NETWORK)
        net = self.config.network(name) if name else self.config.networks[0]
        if net is None:
            known = ", ".join(n.name for n in self.config.networks)
            raise NotFound(f"unknown network {name!r} (known: {known})", kind=ErrorKind.UNKNOWN_NETWORK)
        return net

    def _failed(self):
        """A worker stopped polling an fd that failed."""
        by_id = {p.port_id: p for p in self.ports.values() if p.state == "up"}
        for port_id in self.dataplane.take_failed():
            if port_id == PORT_TUNNEL:
                log.error("VXLAN socket failed; tunnel traffic stops")
            elif port_id in by_id:
                self.lose(by_id[port_id], "device gone")

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
        self.loop.remove_reader(self.dataplane.failures_fd())
        self.dataplane.stop()
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
