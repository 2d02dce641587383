"""Fencing: a node that cannot prove its lease holds every address of its
blocks down. It starts fenced (its pods held, no gateway) until it has
proven its lease and checked its blocks; once it could not prove the lease
by its deadline (grace_period after the last proof, less a margin) it takes
its pods' interfaces and its gateways down, since its blocks may have gone
to others. Fencing is kept with the proof (session.py), so a restarted
daemon starts fenced and clears what was left by its predecessor's
deadline."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from ..errors import VswitchError
from ..tap import remove_device
from .session import Session

if TYPE_CHECKING:
    from ..switch import Switch

log = logging.getLogger("vswitch.cluster")


class Fencing:
    def __init__(self, session: Session, switch: Switch, incident: Callable[[str], None]):
        self.session, self.switch, self.incident = session, switch, incident
        self.fenced = True           # ports and gateways held down (from start)
        self.lock = asyncio.Lock()   # fencing and unfencing, one at a time
        # What the rest of the node does on either side (set by Cluster):
        self.sync_networks: Callable[[], Awaitable[None]] | None = None
        self.ensure_gateways: Callable[[], Awaitable[None]] | None = None
        self.host_ports: Callable[[], Iterable[str]] = lambda: ()
        self.networks: Callable[[], Iterable[str]] = lambda: ()
        self.fenced_while_connected: Callable[[], None] = lambda: None
        self._task: asyncio.Task | None = None

    def check(self):
        """Housekeeping: fence once the deadline passed without a proof."""
        if self.session.cleared or time.monotonic() < self.session.deadline():
            return
        self.session.cleared = self.fenced = True
        self._task = asyncio.ensure_future(self._fence())
        self._task.add_done_callback(_log_failure)

    async def _fence(self):
        async with self.lock:
            if not self.session.cleared:
                return          # proven again meanwhile
            await self.session.save_proof()     # a restart starts fenced, and cleared at once
            networks = set(self.networks())
            ports = [p for p in list(self.switch.ports.values()) if not p.is_host and
                     p.state in ("up", "fenced") and p.network.name in networks]
            up = sum(p.state == "up" for p in ports)
            for port in ports:
                await self.switch.fence(port, "fenced: cluster lease unproven")
            assert self.sync_networks is not None
            await self.sync_networks()          # (fenced: no host ports)
            for ifname in self.host_ports():    # one a previous run left
                try:
                    await self.switch.loop.run_in_executor(None, remove_device, None, ifname,
                                                           None)
                except VswitchError as e:       # logged: the rest of the fence goes on
                    log.error("cluster: host port %s: %s", ifname, e)
            left = len(ports) - up
            self.incident(f"fenced: this node's lease unproven past its grace period "
                          f"({self.session.cfg.grace_period:g} s): {up} pods and its gateways "
                          "taken down" + (f", {left} pod interfaces a previous run left "
                                          "cleared" if left else ""))
            if self.session.connected:
                self.fenced_while_connected()   # (registering again proves it anew)

    async def unfence(self):
        """After a proof and the block check: gateways, then the pods held
        down come back, from their records (those of blocks lost were
        retired by the check)."""
        async with self.lock:
            held = [p for p in self.switch.ports.values() if p.state == "fenced"
                    and not p.is_host]
            if not self.fenced and not held:
                return
            self.fenced = self.session.cleared = False
            await self.session.save_proof()
            assert self.sync_networks is not None and self.ensure_gateways is not None
            await self.sync_networks()      # host ports first: pods' routes point to them
            await self.ensure_gateways()    # (one lost with its block: another one)
            for port in held:
                await self.switch.unfence(port)
        if held:
            log.warning("cluster: lease proven and blocks checked: the %d pods held down "
                        "come back", len(held))

    async def settled(self):
        """Wait for a fencing or unfencing under way."""
        async with self.lock:
            pass


def _log_failure(task: asyncio.Task):
    if not task.cancelled() and task.exception() is not None:
        log.error("cluster: fencing: %s", task.exception())
