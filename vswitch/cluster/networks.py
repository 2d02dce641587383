"""The cluster's networks as this node runs them: the switch's networks
made those of the view (a reload, as a changed config file would), with
this node's gateways; blocks of networks gone given up; peers and
endpoints programmed into networks new here. Networks and nodes are kept
in the node's state, so a restart starts from what it last knew."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING

from .. import state
from ..config import NetworkConfig
from .blocks import Blocks
from .gateways import Gateways
from .remote import Remote
from .schema import fits, network_from_record
from .view import View

if TYPE_CHECKING:
    from ..switch import Switch

log = logging.getLogger("vswitch.cluster")


def in_place(old: NetworkConfig | None, new: NetworkConfig) -> bool:
    """Whether a network can go from old to new in place: new, or only its
    MTU or this node's gateway (its host port, masquerade) changed."""
    return old is None or dataclasses.replace(old, mtu=new.mtu, gateway=new.gateway,
                                              gateway6=new.gateway6, host_port=new.host_port,
                                              masquerade=new.masquerade) == new


class Networks:
    def __init__(self, view: View, blocks: Blocks, gateways: Gateways, remote: Remote,
                 switch: Switch):
        self.view, self.blocks, self.gateways, self.remote = view, blocks, gateways, remote
        self.switch = switch
        self.changed = False                # a network record changed since the last sync
        self._lock = asyncio.Lock()
        view.listen("networks", self._network)

    def _network(self, name: tuple[str, ...], before: dict | None, rec: dict | None):
        self.changed = True

    async def restore(self):
        db = self.switch.state
        for name, rec in (await db.run(state.cached, db.db, "networks", {})).items():
            self.view.networks[name] = rec
        for name, rec in (await db.run(state.cached, db.db, "nodes", {})).items():
            self.view.nodes[name] = rec

    async def after_events(self, force: bool = False):
        """Work an event batch leaves: the networks, all at once."""
        if self.changed or force:
            self.changed = False
            await self.sync()

    async def sync(self):
        async with self._lock:
            await self._sync()
        self.gateways.keep_up()

    async def _sync(self):
        ov = self.switch.config.overlay
        nets = []
        for name, rec in sorted(self.view.networks.items()):
            try:
                net = network_from_record(name, rec)
            except (ValueError, KeyError, TypeError) as e:
                log.error("cluster: network %s: bad record, ignored: %s", name, e)
                continue
            if ov and net.mtu + ov.overhead > ov.underlay_mtu:     # (this node's own limit)
                log.error("cluster: network %s: mtu %d + %d exceeds this node's underlay MTU "
                          "%d; not joined", name, net.mtu, ov.overhead, ov.underlay_mtu)
                continue
            nets.append(net)
        await self.gateways.forget_invalid(nets)
        nets = [self.gateways.configure(n, self.view.networks[n.name]) for n in nets]
        old = self.switch.config
        # A network re-created under the same name with another VNI or subnet
        # goes first, then comes back.
        keep = [n for n in nets if in_place(old.network(n.name), n)]
        if len(keep) != len(nets):
            await self.switch.reload(dataclasses.replace(old, networks=tuple(keep)))
        before = {n.name for n in self.switch.config.networks}
        await self.switch.reload(dataclasses.replace(self.switch.config, networks=tuple(nets)))
        current = {n.name: n for n in nets}
        for name in list(self.blocks.mine):     # blocks of networks gone, or re-made otherwise
            now = current.get(name)
            for block in list(self.blocks.mine[name]):
                if now is None or not fits(block, now):
                    await self.blocks.drop(name, block)
        db = self.switch.state
        await db.run(state.cache, db, "networks", {n.name: self.view.networks[n.name]
                                                   for n in nets})
        await db.run(state.cache, db, "nodes", self.view.nodes)
        for net in nets:
            if net.name not in before:
                await self.remote.add_peers()
                await self.remote.program_all([w for w in self.view.endpoints
                                               if w[0] == net.name])
        for name in before - set(current):      # its pods are no longer policy peers here
            await self.remote.reindex([w for w in self.view.endpoints if w[0] == name])
