"""This node's address blocks (the cluster's AddressBlocks, see ipam.py):
claimed with a create-if-absent transaction, so each block has one holder,
handed out from only while the lease is proven, checked against the
cluster after every (re)connect, given back once empty for a while, and
*lost* when another node holds one now: the pods addressed from it are
retired and their allocations released."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING

from .. import state
from ..config import NetworkConfig
from ..errors import Busy, Exhausted
from ..etcd import Txn
from ..ipam import Block
from ..protocol import ErrorKind
from .fencing import Fencing
from .schema import block_key_part, block_of_key_part, family, parse_json
from .session import Session
from .view import View

if TYPE_CHECKING:
    from ..switch import Switch

log = logging.getLogger("vswitch.cluster")


class Blocks:
    def __init__(self, session: Session, view: View, fencing: Fencing, switch: Switch,
                 incident: Callable[[str], None], spawn: Callable[[Coroutine], None]):
        self.session, self.view, self.fencing, self.switch = session, view, fencing, switch
        self.name, self.cfg, self.incident, self.spawn = session.name, session.cfg, incident, spawn
        self.mine: dict[str, list[Block]] = {}      # (mirrored in the state database)
        self.counters = {"blocks_claimed": 0, "blocks_released": 0, "blocks_lost": 0}
        # Called when a lost block held this node's gateway (set by Cluster).
        self.gateway_lost: Callable[[str, Block], Awaitable[None]] | None = None
        self._claiming = asyncio.Lock()
        self._empty_since: dict[tuple[str, str], float] = {}
        view.listen("blocks", self._changed)

    async def restore(self):
        db = self.switch.state
        for net, cidr in await db.run(state.held_blocks, db.db):
            self.mine.setdefault(net, []).append(ipaddress.ip_network(cidr))

    def can_allocate(self) -> bool:
        """Whether this node's lease is provably alive now, so that none of
        its blocks can have been taken."""
        return self.session.is_proven() and not self.fencing.fenced

    async def blocks(self, net: NetworkConfig) -> list[Block]:
        """The blocks to allocate from (or bring an address of up) now: only
        while the lease is provably alive (else a retryable error: CNI code
        11). A request meeting the pods coming back after fencing waits for
        them (its own among them)."""
        await self.fencing.settled()
        return self.proven_blocks(net)

    def proven_blocks(self, net: NetworkConfig) -> list[Block]:
        if not self.can_allocate():
            raise Busy("this node cannot prove its cluster lease is alive (etcd unreachable "
                       f"since {time.ctime(self.session.since)}): no new addresses until it can",
                       kind=ErrorKind.BUSY)
        return self.held(net)

    def held(self, net: NetworkConfig) -> list[Block]:
        return list(self.mine.get(net.name, []))

    def holds(self, net: NetworkConfig, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(ip in b for b in self.mine.get(net.name, []))

    async def more(self, net: NetworkConfig, full: list[Block], version: int = 4) -> bool:
        """Claim one more block of the network of a family (create-if-absent),
        scanning from a place that depends on the node's name so that nodes
        starting together do not all race for the first one. full: the
        blocks the caller found full; if another request added one
        meanwhile, that one serves."""
        subnet, size = family(net, version)
        if subnet is None or size is None:
            return False
        async with self._claiming:
            held = [b for b in self.mine.get(net.name, []) if b.version == version]
            if set(held) != {b for b in full if b.version == version}:
                return True
            if len(held) >= self.cfg.max_blocks:
                raise Exhausted(f"node {self.name} holds {len(held)} IPv{version} blocks of "
                                f"network {net.name!r}, its limit (cluster.max_blocks)",
                                kind=ErrorKind.EXHAUSTED, version=version)
            await self.session.need_connection()
            kvs, _ = await self.session.etcd.get_prefix(self.session.keys.key("blocks", net.name)
                                                        + "/")
            taken = {kv.key.rsplit("/", 1)[1] for kv in kvs}
            # By index: an IPv6 subnet has more blocks than a list could hold.
            count, step = 1 << (size - subnet.prefixlen), 1 << (subnet.max_prefixlen - size)
            start = int(hashlib.sha256(self.name.encode()).hexdigest(), 16) % count
            for k in range(min(count, len(taken) + self.cfg.max_blocks + 1)):
                block = ipaddress.ip_network(
                    (subnet.network_address + (start + k) % count * step, size))
                if block_key_part(block) in taken:
                    continue
                if await self._claim(net.name, block):
                    log.info("cluster: claimed block %s of network %s", block, net.name)
                    return True
            raise Exhausted(f"network {net.name!r} ({subnet}) has no free /{size} block left",
                            kind=ErrorKind.EXHAUSTED, version=version)

    async def _claim(self, network: str, block: Block) -> bool:
        """Take a block if nobody holds it (one transaction); whether we did."""
        key = self.session.keys.block(network, block)
        txn = Txn().absent(key)
        txn.success = [Txn.put(key, json.dumps({"node": self.name,
                                                "claimed": time.time()}).encode())]
        if not (await self.session.commit(txn)).succeeded:
            return False
        await self._hold(network, block)
        self.counters["blocks_claimed"] += 1
        return True

    async def _hold(self, network: str, block: Block):
        db = self.switch.state
        await db.run(state.hold_block, db, network, str(block), True)
        if block not in self.mine.setdefault(network, []):
            self.mine[network].append(block)

    async def drop(self, network: str, block: Block):
        db = self.switch.state
        if block in self.mine.get(network, []):
            self.mine[network].remove(block)
        await db.run(state.hold_block, db, network, str(block), False)

    def _changed(self, name: tuple[str, ...], before: dict | None, rec: dict | None):
        network, cidr = name
        holder = rec.get("node") if rec else None
        block = block_of_key_part(cidr)
        if block in self.mine.get(network, []) and holder not in (None, self.name):
            self.spawn(self.lose(network, block, f"now held by node {holder}"))

    async def check(self):
        """After (re)registering: blocks etcd gives this node that it does
        not know are adopted; blocks it holds that etcd lost are claimed
        again; blocks another node holds now are lost."""
        for (network, cidr), holder in list(self.view.holders.items()):
            block = block_of_key_part(cidr)
            if holder == self.name and block not in self.mine.get(network, []) \
                    and network in self.view.networks:
                await self._hold(network, block)
        for network, held in list(self.mine.items()):
            for block in list(held):
                holder = self.view.holder(network, block_key_part(block)) or ""
                if holder == self.name:
                    continue
                if not holder and network in self.view.networks and \
                        await self._claim(network, block):
                    log.warning("cluster: block %s of %s was released while this node was "
                                "away; claimed again", block, network)
                    continue
                await self.lose(network, block, f"now held by {holder or 'nobody'}")

    async def lose(self, network: str, block: Block, why: str):
        """A block of this node's was taken while it was away: its addresses
        may be another pod's now, so the pods addressed from it are
        retired (listed as lost) and their allocations released (safe), with
        an error in the log, a counter and an incident in `cluster status`
        (visible)."""
        await self.drop(network, block)
        self.counters["blocks_lost"] += 1
        ports = [p for p in list(self.switch.ports.values()) if p.network.name == network
                 and p.state != "lost" and any(a.ip in block for a in p.addresses)]
        for port in ports:
            if port.is_host:        # (its gateway goes: another one comes)
                await self.switch.detach_port(port)
            else:
                await self.switch.retire(port, f"block {block} lost ({why})")
        released = 0
        for alloc in await self.switch.state.run(self.switch.ipam.list, network):
            if any(ip in block for ip in alloc.ips):
                await self.switch.state.run(self.switch.ipam.release, alloc.container_id,
                                            alloc.ifname)
                released += 1
        self.incident(f"block {block} of network {network} lost ({why}): "
                      f"{len(ports)} pods detached, {released} addresses released")
        if self.gateway_lost is not None:
            await self.gateway_lost(network, block)

    async def release_empty(self, in_use: Callable[[str, Block], bool]):
        """Give back blocks that stayed empty for block_release_after seconds,
        keeping at least one per network and family (housekeeping).
        in_use: whether something beside allocations uses a block (a gateway)."""
        if not self.session.connected:
            return
        now = time.monotonic()
        for network, held in list(self.mine.items()):
            spare = [b for version in (4, 6) for b in [b for b in held if b.version == version][1:]]
            for block in spare:
                # (count_in sees allocations and port records, which ports being
                # made already have)
                used = await self.switch.state.run(self.switch.ipam.count_in, network, block) \
                    or in_use(network, block)
                spot = (network, str(block))
                if used:
                    self._empty_since.pop(spot, None)
                    continue
                if now - self._empty_since.setdefault(spot, now) < self.cfg.block_release_after:
                    continue
                held.remove(block)          # no ADD takes an address from it from now on
                if await self.switch.state.run(self.switch.ipam.count_in, network, block):
                    held.append(block)      # one did just before
                    continue
                key = self.session.keys.block(network, block)
                kv = await self.session.etcd.get(key)
                if kv and (parse_json(kv.value) or {}).get("node") == self.name:
                    txn = Txn().unchanged(key, kv.mod_revision)
                    txn.success = [Txn.delete(key)]
                    await self.session.commit(txn)
                await self.drop(network, block)
                self._empty_since.pop(spot, None)
                self.counters["blocks_released"] += 1
                log.info("cluster: released empty block %s of network %s", block, network)
