"""Dead nodes' blocks. A node's record is gone (its lease expired): its
blocks stay reserved for grace_period, counted by a lease of that length
on its grave, so that etcd's clock, not ours, decides when it is over;
then whichever node sees the grave go frees them, in one transaction that
holds only if the node is still gone. Blocks whose holder has neither a
record nor a grave (every node was down when its grace ran out) get a
grave again: a grace period is never skipped."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine

from ..etcd import Txn
from .schema import parse_json
from .session import Session
from .view import View

log = logging.getLogger("vswitch.cluster")

# Graves dug (or blocks reclaimed) at once: when a thousand nodes go together,
# their graves' writes must not queue the lease's renewals behind them.
DIGGERS = 4


class Graves:
    def __init__(self, session: Session, view: View, spawn: Callable[[Coroutine], None]):
        self.session, self.view, self.spawn = session, view, spawn
        self.keys = session.keys
        self._diggers = asyncio.Semaphore(DIGGERS)
        view.listen("nodes", self._node)
        view.listen("graves", self._grave)

    def _node(self, name: tuple[str, ...], before: dict | None, rec: dict | None):
        if rec is None and name[0] != self.session.name and self.session.connected:
            self.spawn(self.bury(name[0]))

    def _grave(self, name: tuple[str, ...], before: dict | None, rec: dict | None):
        if rec is None and name[0] not in self.view.nodes and self.session.connected:
            self.spawn(self.reclaim(name[0]))      # its grace period is over

    async def bury(self, name: str):
        async with self._diggers:
            await self._bury(name)

    async def _bury(self, name: str):
        if name in self.view.graves or not any(h == name for h in self.view.holders.values()):
            return
        grace = self.session.cfg.grace_period
        lease = await self.session.etcd.grant(max(int(grace), 1))
        key = self.keys.key("graves", name)
        txn = Txn().absent(key).absent(self.keys.key("nodes", name))
        txn.success = [Txn.put(key, json.dumps({"since": time.time()}).encode(), lease)]
        if not (await self.session.commit(txn)).succeeded:
            await self.session.etcd.revoke(lease)
        else:
            log.info("cluster: node %s is gone; its blocks stay reserved for %g s", name, grace)

    async def reclaim(self, name: str) -> tuple[bool, int]:
        """Free a dead node's blocks (its grace is over, or an operator said
        it is gone); whether it held, and how many."""
        async with self._diggers:
            return await self._reclaim(name)

    async def _reclaim(self, name: str) -> tuple[bool, int]:
        kvs, _ = await self.session.etcd.get_prefix(self.keys.key("blocks") + "/")
        theirs = [kv for kv in kvs if (parse_json(kv.value) or {}).get("node") == name]
        txn = Txn().absent(self.keys.key("nodes", name))
        for kv in theirs:
            txn.unchanged(kv.key, kv.mod_revision)
        txn.success = [Txn.delete(kv.key) for kv in theirs] + \
            [Txn.delete(self.keys.key("graves", name))]
        result = await self.session.commit(txn)
        if result.succeeded and theirs:
            log.info("cluster: reclaimed %d blocks of node %s", len(theirs), name)
        return result.succeeded, len(theirs)

    async def bury_orphans(self):
        for holder in set(self.view.holders.values()):
            if holder not in self.view.nodes and holder not in self.view.graves and \
                    holder != self.session.name:
                await self.bury(holder)
