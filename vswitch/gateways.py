"""A node's gateway in each cluster network that has one (`network create`,
on by default): the address of the node's host port, which pods of the
node take as their default route. Each node has its own, taken from a
block it holds, as flannel gives cni0 the first address of the node's
subnet: the network is one L2 segment across nodes, so a node reaching a
pod elsewhere is answered at its own address, and a Service's DNAT to a
backend on another node comes back to the node that made it.

The node chooses it once, before the network's first pod here (or within
a second of joining, while it can allocate), keeps it in its state (a
restart keeps it, so pods' routes stay right) and gives it up only with
its block (taken while the node was away) or the network. It is not an
IPAM allocation (CNI GC must never release it); IPAM skips it as the
network's gateway, and the block holding it is never given back."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ipaddress
import logging
from typing import TYPE_CHECKING

from . import state
from .config import NetworkConfig
from .ipam import reserved

if TYPE_CHECKING:
    from .cluster import Cluster

log = logging.getLogger("vswitch.gateways")

HOST_PORT_PREFIX = "vsh-"


def host_port_name(network: str) -> str:
    """The host port's interface name in a cluster network (IFNAMSIZ: 15)."""
    name = HOST_PORT_PREFIX + network
    if len(name) <= 15:
        return name
    digest = hashlib.sha256(network.encode()).hexdigest()[:4]
    return f"{HOST_PORT_PREFIX}{network[:6]}-{digest}"


def wants_gateway(rec: dict | None) -> bool:
    return bool(rec and rec.get("gateway"))


class Gateways:
    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.addresses: dict[str, ipaddress.IPv4Address] = {}     # network -> this node's
        self._lock = asyncio.Lock()
        self._task: asyncio.Future | None = None

    async def restore(self):
        db = self.cluster.switch.state
        for name, ip in (await db.run(state.cached, db.db, "gateways", {})).items():
            self.addresses[name] = ipaddress.IPv4Address(ip)

    def configure(self, net: NetworkConfig, rec: dict) -> NetworkConfig:
        """The network as this node runs it: with its host port and
        gateway once it has one (masquerading if the network says so)."""
        ip = self.addresses.get(net.name)
        if not wants_gateway(rec) or ip is None:
            return net
        return dataclasses.replace(net, gateway=ip, host_port=host_port_name(net.name),
                                   masquerade=bool(rec.get("masquerade")))

    async def forget_invalid(self, nets: list[NetworkConfig]):
        """Gateways of networks gone, or in blocks this node no longer holds."""
        subnets = {n.name: n.subnet for n in nets}
        current = {n.name: n for n in nets}
        gone = [name for name, ip in self.addresses.items()
                if ip not in (subnets.get(name) or ()) or not self.cluster.holds(current[name], ip)]
        for name in gone:
            log.warning("cluster: gateway %s of network %s given up (%s)", self.addresses[name],
                        name, "block lost" if name in current else "network gone")
            del self.addresses[name]
        if gone:
            await self._save()

    def in_block(self, network: str, block: ipaddress.IPv4Network) -> bool:
        ip = self.addresses.get(network)
        return ip is not None and ip in block

    def missing(self, network: str) -> bool:
        return network not in self.addresses and \
            wants_gateway(self.cluster.networks.get(network)) and \
            self.cluster.switch.config.network(network) is not None

    async def ensure(self, network: str):
        """Choose this node's gateway in a network that wants one and has
        none yet (claiming a block if the node holds none), and make its
        host port. Busy while the lease is not proven, Exhausted when no
        block is to be had."""
        async with self._lock:
            if not self.missing(network):
                return
            cluster, switch = self.cluster, self.cluster.switch
            net = switch.network(network)
            blocks = await cluster.blocks(net)
            while True:
                in_use = set(switch.addresses_in_use(net))
                ip = await switch.state.run(self._free, net, blocks, in_use)
                if ip is not None:
                    break
                await cluster.more(net, blocks)
                blocks = cluster.held(net)
            self.addresses[network] = ip
            await self._save()
            log.info("cluster: gateway of network %s on this node: %s", network, ip)
            await cluster.sync_networks()

    def keep_up(self):
        """Housekeeping: networks joined without a gateway get one (one at a
        time, in the background, while etcd is there)."""
        if self._task is not None and not self._task.done() or not self.cluster.connected:
            return
        wanted = [n for n in self.cluster.networks if self.missing(n)]
        if wanted:
            self._task = asyncio.ensure_future(self._ensure_all(wanted))

    async def _ensure_all(self, networks: list[str]):
        for network in networks:
            try:
                await self.ensure(network)
            except Exception as e:      # retried at the next housekeeping
                log.warning("cluster: no gateway in network %s yet: %s", network, e)

    def _free(self, net: NetworkConfig, blocks, in_use) -> ipaddress.IPv4Address | None:
        """The first address of the blocks nothing uses (database thread)."""
        used = self.cluster.switch.ipam.used(net.name) | in_use | reserved(net)
        for block in sorted(blocks):
            for ip in block.hosts():
                if ip not in used:
                    return ip
        return None

    async def _save(self):
        db = self.cluster.switch.state
        await db.run(state.cache, db, "gateways", {n: str(ip) for n, ip in self.addresses.items()})
