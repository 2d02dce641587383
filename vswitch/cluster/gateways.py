"""A node's gateway in each cluster network that has one (`network create`,
on by default): the address of the node's host port (one per family in a
dual-stack network), which pods of the node take as their default route.
Each node has its own, taken from a block it holds, as flannel gives cni0 the first address of the node's
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
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .. import state
from ..config import NetworkConfig
from ..ipam import Block, reserved, reserved6
from ..protocol import MAX_IFNAME_LEN
from .blocks import Blocks
from .view import View

if TYPE_CHECKING:
    from ..switch import Switch

log = logging.getLogger("vswitch.gateways")

HOST_PORT_PREFIX = "vsh-"


def host_port_name(network: str) -> str:
    """The host port's interface name in a cluster network (at most
    MAX_IFNAME_LEN: a digest stands for the end of a long network name)."""
    name = HOST_PORT_PREFIX + network
    if len(name) <= MAX_IFNAME_LEN:
        return name
    digest = hashlib.sha256(network.encode()).hexdigest()[:4]
    return f"{HOST_PORT_PREFIX}{network[:MAX_IFNAME_LEN - len(HOST_PORT_PREFIX) - 5]}-{digest}"


def wants_gateway(rec: dict | None) -> bool:
    return bool(rec and rec.get("gateway"))


def families(net: NetworkConfig) -> tuple[int, ...]:
    """The IP versions a network has (a gateway of each)."""
    return tuple(v for v in (4, 6) if net.subnet_of(v) is not None)


class Gateways:
    def __init__(self, view: View, blocks: Blocks, switch: Switch):
        self.view, self.blocks, self.switch = view, blocks, switch
        # Makes the switch's networks those of the cluster again (set by Cluster).
        self.sync_networks: Callable[[], Awaitable[None]] | None = None
        # network -> this node's gateway per family ({4: ip, 6: ip6} for dual-stack)
        self.addresses: dict[str, dict[int, ipaddress.IPv4Address | ipaddress.IPv6Address]] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Future | None = None

    async def restore(self):
        db = self.switch.state
        for name, ips in (await db.run(state.cached, db.db, "gateways", {})).items():
            found = [ipaddress.ip_address(ip) for ip in ips]
            self.addresses[name] = {ip.version: ip for ip in found}

    def of(self, network: str, version: int = 4):
        """This node's gateway in a network, of a family (None: none yet)."""
        return self.addresses.get(network, {}).get(version)

    def configure(self, net: NetworkConfig, rec: dict) -> NetworkConfig:
        """The network as this node runs it: with its host port and
        gateways once it has one per family (masquerading if the network
        says so), unless the node is fenced."""
        if not wants_gateway(rec) or self.missing(net.name, net) or \
                self.blocks.fencing.fenced:
            return net
        return dataclasses.replace(net, gateway=self.of(net.name, 4), gateway6=self.of(net.name, 6),
                                   host_port=host_port_name(net.name),
                                   masquerade=bool(rec.get("masquerade")))

    async def forget_invalid(self, nets: list[NetworkConfig]):
        """Gateways of networks gone, or in blocks this node no longer holds."""
        current = {n.name: n for n in nets}
        gone = []
        for name, ips in self.addresses.items():
            net = current.get(name)
            for version, ip in list(ips.items()):
                subnet = None if net is None else net.subnet_of(version)
                if net is None or subnet is None or ip not in subnet or \
                        not self.blocks.holds(net, ip):
                    log.warning("cluster: gateway %s of network %s given up (%s)", ip, name,
                                "network gone" if net is None else "block lost")
                    del ips[version]
                    gone.append(name)
        if gone:
            self.addresses = {n: ips for n, ips in self.addresses.items() if ips}
            await self._save()

    def in_block(self, network: str, block: Block) -> bool:
        ip = self.of(network, block.version)
        return ip is not None and ip in block

    def missing(self, network: str, net: NetworkConfig | None = None) -> bool:
        """Whether a network lacks a gateway of this node in some family."""
        net = net or self.switch.config.network(network)
        return net is not None and wants_gateway(self.view.networks.get(network)) and \
            any(self.of(network, v) is None for v in families(net))

    async def ensure(self, network: str):
        """Choose this node's gateway in a network that wants one and has
        none yet, one per family (claiming a block of the family if the
        node holds none), and make its host port. Busy while the lease is
        not proven, Exhausted when no block is to be had."""
        async with self._lock:
            if not self.missing(network):
                return
            blocks, switch = self.blocks, self.switch
            net = switch.network(network)
            for version in families(net):
                if self.of(network, version) is not None:
                    continue
                held = blocks.proven_blocks(net)
                while True:
                    in_use = set(switch.addresses_in_use(net))
                    ip = await switch.state.run(self._free, net, held, in_use, version)
                    if ip is not None:
                        break
                    await blocks.more(net, held, version)
                    held = blocks.held(net)
                self.addresses.setdefault(network, {})[version] = ip
                log.info("cluster: gateway of network %s on this node: %s", network, ip)
            await self._save()
            assert self.sync_networks is not None
            await self.sync_networks()

    def keep_up(self):
        """Housekeeping: networks joined without a gateway get one (one at a
        time, in the background, while etcd is there)."""
        if self._task is not None and not self._task.done() or not self.blocks.session.connected:
            return
        wanted = [n for n in self.view.networks if self.missing(n)]
        if wanted:
            self._task = asyncio.ensure_future(self._ensure_all(wanted))

    async def _ensure_all(self, networks: list[str]):
        for network in networks:
            try:
                await self.ensure(network)
            except Exception as e:      # retried at the next housekeeping
                log.warning("cluster: no gateway in network %s yet: %s", network, e)

    def _free(self, net: NetworkConfig, blocks, in_use, version: int):
        """The first address of the family's blocks that nothing uses
        (database thread)."""
        ipam = self.switch.ipam
        used = ipam.used(net.name, version) | in_use | \
            (reserved(net) if version == 4 else reserved6(net))
        for block in sorted(b for b in blocks if b.version == version):
            for ip in block.hosts():
                if ip not in used:
                    return ip
        return None

    async def _save(self):
        db = self.switch.state
        await db.run(state.cache, db, "gateways", {n: [str(ip) for ip in ips.values()]
                                                   for n, ips in self.addresses.items()})
