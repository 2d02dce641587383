"""Cluster mode: the state nodes share, kept in etcd, turned into the same
calls a static config makes (networks through Switch.reload, peers, remote
FDB entries and neighbours through the DataPlane), so the rest of the
daemon does not know which mode it runs in.

The house, from the bottom:

    schema      the key layout and what a valid record holds
    session     etcd: the client, this node's record on its lease, the proof
    view        what the node knows of the records, and who is told of changes
    fencing     every address of the node's blocks held down without a proof
    blocks      this node's address blocks (the AddressBlocks of ipam.py)
    remote      other nodes and their pods: peers, FDB, neighbours, policy peers
    publisher   this node's pods as endpoint records (the PortObserver)
    graves      dead nodes' blocks, kept for grace_period, then freed
    gateways    this node's gateway in each network
    networks    the view's networks as this node runs them
    admin       operators' verbs and the cluster-wide listings
    Cluster     (here) wires them, and follows the source: register, list,
                watch, reconnect

A source (the etcd session's list and watch here) feeds Changes to the
view; reconcilers listen to the view. Why no address is ever live on two
pods: the README has the argument; fencing.py and blocks.py hold it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING

from ..config import Config, NetworkConfig
from ..errors import VswitchError
from ..etcd import ETCD_FAILURES, Compacted, EtcdUnavailable
from ..ipam import Block
from .admin import Admin
from .blocks import Blocks
from .fencing import Fencing
from .gateways import Gateways, host_port_name
from .graves import Graves
from .networks import Networks
from .publisher import Publisher
from .remote import Remote
from .schema import Keys, network_from_record
from .session import NameTaken, Session
from .slices import sliced
from .view import View

if TYPE_CHECKING:
    from ..switch import Switch

__all__ = ["Cluster", "NameTaken", "network_from_record"]

log = logging.getLogger("vswitch.cluster")

BACKOFF_MIN, BACKOFF_MAX = 0.2, 5.0     # seconds between reconnection attempts
# Records applied after which what the view holds is moved out of the
# garbage collector's way (gc.freeze): at 150,000 records a full collection
# over them holds the event loop for half a second, and they live for long.
FREEZE_AFTER = 10000
START_TIMEOUT = 3.0                     # how long start-up waits for etcd before going on
INCIDENTS = 20                          # blocks lost or fencing, kept for `cluster status`


class Cluster:
    """This node's membership of the cluster."""

    def __init__(self, config: Config, switch: Switch):
        assert config.cluster and config.overlay
        cfg = self.cfg = config.cluster
        self.name = config.node_name
        self.switch = switch
        self.keys = Keys(cfg.prefix)
        self.session = Session(cfg, self.name, str(config.overlay.vtep_ip), self.keys,
                               switch.state, switch.started_at)
        self.view = View(self.keys)
        self.incidents: deque = deque(maxlen=INCIDENTS)
        self.counters = {"reconnects": 0, "relists": 0}
        self.events_applied = 0
        self.last_event: dict | None = None
        self._background: set[asyncio.Task] = set()
        self.fencing = Fencing(self.session, switch, self._incident)
        # (the publisher first: it hears of an endpoint before remote programs it)
        self.publisher = Publisher(self.session, self.view, switch, cfg.arp_suppression,
                                   self._spawn)
        self.remote = Remote(self.view, switch, self.name, self.session.vtep,
                             cfg.arp_suppression)
        self.graves = Graves(self.session, self.view, self._spawn)
        self.address_blocks = Blocks(self.session, self.view, self.fencing, switch,
                                     self._incident, self._spawn)
        self.gateways = Gateways(self.view, self.address_blocks, switch)
        self.networks = Networks(self.view, self.address_blocks, self.gateways, self.remote,
                                 switch)
        self.admin = Admin(self.session, self.view, self.gateways, self.graves, switch)
        self._task: asyncio.Task | None = None
        self._keeping: asyncio.Task | None = None     # the lease's renewals, while connected
        self._first_sync: asyncio.Task | None = None  # start's sync, if it outlasts start
        self._unfrozen = 0                   # records applied since the last gc.freeze
        self._releasing: asyncio.Task | None = None
        self._resync = asyncio.Event()       # set: stop following, list everything again
        self._relist = False                 # the watch fell behind compaction
        self._wire()

    def _wire(self):
        """What each part asks of the others, without importing them."""
        self.gateways.sync_networks = self.networks.sync
        self.address_blocks.gateway_lost = self._gateway_lost
        self.fencing.sync_networks = self.networks.sync
        self.fencing.ensure_gateways = self._ensure_gateways
        self.fencing.host_ports = lambda: [host_port_name(n) for n in self.gateways.addresses]
        self.fencing.networks = lambda: self.view.networks
        self.fencing.fenced_while_connected = self._resync.set
        self.view.listen("nodes", self._own_record)
        self.view.listen("policies", self._policy)
        self.view.listen("namespaces", self._namespace)
        # The faces the switch, the API and the policy engine use.
        ab = self.address_blocks
        self.held, self.blocks, self.more, self.holds = ab.held, ab.blocks, ab.more, ab.holds
        self.port_up, self.port_down = self.publisher.port_up, self.publisher.port_down

    # -------------------------------------------------- AddressBlocks face

    @property
    def fenced(self) -> bool:
        return self.fencing.fenced

    async def ready(self, net: NetworkConfig) -> NetworkConfig:
        """The network, with this node's gateway made first if it wants one
        (before a pod's address: the pod's default route points to it)."""
        if self.gateways.missing(net.name):
            await self.gateways.ensure(net.name)
        return self.switch.network(net.name)

    # ------------------------------------------------------------ lifecycle

    async def restore(self):
        """Start from what the node last knew (before ports are re-attached,
        so that their networks exist even while etcd is away)."""
        await self.session.restore()
        await self.networks.restore()
        await self.address_blocks.restore()
        await self.gateways.restore()
        await self.networks.sync()
        self.switch.addresses = self
        self.switch.observer = self
        self.switch.cluster = self
        self.switch.policy.remote_pods = self.remote.remote_pods
        self.switch.policy.writer = self.admin

    async def start(self):
        """Register and sync (a name held by a live node raises NameTaken:
        the daemon exits), waiting at most START_TIMEOUT, then keep at it in
        the background: a first sync that takes longer (a large cluster)
        goes on there, and an unreachable etcd is not fatal. The node starts
        fenced: what the previous run left is cleared at once if its proof
        is over, and its pods come back once the sync is done."""
        self.fencing.check()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        try:
            await asyncio.wait_for(self._connect(), START_TIMEOUT)
        except NameTaken:
            await self.session.etcd.close()
            raise
        except (*ETCD_FAILURES, asyncio.TimeoutError) as e:
            self._stop_keeping()
            self.session.down(str(e) or "timed out")
            log.warning("etcd not reachable at start (%s); retrying, and fenced until this "
                        "node proves its lease: its pods and gateways stay down",
                        self.session.error)
        else:
            # (its failure, if any, is _run's to handle)
            self._first_sync = asyncio.create_task(self._sync_and_up())
            done, _ = await asyncio.wait([self._first_sync],
                                         timeout=max(0.0, deadline - loop.time()))
            if not done:
                log.info("cluster: still reading the cluster's records; going on, fenced "
                         "until done")
        self._task = asyncio.create_task(self._run())

    async def close(self):
        for task in [self._task, self._first_sync, self._keeping, self._releasing,
                     *self._background]:
            if task:
                task.cancel()
        await self.session.etcd.close()

    async def _run(self):
        """Keep the node registered and its view current: renew the lease and
        follow the watch; on any failure, reconnect with backoff."""
        backoff = BACKOFF_MIN
        while True:
            try:
                if self._first_sync is not None:      # (start's, still going or failed)
                    first, self._first_sync = self._first_sync, None
                    await first
                if not self.session.connected:
                    await self._connect_and_sync()
                    backoff = BACKOFF_MIN
                elif self._relist:
                    self._relist = False
                    await self._sync()
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Compacted as e:
                log.warning("cluster: watch fell behind (%s): listing everything again", e)
                self._relist = True
            except Exception as e:      # etcd away, a name conflict, a bug: retry, never die
                self._stop_keeping()
                if self.session.connected or self.session.error != str(e):
                    log.warning("cluster: %s; retrying", e)
                if not isinstance(e, (EtcdUnavailable, NameTaken)):
                    log.exception("cluster: unexpected failure")
                self.session.down(e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _connect_and_sync(self):
        await self._connect()
        await self._sync_and_up()

    async def _connect(self):
        """Register, and renew the lease from then on: the first re-list, at
        any size, and every record after it never hold renewals back."""
        await self.session.etcd.connect()
        await self.session.register()
        self._stop_keeping()
        self._keeping = asyncio.create_task(self.session.keep_alive())

    def _stop_keeping(self):
        if self._keeping is not None:
            self._keeping.cancel()
            self._keeping = None

    async def _sync_and_up(self):
        await self._sync()
        self.session.up()
        self.counters["reconnects"] += 1
        log.info("cluster: registered as %s (vtep %s) through %s, revision %d", self.name,
                 self.session.vtep, self.session.etcd.endpoint, self.view.revision)
        await self.fencing.unfence()        # proven, and its blocks checked by the sync

    async def _follow(self):
        """Renew the lease every third of its TTL, and apply the watch's
        events, until one of them fails or a full re-list is due."""
        self._resync.clear()
        assert self._keeping is not None
        tasks = [asyncio.create_task(self._watch()), asyncio.create_task(self._resync.wait())]
        try:
            done, _ = await asyncio.wait([self._keeping, *tasks],
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()           # raises what ended it
            if self.name not in self.view.nodes:
                raise EtcdUnavailable("this node's record is gone (its lease expired)")
            if self.fencing.fenced:
                raise EtcdUnavailable("fenced while connected (renewals stalled): "
                                      "registering again")
            await self._sync()          # a re-list was asked for
        finally:
            for task in tasks:
                task.cancel()

    async def _watch(self):
        async for batch in self.session.etcd.watch(self.keys.prefix, self.view.revision + 1):
            async for event in sliced(batch):
                self._apply(event.key, event.value)
                self.view.revision = event.revision
                self.events_applied += 1
            self._settle(len(batch))
            if batch:
                event = batch[-1]
                self.last_event = {"key": event.key, "deleted": event.value is None,
                                   "revision": event.revision, "time": time.time()}
            await self.networks.after_events()

    def _apply(self, key: str, value: bytes | None):
        change = self.keys.change(key, value)
        if change is not None:
            self.view.apply(change)

    async def _sync(self):
        """List everything and make the view and data plane agree with it;
        then check this node's blocks and endpoints against it."""
        kvs, revision = await self.session.etcd.get_prefix(self.keys.prefix)
        self.counters["relists"] += 1
        listed = {kv.key: kv.value for kv in kvs}
        gone = [self.keys.key(kind, *name) for kind, name in self.view.known()
                if self.keys.key(kind, *name) not in listed]
        # What the node holds already is passed over (View.apply): a re-list
        # costs the records that changed.
        async for key, value in sliced([*((k, None) for k in gone), *listed.items()]):
            self._apply(key, value)
        self.view.revision = revision
        self._settle(len(listed))
        await self.networks.after_events(force=True)
        await self.address_blocks.check()
        await self.publisher.publish_all()
        await self.graves.bury_orphans()

    def _settle(self, applied: int):
        """Every FREEZE_AFTER records, freeze what is alive (gc.freeze)."""
        self._unfrozen += applied
        if self._unfrozen >= FREEZE_AFTER:
            self._unfrozen = 0
            gc.freeze()

    def _policy(self, name: tuple[str, ...], before: dict | None, rec: dict | None):
        self.switch.policy.set_policy("/".join(name), rec)

    def _namespace(self, name: tuple[str, ...], before: dict | None, rec: dict | None):
        self.switch.policy.set_namespace(name[0], rec and rec.get("labels"))

    def _own_record(self, name: tuple[str, ...], before: dict | None, rec: dict | None):
        if name[0] == self.name and rec is None and self.session.connected:
            self._resync.set()          # our record is gone: our lease expired

    # ---------------------------------------------------------- the others

    async def _gateway_lost(self, network: str, block: Block):
        if self.gateways.in_block(network, block):
            await self.networks.sync()      # its host port goes; another gateway comes

    async def _ensure_gateways(self):
        for network in [n for n in self.view.networks if self.gateways.missing(n)]:
            try:
                await self.gateways.ensure(network)
            except VswitchError as e:
                log.warning("cluster: no gateway in network %s yet: %s", network, e)

    def _spawn(self, coro: Coroutine):
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure(logging.WARNING, "publishing"))

    def _incident(self, text: str):
        log.error("cluster: %s", text)
        self.incidents.append({"time": time.time(), "what": text})

    def housekeeping(self):
        """Every second: fencing, gateways, and giving back empty blocks."""
        self.fencing.check()
        self.gateways.keep_up()
        if self._releasing is None or self._releasing.done():
            self._releasing = asyncio.ensure_future(
                self.address_blocks.release_empty(self.gateways.in_block))
            self._releasing.add_done_callback(_log_failure(logging.DEBUG, "releasing empty blocks"))

    # ------------------------------------------------------------ reporting

    def can_allocate(self) -> bool:
        return self.address_blocks.can_allocate()

    def _counters(self) -> dict:
        return {**self.address_blocks.counters, **self.counters, "etcd_writes": self.session.writes,
                "records_ignored": self.view.ignored}

    @property
    def connected(self) -> bool:
        """Registered, following the watch, and its lease proven alive."""
        return self.session.connected and self.session.is_proven()

    def metrics(self) -> dict:
        """The figures `status`, `stats` and Prometheus show."""
        return {"connected": self.connected, "nodes": len(self.view.nodes),
                "endpoints": len(self.view.endpoints), "events_applied": self.events_applied,
                "revision": self.view.revision, "can_allocate": self.can_allocate(),
                "fenced": self.fenced,
                "blocks_held": sum(len(b) for b in self.address_blocks.mine.values()),
                **self._counters()}

    def status(self) -> dict:
        s = self.session
        return {"node": self.name, "vtep": s.vtep, "etcd": list(self.cfg.etcd),
                "endpoint": s.etcd.endpoint if s.connected else None,
                "connected": self.connected,
                "since": s.since, "error": s.error, "lease": f"{s.lease:x}",
                "lease_proven_for": max(0.0, round(s.proven_until - time.monotonic(), 3)),
                "can_allocate": self.can_allocate(), "fenced": self.fenced,
                "revision": self.view.revision, "last_event": self.last_event,
                "events_applied": self.events_applied, "nodes": len(self.view.nodes),
                "networks": len(self.view.networks), "endpoints": len(self.view.endpoints),
                "blocks_held": {n: [str(b) for b in bs]
                                for n, bs in self.address_blocks.mine.items()},
                "counters": self._counters(), "incidents": list(self.incidents)}


def _log_failure(level: int, what: str):
    """A done-callback that logs a background task's exception."""
    def callback(task: asyncio.Task):
        if not task.cancelled() and task.exception() is not None:
            log.log(level, "cluster: %s: %s", what, task.exception())
    return callback
