"""This node's session with etcd: the client, the node's record on its
lease, and the *proof* that the lease is alive.

The proof: the node counts its lease valid until the time it *sent* the
last renewal etcd answered, plus the TTL etcd gave, on its own monotonic
clock; etcd cannot have expired the lease before then. Each proof is kept
in the state database with the boot's identity (monotonic times compare
within a boot), so that a restarted daemon knows until when what its
predecessor left configured may stay."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from .. import __version__, state
from ..config import ClusterConfig
from ..errors import Busy, VswitchError
from ..etcd import Etcd, EtcdUnavailable, Txn
from ..protocol import ErrorKind
from .schema import Keys, parse_json

log = logging.getLogger("vswitch.cluster")

REQUEST_WAIT = 5.0                      # how long a request needing etcd waits for a reconnect


class NameTaken(VswitchError):
    """Another live vswitchd is registered under this node's name."""


def boot_id() -> str:
    """This boot's identity: monotonic times are comparable within it."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


class Session:
    def __init__(self, cfg: ClusterConfig, name: str, vtep: str, keys: Keys, db: state.State,
                 started_at: float):
        self.cfg, self.name, self.vtep, self.keys, self.db = cfg, name, vtep, keys, db
        self.started_at = started_at
        self.etcd = Etcd(cfg.etcd, cfg.ca_file, cfg.cert_file, cfg.key_file)
        self.lease = 0
        self.proven_until = 0.0      # monotonic time until which the lease is surely alive
        self.proof_before = 0.0      # the same, as the previous run left it (this boot)
        self.cleared = False         # fenced past the deadline (kept with the proof)
        self.connected = False
        self.since = time.time()     # of the last connect or disconnect
        self.error: str | None = None
        self.writes = 0
        self._up = asyncio.Event()   # set while connected

    async def restore(self):
        self.lease = await self.db.run(state.cached, self.db.db, "lease", 0)
        proof = await self.db.run(state.cached, self.db.db, "proof", {})
        if proof.get("boot") == boot_id() and not proof.get("fenced"):
            self.proof_before = float(proof.get("until", 0.0))

    def up(self):
        self.connected, self.error, self.since = True, None, time.time()
        self._up.set()

    def down(self, error):
        if self.connected:
            self.since = time.time()
        self.connected = False
        self._up.clear()
        self.error = str(error)

    async def register(self):
        """Put this node's record on its lease (the previous one if it is
        still alive: a restart keeps it), unless a live node has the name."""
        sent = time.monotonic()
        ttl = await self.etcd.keepalive(self.lease) if self.lease else 0
        if ttl <= 0:
            sent = time.monotonic()
            self.lease, ttl = await self.etcd.grant(self.cfg.lease_ttl), self.cfg.lease_ttl
            await self.db.run(state.cache, self.db, "lease", self.lease)
        key = self.keys.key("nodes", self.name)
        record = json.dumps({"vtep": self.vtep, "version": __version__, "started":
                             self.started_at, "lease": self.lease}).encode()
        txn = Txn().absent(key)
        txn.success = [Txn.put(key, record, self.lease),
                       Txn.delete(self.keys.key("graves", self.name))]
        txn.failure = [Txn.get(key)]
        result = await self.commit(txn)
        if not result.succeeded:
            held = result.responses[0].response_range.kvs[0]
            if held.lease != self.lease:
                rec = parse_json(held.value) or {}
                raise NameTaken(f"node name {self.name!r} is registered by a live vswitchd "
                                f"(vtep {rec.get('vtep')}, started "
                                f"{time.ctime(rec.get('started', 0))}); give this node another "
                                "node.name, or stop that one")
            txn = Txn().leased(key, self.lease)
            txn.success = [Txn.put(key, record, self.lease)]
            await self.commit(txn)
        await self.proven(sent + ttl)

    async def keep_alive(self):
        """Renew the lease every third of its TTL (each answer a new proof).
        A renewal may outlast the proof (an etcd leader change, which keeps
        leases): the node counts as connected only while proven meanwhile
        (Cluster.connected)."""
        while True:
            await asyncio.sleep(self.cfg.lease_ttl / 3)
            sent = time.monotonic()
            ttl = await self.etcd.keepalive(self.lease)
            if ttl <= 0:
                raise EtcdUnavailable("this node's lease expired; registering again")
            await self.proven(sent + ttl)

    async def proven(self, until: float):
        self.proven_until = until
        await self.save_proof()

    async def save_proof(self):
        await self.db.run(state.cache, self.db, "proof", {"boot": boot_id(),
                                                          "until": self.proven_until,
                                                          "fenced": self.cleared})

    def is_proven(self) -> bool:
        return time.monotonic() < self.proven_until

    def deadline(self) -> float:
        """When this node's blocks may start going to others, less a margin
        (monotonic): grace_period after its last proof, or after the one the
        previous run left (none: now)."""
        proof = self.proven_until or self.proof_before
        grace = self.cfg.grace_period
        return proof + grace - min(grace / 10, 60.0) if proof else 0.0

    async def commit(self, txn: Txn):
        self.writes += 1
        return await self.etcd.commit(txn)

    async def put(self, key: str, value: bytes):
        """A record on this node's lease."""
        self.writes += 1
        await self.etcd.put(key, value, self.lease)

    async def need_connection(self):
        """Wait a little for a reconnection (another etcd member may be
        taking over), then give up with a retryable error."""
        try:
            await asyncio.wait_for(self._up.wait(), REQUEST_WAIT)
        except asyncio.TimeoutError:
            raise Busy(f"etcd is unreachable ({self.error}); try again", kind=ErrorKind.BUSY) from None
