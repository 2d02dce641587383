"""Cluster mode: the state nodes share, kept in etcd, turned into the same
calls a static config makes (networks through Switch.reload, peers, remote
FDB entries and neighbours through the DataPlane), so the rest of the
daemon does not know which mode it runs in.

Keys, under [cluster] prefix (default /vswitch):

    networks/NAME           {"vni", "mtu", "gateway", "masquerade", ["subnet",
                             "block_size"], ["subnet6", "block_size6"]}     no lease
    vnis/VNI                "NAME" (one network per VNI)                     no lease
    nodes/NAME              {"vtep", "version", "started", "lease"}          the node's lease
    blocks/NET/ADDR-LEN     {"node", "claimed"} (IPv4 or IPv6 blocks)        no lease
    endpoints/NET/IP        {"mac", "node", "pod"}                           the node's lease
    graves/NAME             {"since"}                                        a grace-period lease
    policies/NS/NAME        a NetworkPolicy manifest                         no lease
    namespaces/NS           {"labels"}                                       no lease

An endpoint's "pod" is who the pod is for NetworkPolicy (namespace, name,
labels, named ports): other nodes match their policies' selectors on it.

Why no address is ever live on two pods (the README has the long form):
a node hands out addresses only from blocks it holds (claimed with a
create-if-absent transaction, so each block has one holder), and only
while it can prove its lease is alive: it counts its lease as valid until
the time it *sent* the last renewal etcd answered, plus the TTL etcd gave,
on its own monotonic clock. A block changes hands only after its holder's
node record is gone: at once with `node remove` (refused while the record
lives) or when the grave (a lease of grace_period seconds granted once the
record disappeared) expires. A node cut off for longer than its proof plus
grace_period takes its pods down itself (fencing), and a node that comes
back and finds a block of its taken by another node detaches the pods
addressed from it: both are logged and counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ipaddress
import json
import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from . import __version__, state
from .config import Config, NetworkConfig, node_address
from .errors import Busy, Conflict, Exhausted, InvalidRequest, NotFound, VswitchError
from .etcd import ETCD_FAILURES, Compacted, Etcd, EtcdUnavailable, Txn
from .gateways import Gateways, host_port_name
from .ipam import Block
from .policy import PodIdentity, PolicyPod
from .protocol import MAX_NETWORK_MTU, MIN_MTU, address_key
from .tap import remove_device

if TYPE_CHECKING:
    from .switch import Port, Switch

log = logging.getLogger("vswitch.cluster")

BACKOFF_MIN, BACKOFF_MAX = 0.2, 5.0     # seconds between reconnection attempts
DEFAULT_BLOCK_SIZE6 = 122               # IPv6 blocks of 64 addresses, as Calico's
START_TIMEOUT = 3.0                     # how long start-up waits for etcd before going on
REQUEST_WAIT = 5.0                      # how long a request needing etcd waits for a reconnect
TXN_OPS = 100                           # operations per transaction (etcd allows 128)
INCIDENTS = 20                          # blocks lost or fencing, kept for `cluster status`
LOGGED_BAD_RECORDS = 20                 # malformed records logged; the rest only counted
RECORD_KINDS = ("networks", "nodes", "endpoints", "blocks", "graves", "policies", "namespaces")


def boot_id() -> str:
    """This boot's identity: monotonic times are comparable within it."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


class NameTaken(VswitchError):
    """Another live vswitchd is registered under this node's name."""


def _json(value: bytes):
    """A record's JSON, or None: not JSON, or nested beyond what the
    parser recurses into (RecursionError), whatever a writer put there."""
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return None


def block_key_part(block: Block) -> str:
    return f"{block.network_address}-{block.prefixlen}"


def block_of_key_part(part: str) -> Block:
    """The block a record's key names (ValueError if it names none)."""
    return ipaddress.ip_network(part.replace("-", "/"))


def network_from_record(name: str, rec) -> NetworkConfig:
    """A network record from etcd as the config's NetworkConfig (its block
    is the whole subnet: nodes claim blocks of block_size inside it; a
    network has an IPv4 subnet, an IPv6 one, or both); ValueError if it is
    malformed."""
    if not isinstance(rec, dict):
        raise ValueError("not an object")
    vni, mtu = rec["vni"], rec["mtu"]
    if not all(isinstance(v, int) for v in (vni, mtu)) or not 0 < vni <= 0xFFFFFF \
            or not MIN_MTU <= mtu <= MAX_NETWORK_MTU:
        raise ValueError(f"bad vni or mtu in {rec}")
    if not all(isinstance(rec.get(k, False), bool) for k in ("gateway", "masquerade")):
        raise ValueError(f"gateway and masquerade must be true or false in {rec}")
    subnet = size = subnet6 = size6 = None
    if rec.get("subnet") is not None:
        subnet, size = ipaddress.IPv4Network(rec["subnet"]), rec["block_size"]
        if not isinstance(size, int) or not subnet.prefixlen <= size <= 30:
            raise ValueError(f"bad block_size in {rec}: between subnet's prefix and 30")
    if rec.get("subnet6") is not None:
        subnet6, size6 = ipaddress.IPv6Network(rec["subnet6"]), \
            rec.get("block_size6", DEFAULT_BLOCK_SIZE6)
        if not isinstance(size6, int) or not subnet6.prefixlen <= size6 <= 126 or \
                (size is not None and 2 ** (128 - size6) < 2 ** (32 - size)):
            raise ValueError(f"bad block_size6 in {rec}: between subnet6's prefix and 126, "
                             "with as many addresses as an IPv4 block")
    if subnet is None and subnet6 is None:
        raise ValueError("a subnet (IPv4), a subnet6 (IPv6) or both are required")
    return NetworkConfig(name, vni, subnet, subnet, mtu, block_size=size, subnet6=subnet6,
                         block6=subnet6, block_size6=size6)


def _family(net: NetworkConfig, version: int) -> tuple[Block | None, int | None]:
    """A cluster network's subnet and block size in one family."""
    return net.subnet_of(version), net.block_size if version == 4 else net.block_size6


def _fits(block: Block, net: NetworkConfig) -> bool:
    """Whether block is one of net's (its family's subnet and block size)."""
    subnet, size = _family(net, block.version)
    return subnet is not None and block.prefixlen == size and \
        block.subnet_of(subnet)  # type: ignore[arg-type]


def _vtep(rec) -> str | None:
    """A node record's VTEP, if it is a unicast address a node can have."""
    try:
        address = ipaddress.ip_address(rec.get("vtep"))
    except (ValueError, AttributeError):
        return None
    return str(address) if node_address(address) else None


def _in_place(old: NetworkConfig | None, new: NetworkConfig) -> bool:
    """Whether a network can go from old to new in place: new, or only its
    MTU or this node's gateway (its host port, masquerade) changed."""
    return old is None or dataclasses.replace(old, mtu=new.mtu, gateway=new.gateway,
                                              host_port=new.host_port,
                                              masquerade=new.masquerade) == new


def _log_failure(level: int, what: str):
    """A done-callback that logs a background task's exception."""
    def callback(task: asyncio.Task):
        if not task.cancelled() and task.exception() is not None:
            log.log(level, "cluster: %s: %s", what, task.exception())
    return callback


class Cluster:
    """This node's membership of the cluster: registration on a lease,
    the watch that programs the data plane, address blocks, endpoints."""

    def __init__(self, config: Config, switch: Switch):
        assert config.cluster and config.overlay
        self.cfg = config.cluster
        self.name = config.node_name
        self.vtep = str(config.overlay.vtep_ip)
        self.switch = switch
        self.prefix = self.cfg.prefix.rstrip("/") + "/"
        self.etcd = Etcd(self.cfg.etcd, self.cfg.ca_file, self.cfg.cert_file, self.cfg.key_file)
        # What the node knows of etcd, as of `revision`.
        self.networks: dict[str, dict] = {}
        self.nodes: dict[str, dict] = {}
        self.endpoints: dict[tuple[str, str], dict] = {}     # (network, ip) -> record
        self.by_node: dict[str, set[tuple[str, str]]] = {}   # node -> its endpoints
        self.mac_of: dict[tuple[str, str], tuple[str, str]] = {}   # (network, MAC) -> endpoint
        self.holders: dict[tuple[str, str], str] = {}         # (network, cidr) -> holder
        self.graves: dict[str, dict] = {}
        self.revision = 0
        # This node's blocks (mirrored in the state database).
        self.mine: dict[str, list[Block]] = {}
        self.lease = 0
        self.proven_until = 0.0      # monotonic time until which the lease is surely alive
        self.proof_before = 0.0      # the same, as the previous run left it (this boot)
        self.connected = False
        self.since = time.time()     # of the last connect or disconnect
        self.error: str | None = None
        self.last_event: dict | None = None
        self.events_applied = 0
        # Fenced: the node's cluster ports and gateways are held down, from
        # start until it has proven its lease and checked its blocks, and
        # again once it could not prove it for grace_period (see check_fence).
        self.fenced = True
        self._cleared = False        # past the fence deadline: its devices are gone too
        self._fencing = asyncio.Lock()      # fencing and unfencing, one at a time
        self.incidents: deque = deque(maxlen=INCIDENTS)
        self.counters = {"blocks_claimed": 0, "blocks_released": 0, "blocks_lost": 0,
                         "reconnects": 0, "relists": 0, "etcd_writes": 0, "records_ignored": 0}
        self.gateways = Gateways(self)
        self._networks_changed = False
        self._syncing_networks = asyncio.Lock()
        self._claiming = asyncio.Lock()
        self._empty_since: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task | None = None
        self._releasing: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self._resync = asyncio.Event()       # set: stop following, list everything again
        self._relist = False                 # the watch fell behind compaction
        self._up = asyncio.Event()           # set while connected

    def key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    # ------------------------------------------------------------ lifecycle

    async def restore(self):
        """Start from what the node last knew (before ports are re-attached,
        so that their networks exist even while etcd is away)."""
        db = self.switch.state
        self.lease = await db.run(state.cached, db.db, "lease", 0)
        proof = await db.run(state.cached, db.db, "proof", {})
        if proof.get("boot") == boot_id() and not proof.get("fenced"):
            self.proof_before = float(proof.get("until", 0.0))
        for name, rec in (await db.run(state.cached, db.db, "networks", {})).items():
            self.networks[name] = rec
        for name, rec in (await db.run(state.cached, db.db, "nodes", {})).items():
            self.nodes[name] = rec
        for net, cidr in await db.run(state.held_blocks, db.db):
            self.mine.setdefault(net, []).append(ipaddress.ip_network(cidr))
        await self.gateways.restore()
        await self.sync_networks()
        self.switch.addresses = self
        self.switch.observer = self
        self.switch.cluster = self
        self.switch.policy.remote_pods = self.remote_pods

    async def start(self):
        """Register and sync once (a name held by a live node raises
        NameTaken: the daemon exits), then keep at it in the background; an
        unreachable etcd is not fatal. The node starts fenced: what the
        previous run left is cleared at once if its proof is over."""
        self.check_fence()
        try:
            await asyncio.wait_for(self._connect_and_sync(), START_TIMEOUT)
        except NameTaken:
            await self.etcd.close()
            raise
        except (*ETCD_FAILURES, asyncio.TimeoutError) as e:
            self._disconnected(str(e) or "timed out")
            log.warning("etcd not reachable at start (%s); retrying, and fenced until this "
                        "node proves its lease: its pods and gateways stay down", self.error)
        self._task = asyncio.create_task(self._run())

    async def close(self):
        for task in [self._task, self._releasing, *self._background]:
            if task:
                task.cancel()
        await self.etcd.close()

    async def _run(self):
        """Keep the node registered and its view current: renew the lease and
        follow the watch; on any failure, reconnect with backoff."""
        backoff = BACKOFF_MIN
        while True:
            try:
                if not self.connected:
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
                if self.connected or self.error != str(e):
                    log.warning("cluster: %s; retrying", e)
                if not isinstance(e, (EtcdUnavailable, NameTaken)):
                    log.exception("cluster: unexpected failure")
                self._disconnected(e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _disconnected(self, error):
        if self.connected:
            self.since = time.time()
        self.connected = False
        self._up.clear()
        self.error = str(error)

    async def _connect_and_sync(self):
        await self.etcd.connect()
        await self._register()
        await self._sync()
        self.connected, self.error, self.since = True, None, time.time()
        self._up.set()
        self.counters["reconnects"] += 1
        log.info("cluster: registered as %s (vtep %s) through %s, revision %d", self.name,
                 self.vtep, self.etcd.endpoint, self.revision)
        await self._unfence()       # proven, and its blocks checked by the sync

    async def _follow(self):
        """Renew the lease every third of its TTL, and apply the watch's
        events, until one of them fails or a full re-list is due."""
        self._resync.clear()
        tasks = [asyncio.create_task(self._keep_alive()), asyncio.create_task(self._watch()),
                 asyncio.create_task(self._resync.wait())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()           # raises what ended it
            if self.name not in self.nodes:
                raise EtcdUnavailable("this node's record is gone (its lease expired)")
            if self.fenced:
                raise EtcdUnavailable("fenced while connected (renewals stalled): "
                                      "registering again")
            await self._sync()          # a re-list was asked for
        finally:
            for task in tasks:
                task.cancel()

    async def _keep_alive(self):
        while True:
            await asyncio.sleep(self.cfg.lease_ttl / 3)
            sent = time.monotonic()
            ttl = await self.etcd.keepalive(self.lease)
            if ttl <= 0:
                raise EtcdUnavailable("this node's lease expired; registering again")
            await self._proven(sent + ttl)

    async def _watch(self):
        async for batch in self.etcd.watch(self.prefix, self.revision + 1):
            for event in batch:
                self._apply(event.key, event.value)
                self.revision = event.revision
                self.events_applied += 1
                self.last_event = {"key": event.key, "deleted": event.value is None,
                                   "revision": event.revision, "time": time.time()}
            await self._after_events()

    # --------------------------------------------------------- registration

    async def _register(self):
        """Put this node's record on its lease (the previous one if it is
        still alive: a restart keeps it), unless a live node has the name."""
        db = self.switch.state
        sent = time.monotonic()
        ttl = await self.etcd.keepalive(self.lease) if self.lease else 0
        if ttl <= 0:
            sent = time.monotonic()
            self.lease, ttl = await self.etcd.grant(self.cfg.lease_ttl), self.cfg.lease_ttl
            await db.run(state.cache, db, "lease", self.lease)
        key = self.key("nodes", self.name)
        record = json.dumps({"vtep": self.vtep, "version": __version__, "started":
                             self.switch.started_at, "lease": self.lease}).encode()
        txn = Txn().absent(key)
        txn.success = [Txn.put(key, record, self.lease), Txn.delete(self.key("graves", self.name))]
        txn.failure = [Txn.get(key)]
        result = await self._commit(txn)
        if not result.succeeded:
            held = result.responses[0].response_range.kvs[0]
            if held.lease != self.lease:
                rec = _json(held.value) or {}
                raise NameTaken(f"node name {self.name!r} is registered by a live vswitchd "
                                f"(vtep {rec.get('vtep')}, started "
                                f"{time.ctime(rec.get('started', 0))}); give this node another "
                                "node.name, or stop that one")
            txn = Txn().leased(key, self.lease)
            txn.success = [Txn.put(key, record, self.lease)]
            await self._commit(txn)
        await self._proven(sent + ttl)

    async def _proven(self, until: float):
        """The lease is surely alive until then; kept in the state too, so
        that a restarted daemon knows until when what this run left
        configured may stay (check_fence)."""
        self.proven_until = until
        await self._save_proof()

    async def _save_proof(self):
        db = self.switch.state
        await db.run(state.cache, db, "proof", {"boot": boot_id(), "until": self.proven_until,
                                                "fenced": self._cleared})

    def can_allocate(self) -> bool:
        """Whether this node's lease is provably alive now (see the module's
        docstring), so that none of its blocks can have been taken."""
        return time.monotonic() < self.proven_until and not self.fenced

    async def _commit(self, txn: Txn):
        self.counters["etcd_writes"] += 1
        return await self.etcd.commit(txn)

    # ----------------------------------------------------------- full sync

    async def _sync(self):
        """List everything and make the local view and data plane agree with
        it; then check this node's blocks and endpoints against it."""
        kvs, revision = await self.etcd.get_prefix(self.prefix)
        self.counters["relists"] += 1
        listed = {kv.key: kv.value for kv in kvs}
        for key in [k for k in self._known_keys() if k not in listed]:
            self._apply(key, None)
        for key, value in listed.items():
            self._apply(key, value)
        self.revision = revision
        await self._after_events(force=True)
        await self._check_blocks()
        await self._publish_all()
        await self._bury_orphans()

    def _known_keys(self) -> list[str]:
        return [self.key("networks", n) for n in self.networks] + \
            [self.key("nodes", n) for n in self.nodes] + \
            [self.key("graves", n) for n in self.graves] + \
            [self.key("endpoints", net, ip) for net, ip in self.endpoints] + \
            [self.key("blocks", net, cidr) for net, cidr in self.holders] + \
            [self.key("policies", key) for key in self.switch.policy.policies] + \
            [self.key("namespaces", ns) for ns in self.switch.policy.namespaces]

    # -------------------------------------------------------------- events

    def _apply(self, key: str, value: bytes | None):
        """One key's new value (None: deleted), into the view and the data
        plane. Malformed records are logged and skipped, never fatal."""
        parts = key[len(self.prefix):].split("/")
        kind = parts[0]
        if kind not in RECORD_KINDS:
            return                      # not ours (another tool's keys under the prefix)
        rec = None if value is None else _json(value)
        if value is not None and not isinstance(rec, dict):
            # Every kind's record is an object; a malformed one leaves what
            # the node knew of the key as it was.
            self._ignored(key, "not JSON" if rec is None else "not a JSON object")
            return
        try:
            if kind == "networks" and len(parts) == 2:
                if rec is not None:
                    network_from_record(parts[1], rec)      # malformed: not taken up at all
                self._set(self.networks, parts[1], rec)
                self._networks_changed = True
            elif kind == "nodes" and len(parts) == 2:
                self._node(parts[1], rec)
            elif kind == "endpoints" and len(parts) == 3:
                self._endpoint((parts[1], parts[2]), rec)
            elif kind == "blocks" and len(parts) == 3:
                self._block(parts[1], parts[2], rec)
            elif kind == "graves" and len(parts) == 2:
                self._grave(parts[1], rec)
            elif kind == "policies" and len(parts) == 3:
                self.switch.policy.set_policy(f"{parts[1]}/{parts[2]}", rec)
            elif kind == "namespaces" and len(parts) == 2:
                self.switch.policy.set_namespace(parts[1], rec and rec.get("labels"))
        except Exception as e:      # whatever a record holds, the watch goes on
            self._ignored(key, str(e) if isinstance(e, (VswitchError, ValueError))
                          else f"{type(e).__name__}: {e}")

    def _ignored(self, key: str, why: str):
        """A record that cannot be applied: counted, logged while there are
        few (whoever can write etcd could otherwise flood the log)."""
        self.counters["records_ignored"] += 1
        if self.counters["records_ignored"] <= LOGGED_BAD_RECORDS:
            log.warning("cluster: %s ignored: %s%s", key, why,
                        " (further ones are only counted: records_ignored)"
                        if self.counters["records_ignored"] == LOGGED_BAD_RECORDS else "")

    @staticmethod
    def _set(table: dict, name, rec):
        if rec is None:
            table.pop(name, None)
        else:
            table[name] = rec

    def _node(self, name: str, rec: dict | None):
        if rec is not None and not _vtep(rec):
            raise ValueError(f"{rec.get('vtep') if isinstance(rec, dict) else rec!r} is not a "
                             "VTEP address a node can have")
        before = self.nodes.get(name)
        self._set(self.nodes, name, rec)
        if name == self.name:
            if rec is None and self.connected:
                self._resync.set()      # our record is gone: our lease expired
            return
        if before and (rec is None or before.get("vtep") != rec.get("vtep")):
            self._forget_peer(before.get("vtep"))
        if (before is None) != (rec is None):
            self.switch.policy.schedule()       # its pods come or go as policy peers
        if rec is not None:
            self._add_peer(rec["vtep"])
            self._program_each(self.by_node.get(name, ()))
        elif self.connected:
            self._spawn(self._bury(name))

    def _add_peer(self, vtep: str):
        """Flood every network to a node's VTEP (checked with its record)."""
        networks = [n for n in self.networks if self.switch.dataplane.has_network(n)]
        address = ipaddress.ip_address(vtep)
        if address.version != ipaddress.ip_address(self.vtep).version:
            log.error("cluster: a node's VTEP %s is not of this underlay's family (vtep %s): "
                      "not a peer", vtep, self.vtep)
        elif vtep != self.vtep and networks:
            self.switch.dataplane.add_peer(address, networks)

    def is_node_vtep(self, address) -> bool:
        """Whether a live node (not this one) has this VTEP address."""
        return any(n.get("vtep") == str(address) for name, n in self.nodes.items()
                   if name != self.name)

    def _forget_peer(self, vtep):
        """Stop flooding to a node's VTEP (unless another node or the static
        config has it too); its FDB entries go with it."""
        static = self.switch.config.overlay.peers if self.switch.config.overlay else ()
        if not isinstance(vtep, str) or vtep == self.vtep or self.is_node_vtep(vtep) or \
                ipaddress.ip_address(vtep) in static:
            return
        self.switch.dataplane.remove_peer(ipaddress.ip_address(vtep))

    def _endpoint(self, where: tuple[str, str], rec: dict | None):
        before = self.endpoints.get(where)
        if rec is not None:
            mac_key = (where[0], str(rec.get("mac")))
            holder = self.mac_of.get(mac_key)
            if holder not in (None, where) and \
                    self.endpoints[holder].get("node") != rec.get("node"):
                # A node cannot take another node's pod MAC: every node
                # would send that pod's frames to it.
                raise ValueError(f"MAC {mac_key[1]} is that of endpoint {holder[1]} "
                                 f"of node {self.endpoints[holder].get('node')}")
        if before:
            self._unprogram(*where, before)
            self.by_node.get(str(before.get("node")), set()).discard(where)
            if self.mac_of.get((where[0], str(before.get("mac")))) == where:
                del self.mac_of[(where[0], str(before.get("mac")))]
        self._set(self.endpoints, where, rec)
        if rec is not None:
            self.mac_of[mac_key] = where
        if before and before.get("node") == self.name and (rec or {}).get("node") != self.name \
                and self.connected and where[0] in self.networks:
            # Ours, overwritten or deleted by someone else while our pod has it: say it again.
            for port in self._ports_with(*where):
                self._spawn(self._publish(port))
        if rec is not None:
            self.by_node.setdefault(str(rec.get("node")), set()).add(where)
            self._program(*where, rec)
        self.switch.policy.schedule()           # who is where: policy peers

    def _program_each(self, wheres: Iterable[tuple[str, str]]):
        """Program these endpoints; one that cannot be is counted, not fatal."""
        for where in wheres:
            try:
                self._program(*where, self.endpoints[where])
            except (VswitchError, ValueError, KeyError, TypeError) as e:
                self._ignored(self.key("endpoints", *where), str(e))

    def _program(self, network: str, ip: str, ep: dict):
        """An endpoint into the data plane: its neighbour entry (ARP is
        answered here), and for another node's pod, its MAC behind that
        node's VTEP. Only while its node is alive."""
        dp = self.switch.dataplane
        node = self.nodes.get(str(ep.get("node")))
        net = self.switch.config.network(network)
        if node is None or net is None or not dp.has_network(network):
            return
        address = ipaddress.ip_address(ip)
        if not self._holds(net, address, ep["node"]):
            raise ValueError(f"{ip} is outside the blocks of node {ep['node']}")
        mac = ep["mac"]
        if ep["node"] != self.name:
            dp.fdb_add_remote(network, mac, node["vtep"])
        if self.cfg.arp_suppression:
            dp.neigh_set(network, address, mac)

    def _holds(self, net: NetworkConfig, address: ipaddress.IPv4Address | ipaddress.IPv6Address,
               node) -> bool:
        """Only the holder of an address's block may say whose it is: a node
        cannot divert another node's pod address to a MAC of its own (nor
        claim it for a pod that policies let in)."""
        size = _family(net, address.version)[1]
        if size is None:
            return False
        block = ipaddress.ip_network(f"{address}/{size}", strict=False)
        return self.holders.get((net.name, block_key_part(block))) == node

    def remote_pods(self) -> list[PolicyPod]:
        """Pods of other live nodes, from their endpoint records, for
        NetworkPolicy (a record with an unreadable identity, or for an
        address outside its node's blocks, is left out)."""
        pods: dict[tuple, tuple[PodIdentity, list[int]]] = {}
        for (network, ip), ep in self.endpoints.items():
            node = ep.get("node")
            net = self.switch.config.network(network)
            if node == self.name or node not in self.nodes or net is None:
                continue
            try:
                address = ipaddress.ip_address(ip)
                ident = PodIdentity.from_json(ep.get("pod"))
            except (VswitchError, ValueError):
                continue
            if self._holds(net, address, node):
                who = (node, network, ident.namespace, ident.name or ip)
                pods.setdefault(who, (ident, []))[1].append(address_key(address))
        return [PolicyPod(ns, name, ident.labels, ident.named_ports, tuple(addresses), network,
                          None, node)
                for (node, network, ns, name), (ident, addresses) in pods.items()]

    async def put_policies(self, manifests: dict[str, dict | None]):
        """Policies (None: deleted) into etcd, in one transaction per TXN_OPS."""
        await self._need_connection()
        ops = [Txn.put(self.key("policies", key), json.dumps(m).encode()) if m is not None
               else Txn.delete(self.key("policies", key)) for key, m in manifests.items()]
        for i in range(0, len(ops), TXN_OPS):
            txn = Txn()
            txn.success = ops[i:i + TXN_OPS]
            await self._commit(txn)

    async def put_namespace(self, name: str, labels: dict[str, str]):
        await self._need_connection()
        txn = Txn()
        key = self.key("namespaces", name)
        txn.success = [Txn.put(key, json.dumps({"labels": labels}).encode()) if labels
                       else Txn.delete(key)]
        await self._commit(txn)

    def _unprogram(self, network: str, ip: str, ep: dict):
        dp = self.switch.dataplane
        if not dp.has_network(network):
            return
        dp.neigh_delete(network, ipaddress.ip_address(ip))
        if ep.get("node") != self.name and isinstance(ep.get("mac"), str):
            dp.fdb_delete(network, ep["mac"])

    def _block(self, network: str, cidr: str, rec: dict | None):
        holder = rec.get("node") if rec else None
        self._set(self.holders, (network, cidr), holder)
        block = block_of_key_part(cidr)
        if block in self.mine.get(network, []) and holder not in (None, self.name):
            self._spawn(self._lose_block(network, block, f"now held by node {holder}"))

    def _grave(self, name: str, rec: dict | None):
        self._set(self.graves, name, rec)
        if rec is None and name not in self.nodes and self.connected:
            self._spawn(self._reclaim(name))      # its grace period is over

    async def _after_events(self, force: bool = False):
        """Work an event batch leaves: the networks, all at once."""
        if self._networks_changed or force:
            self._networks_changed = False
            await self.sync_networks()

    async def sync_networks(self):
        """Make the switch's networks those of the cluster (a reload, as a
        changed config file would), with this node's gateways, and program
        peers and endpoints into networks that are new here."""
        async with self._syncing_networks:
            await self._sync_networks()
        self.gateways.keep_up()

    async def _sync_networks(self):
        ov = self.switch.config.overlay
        nets = []
        for name, rec in sorted(self.networks.items()):
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
        nets = [self.gateways.configure(n, self.networks[n.name]) for n in nets]
        old = self.switch.config
        # A network re-created under the same name with another VNI or subnet
        # goes first, then comes back.
        keep = [n for n in nets if _in_place(old.network(n.name), n)]
        if len(keep) != len(nets):
            await self.switch.reload(dataclasses.replace(old, networks=tuple(keep)))
        before = {n.name for n in self.switch.config.networks}
        await self.switch.reload(dataclasses.replace(self.switch.config, networks=tuple(nets)))
        current = {n.name: n for n in nets}
        for name in list(self.mine):        # blocks of networks gone, or re-made otherwise
            now = current.get(name)
            for block in list(self.mine[name]):
                if now is None or not _fits(block, now):
                    await self._drop_block(name, block)
        db = self.switch.state
        await db.run(state.cache, db, "networks", {n.name: self.networks[n.name] for n in nets})
        await db.run(state.cache, db, "nodes", self.nodes)
        for net in nets:
            if net.name in before:
                continue
            for name, node in self.nodes.items():
                if name != self.name:
                    self._add_peer(node["vtep"])
            self._program_each([where for where in self.endpoints if where[0] == net.name])

    # --------------------------------------------------------------- blocks

    async def blocks(self, net: NetworkConfig) -> list[Block]:
        """The blocks to allocate from (or bring an address of up) now: only
        while the lease is provably alive (else a retryable error: CNI code
        11). A request meeting the pods coming back after fencing waits for
        them (its own among them)."""
        async with self._fencing:
            return self.proven_blocks(net)

    def proven_blocks(self, net: NetworkConfig) -> list[Block]:
        if not self.can_allocate():
            raise Busy("this node cannot prove its cluster lease is alive (etcd unreachable "
                       f"since {time.ctime(self.since)}): no new addresses until it can",
                       kind="busy")
        return self.held(net)

    async def ready(self, net: NetworkConfig) -> NetworkConfig:
        """The network, with this node's gateway made first if it wants one
        (before a pod's address: the pod's default route points to it)."""
        if self.gateways.missing(net.name):
            await self.gateways.ensure(net.name)
        return self.switch.network(net.name)

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
        subnet, size = _family(net, version)
        if subnet is None or size is None:
            return False
        async with self._claiming:
            held = [b for b in self.mine.get(net.name, []) if b.version == version]
            if set(held) != {b for b in full if b.version == version}:
                return True
            if len(held) >= self.cfg.max_blocks:
                raise Exhausted(f"node {self.name} holds {len(held)} IPv{version} blocks of "
                                f"network {net.name!r}, its limit (cluster.max_blocks)",
                                kind="exhausted", version=version)
            await self._need_connection()
            kvs, _ = await self.etcd.get_prefix(self.key("blocks", net.name) + "/")
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
                            kind="exhausted", version=version)

    async def _claim(self, network: str, block: Block) -> bool:
        """Take a block if nobody holds it (one transaction); whether we did."""
        key = self.key("blocks", network, block_key_part(block))
        txn = Txn().absent(key)
        txn.success = [Txn.put(key, json.dumps({"node": self.name,
                                                "claimed": time.time()}).encode())]
        if not (await self._commit(txn)).succeeded:
            return False
        await self._hold(network, block)
        self.counters["blocks_claimed"] += 1
        return True

    async def _hold(self, network: str, block: Block):
        db = self.switch.state
        await db.run(state.hold_block, db, network, str(block), True)
        if block not in self.mine.setdefault(network, []):
            self.mine[network].append(block)

    async def _drop_block(self, network: str, block: Block):
        db = self.switch.state
        if block in self.mine.get(network, []):
            self.mine[network].remove(block)
        await db.run(state.hold_block, db, network, str(block), False)

    async def _check_blocks(self):
        """After (re)registering: blocks etcd gives this node that it does
        not know are adopted; blocks it holds that etcd lost are claimed
        again; blocks another node holds now are lost (see _lose_block)."""
        for (network, cidr), holder in list(self.holders.items()):
            block = block_of_key_part(cidr)
            if holder == self.name and block not in self.mine.get(network, []) \
                    and network in self.networks:
                await self._hold(network, block)
        for network, held in list(self.mine.items()):
            for block in list(held):
                holder = self.holders.get((network, block_key_part(block)), "")
                if holder == self.name:
                    continue
                if not holder and network in self.networks and await self._claim(network, block):
                    log.warning("cluster: block %s of %s was released while this node was "
                                "away; claimed again", block, network)
                    continue
                await self._lose_block(network, block, f"now held by {holder or 'nobody'}")

    async def _lose_block(self, network: str, block: Block, why: str):
        """A block of this node's was taken while it was away: its addresses
        may be another pod's now, so the pods addressed from it are
        detached and their allocations released (safe), with an error in
        the log, a counter and an incident in `cluster status` (visible)."""
        await self._drop_block(network, block)
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
        self._incident(f"block {block} of network {network} lost ({why}): "
                       f"{len(ports)} pods detached, {released} addresses released")
        if self.gateways.in_block(network, block):
            await self.sync_networks()      # its host port goes; another gateway comes

    def _incident(self, text: str):
        log.error("cluster: %s", text)
        self.incidents.append({"time": time.time(), "what": text})

    async def release_empty_blocks(self):
        """Give back blocks that stayed empty for block_release_after seconds,
        keeping at least one per network and family (housekeeping)."""
        if not self.connected:
            return
        now = time.monotonic()
        for network, held in list(self.mine.items()):
            spare = [b for version in (4, 6) for b in [b for b in held if b.version == version][1:]]
            for block in spare:
                # (count_in sees allocations and port records, which ports being
                # made already have; the gateway is neither)
                used = await self.switch.state.run(self.switch.ipam.count_in, network, block) \
                    or self.gateways.in_block(network, block)
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
                key = self.key("blocks", network, block_key_part(block))
                kv = await self.etcd.get(key)
                if kv and (_json(kv.value) or {}).get("node") == self.name:
                    txn = Txn().unchanged(key, kv.mod_revision)
                    txn.success = [Txn.delete(key)]
                    await self._commit(txn)
                await self._drop_block(network, block)
                self._empty_since.pop(spot, None)
                self.counters["blocks_released"] += 1
                log.info("cluster: released empty block %s of network %s", block, network)

    def housekeeping(self):
        """Every second: fencing, gateways, and giving back empty blocks."""
        self.check_fence()
        self.gateways.keep_up()
        if self._releasing is None or self._releasing.done():
            self._releasing = asyncio.ensure_future(self.release_empty_blocks())
            self._releasing.add_done_callback(_log_failure(logging.DEBUG, "releasing empty blocks"))

    def fence_deadline(self) -> float:
        """When this node's blocks may start going to others, less a margin
        (monotonic): grace_period after its last proof, or after the one the
        previous run left (none: now)."""
        proof = self.proven_until or self.proof_before
        return proof + self.cfg.grace_period - min(self.cfg.grace_period / 10, 60.0) if proof \
            else 0.0

    def check_fence(self):
        """Housekeeping: a node that could not prove its lease by its fence
        deadline may have lost its blocks to others: it takes down every
        address of theirs it has (pods' interfaces, gateways), rather than
        risk one live twice."""
        if self._cleared or time.monotonic() < self.fence_deadline():
            return
        self._cleared = self.fenced = True
        task = asyncio.ensure_future(self._fence())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure(logging.ERROR, "fencing"))

    async def _fence(self):
        async with self._fencing:
            if not self._cleared:
                return          # proven again meanwhile
            await self._save_proof()        # a restart starts fenced, and cleared at once
            ports = [p for p in list(self.switch.ports.values()) if not p.is_host and
                     p.state in ("up", "fenced") and p.network.name in self.networks]
            up = sum(p.state == "up" for p in ports)
            for port in ports:
                await self.switch.fence(port, "fenced: cluster lease unproven")
            await self.sync_networks()      # (fenced: no host ports)
            for network in self.gateways.addresses:     # one a previous run left
                await self.switch.loop.run_in_executor(None, remove_device, None,
                                                       host_port_name(network), None)
            left = len(ports) - up
            self._incident(f"fenced: this node's lease unproven past its grace period "
                           f"({self.cfg.grace_period:g} s): {up} pods and its gateways taken "
                           "down" + (f", {left} pod interfaces a previous run left cleared"
                                     if left else ""))
            if self.connected:
                self._resync.set()          # (registering again proves it anew)

    async def _unfence(self):
        """After a proof and the block check: gateways, then the pods held
        down come back, from their records (those of blocks lost were
        retired by the check)."""
        async with self._fencing:
            held = [p for p in self.switch.ports.values() if p.state == "fenced"
                    and not p.is_host]
            if not self.fenced and not held:
                return
            self.fenced = self._cleared = False
            await self._save_proof()
            await self.sync_networks()      # host ports first: pods' routes point to them
            for network in [n for n in self.networks if self.gateways.missing(n)]:
                try:                        # (its block was lost: another one)
                    await self.gateways.ensure(network)
                except VswitchError as e:
                    log.warning("cluster: no gateway in network %s yet: %s", network, e)
            for port in held:
                await self.switch.unfence(port)
        if held:
            log.warning("cluster: lease proven and blocks checked: the %d pods held down "
                        "come back", len(held))

    # ------------------------------------------------------------ endpoints

    def port_up(self, port: Port):
        if port.network.name not in self.networks or not port.addresses:
            return
        if not port.is_host:
            self._spawn(self._publish(port))
        elif self.cfg.arp_suppression:
            # Pods' ARP and ND for their gateway are answered here. (Gateways are
            # not published: another node's is found by ARP/ND, as on a LAN.)
            for a in port.addresses:
                self.switch.dataplane.neigh_set(port.network.name, a.ip, port.mac)

    def port_down(self, port: Port):
        if port.network.name not in self.networks or not port.addresses:
            return
        if not port.is_host:
            self._spawn(self._unpublish(port.network.name, [str(a.ip) for a in port.addresses]))
        elif self.switch.dataplane.has_network(port.network.name):
            for a in port.addresses:
                self.switch.dataplane.neigh_delete(port.network.name, a.ip)

    def _spawn(self, coro):
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure(logging.WARNING, "publishing"))

    def _ports_with(self, network: str, ip: str) -> list[Port]:
        return [p for p in self.switch.ports.values() if p.state == "up" and not p.is_host
                and p.network.name == network and any(str(a.ip) == ip for a in p.addresses)]

    def _endpoint_value(self, port: Port) -> bytes:
        pod = port.identity.to_json()
        pod["name"] = pod["name"] or port.name
        return json.dumps({"mac": port.mac, "node": self.name, "pod": pod}).encode()

    async def _publish(self, port: Port):
        """One write per pod: its endpoint record on this node's lease (if
        etcd is away, the next sync publishes it)."""
        if not self.connected or port.network.name not in self.networks:
            return
        for a in port.addresses:
            self.counters["etcd_writes"] += 1
            await self.etcd.put(self.key("endpoints", port.network.name, str(a.ip)),
                                self._endpoint_value(port), self.lease)

    async def _unpublish(self, network: str, ips: list[str]):
        if not self.connected:
            return
        for ip in ips:
            key = self.key("endpoints", network, ip)
            txn = Txn().leased(key, self.lease)
            txn.success = [Txn.delete(key)]
            await self._commit(txn)

    async def _publish_all(self):
        """After a (re)connect: endpoints of this node's pods that etcd lacks
        (or has otherwise) are put, and those of pods gone are deleted."""
        want = {(p.network.name, str(a.ip)): self._endpoint_value(p)
                for p in self.switch.ports.values() if p.state == "up" and not p.is_host
                and p.network.name in self.networks for a in p.addresses}
        ops = []
        for where, value in want.items():
            if self.endpoints.get(where) != json.loads(value):
                ops.append(Txn.put(self.key("endpoints", *where), value, self.lease))
        for where, ep in self.endpoints.items():
            if ep.get("node") == self.name and where not in want:
                ops.append(Txn.delete(self.key("endpoints", *where)))
        for i in range(0, len(ops), TXN_OPS):
            txn = Txn()
            txn.success = ops[i:i + TXN_OPS]
            await self._commit(txn)

    # ------------------------------------------------------ dead nodes

    async def _bury(self, name: str):
        """A node's record is gone (its lease expired): its blocks stay
        reserved for grace_period, counted by a lease of that length on its
        grave (so that etcd's clock, not ours, decides when it is over)."""
        if name in self.graves or not any(h == name for h in self.holders.values()):
            return
        lease = await self.etcd.grant(max(int(self.cfg.grace_period), 1))
        key = self.key("graves", name)
        txn = Txn().absent(key).absent(self.key("nodes", name))
        txn.success = [Txn.put(key, json.dumps({"since": time.time()}).encode(), lease)]
        if not (await self._commit(txn)).succeeded:
            await self.etcd.revoke(lease)
        else:
            log.info("cluster: node %s is gone; its blocks stay reserved for %g s", name,
                     self.cfg.grace_period)

    async def _reclaim(self, name: str):
        """Free a dead node's blocks (its grace is over, or an operator said
        it is gone), in one transaction that holds only if it is still gone."""
        kvs, _ = await self.etcd.get_prefix(self.key("blocks") + "/")
        theirs = [kv for kv in kvs if (_json(kv.value) or {}).get("node") == name]
        txn = Txn().absent(self.key("nodes", name))
        for kv in theirs:
            txn.unchanged(kv.key, kv.mod_revision)
        txn.success = [Txn.delete(kv.key) for kv in theirs] + \
            [Txn.delete(self.key("graves", name))]
        result = await self._commit(txn)
        if result.succeeded and theirs:
            log.info("cluster: reclaimed %d blocks of node %s", len(theirs), name)
        return result.succeeded, len(theirs)

    async def _bury_orphans(self):
        """Blocks whose holder has neither a record nor a grave (every node
        was down when its grace ran out): a grave again, to be safe."""
        for holder in {h for h in self.holders.values()}:
            if holder not in self.nodes and holder not in self.graves and holder != self.name:
                await self._bury(holder)

    # ------------------------------------------------------------ requests

    async def _need_connection(self):
        """Wait a little for a reconnection (another etcd member may be
        taking over), then give up with a retryable error."""
        try:
            await asyncio.wait_for(self._up.wait(), REQUEST_WAIT)
        except asyncio.TimeoutError:
            raise Busy(f"etcd is unreachable ({self.error}); try again", kind="busy") from None

    async def create_network(self, name, vni, subnet=None, block_size=26, mtu=None, gateway=True,
                             masquerade=True, subnet6=None,
                             block_size6=DEFAULT_BLOCK_SIZE6) -> dict:
        from .config import NAME_RE
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise InvalidRequest(f"bad network name {name!r}: 1-32 lowercase letters, digits "
                                 "or '-'")
        ov = self.switch.config.overlay
        mtu = mtu if mtu is not None else (ov.underlay_mtu - ov.overhead if ov else 1450)
        try:
            families = {**({"subnet": subnet, "block_size": block_size} if subnet else {}),
                        **({"subnet6": subnet6, "block_size6": block_size6} if subnet6 else {})}
            net = network_from_record(name, {"vni": vni, "mtu": mtu, "gateway": gateway,
                                             "masquerade": masquerade, **families})
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidRequest(f"bad network: {e} (vni 1..16777215, subnet an IPv4 CIDR, "
                                 f"block size between the subnet's prefix and 30, subnet6 an "
                                 f"IPv6 CIDR, mtu {MIN_MTU}..{MAX_NETWORK_MTU})") from None
        if masquerade and not gateway:
            raise InvalidRequest("masquerade needs a gateway: pods leave through their node")
        if ov and mtu + ov.overhead > ov.underlay_mtu:
            raise InvalidRequest(f"mtu {mtu} + {ov.overhead} bytes of VXLAN overhead exceeds "
                                 f"this node's underlay MTU {ov.underlay_mtu}")
        await self._need_connection()
        for other, rec in self.networks.items():
            for mine, key in ((net.subnet, "subnet"), (net.subnet6, "subnet6")):
                try:
                    theirs = ipaddress.ip_network(rec[key])
                except (ValueError, KeyError, TypeError):
                    continue
                if other != name and mine and theirs.version == mine.version and \
                        theirs.overlaps(mine):
                    raise Conflict(f"{key} {mine} overlaps network {other!r} ({theirs})")
        record = {"vni": net.vni, "mtu": mtu, "gateway": gateway, "masquerade": masquerade,
                  **({"subnet": str(net.subnet), "block_size": net.block_size}
                     if net.subnet else {}),
                  **({"subnet6": str(net.subnet6), "block_size6": net.block_size6}
                     if net.subnet6 else {}), "created": time.time()}
        key, vni_key = self.key("networks", name), self.key("vnis", str(net.vni))
        txn = Txn().absent(key).absent(vni_key)
        txn.success = [Txn.put(key, json.dumps(record).encode()),
                       Txn.put(vni_key, json.dumps(name).encode())]
        if not (await self._commit(txn)).succeeded:
            raise Conflict(f"network {name!r} or VNI {net.vni} exists already")
        log.info("cluster: network %s created (vni %d, %s)", name, net.vni, ", ".join(
            f"{subnet} in /{size} blocks" for subnet, size in (_family(net, 4), _family(net, 6))
            if subnet))
        return {"name": name, **record}

    async def delete_network(self, name: str) -> dict:
        await self._need_connection()
        kv = await self.etcd.get(self.key("networks", name))
        if kv is None:
            raise NotFound(f"no network {name!r}")
        rec = _json(kv.value) or {}
        txn = Txn().unchanged(kv.key, kv.mod_revision)
        txn.success = [Txn.delete(kv.key), Txn.delete(self.key("vnis", str(rec.get("vni")))),
                       Txn.delete(self.key("blocks", name) + "/", prefix=True),
                       Txn.delete(self.key("endpoints", name) + "/", prefix=True)]
        if not (await self._commit(txn)).succeeded:
            raise Conflict(f"network {name!r} changed meanwhile; try again")
        log.info("cluster: network %s deleted", name)
        return {"deleted": name}

    def list_networks(self) -> list[dict]:
        out = []
        for name, rec in sorted(self.networks.items()):
            gw, gw6 = self.gateways.of(name), self.gateways.of(name, 6)
            out.append({"name": name, **{k: rec.get(k) for k in ("vni", "subnet", "block_size",
                                                                  "mtu")},
                        "gateway": bool(rec.get("gateway")),
                        "masquerade": bool(rec.get("masquerade")),
                        "gateway_here": str(gw) if gw else None,
                        "gateway6_here": str(gw6) if gw6 else None,
                        "subnet6": rec.get("subnet6"), "block_size6": rec.get("block_size6"),
                        "blocks": sum(1 for (n, _) in self.holders if n == name),
                        "endpoints": sum(1 for (n, _) in self.endpoints if n == name),
                        "joined": self.switch.dataplane.has_network(name)})
        return out

    async def remove_node(self, name: str) -> dict:
        """The operator says node `name` is gone: free its blocks now.
        Refused while its record lives (stop it first)."""
        await self._need_connection()
        if name == self.name:
            raise Conflict("a node cannot remove itself")
        if await self.etcd.get(self.key("nodes", name)):
            raise Conflict(f"node {name!r} is alive (its lease is being renewed): stop its "
                           "vswitchd first, or wait for its lease to expire")
        done, count = await self._reclaim(name)
        if not done:
            raise Conflict(f"node {name!r} came back meanwhile; not removed")
        return {"removed": name, "blocks_released": count}

    def node_list(self) -> list[dict]:
        names = set(self.nodes) | set(self.holders.values()) | set(self.graves)
        out = []
        for name in sorted(n for n in names if n):
            rec = self.nodes.get(name)
            grave = self.graves.get(name)
            out.append({
                "name": name, "state": "alive" if rec else "gone",
                "vtep": rec.get("vtep") if rec else None,
                "version": rec.get("version") if rec else None,
                "started": rec.get("started") if rec else None,
                "blocks": sorted(f"{n}:{c.replace('-', '/')}" for (n, c), h in self.holders.items()
                                 if h == name),
                "pods": len({(w[0], self.endpoints[w].get("mac"))      # (dual-stack: one
                             for w in self.by_node.get(name, ())}),     # pod, two records)
                "gone_since": (grave or {}).get("since"),
                "self": name == self.name})
        return out

    def block_list(self) -> list[dict]:
        out = []
        for (network, cidr), holder in sorted(self.holders.items()):
            block = block_of_key_part(cidr)
            used = sum(1 for (n, ip) in self.endpoints
                       if n == network and ipaddress.ip_address(ip) in block)
            out.append({"network": network, "block": str(block), "node": holder,
                        "endpoints": used, "alive": holder in self.nodes})
        return out

    def metrics(self) -> dict:
        """The figures `status`, `stats` and Prometheus show."""
        return {"connected": self.connected, "nodes": len(self.nodes),
                "endpoints": len(self.endpoints), "events_applied": self.events_applied,
                "revision": self.revision, "can_allocate": self.can_allocate(),
                "fenced": self.fenced,
                "blocks_held": sum(len(b) for b in self.mine.values()), **self.counters}

    def status(self) -> dict:
        return {"node": self.name, "vtep": self.vtep, "etcd": list(self.cfg.etcd),
                "endpoint": self.etcd.endpoint if self.connected else None,
                "connected": self.connected,
                "since": self.since, "error": self.error, "lease": f"{self.lease:x}",
                "lease_proven_for": max(0.0, round(self.proven_until - time.monotonic(), 3)),
                "can_allocate": self.can_allocate(), "fenced": self.fenced,
                "revision": self.revision, "last_event": self.last_event,
                "events_applied": self.events_applied, "nodes": len(self.nodes),
                "networks": len(self.networks), "endpoints": len(self.endpoints),
                "blocks_held": {n: [str(b) for b in bs] for n, bs in self.mine.items()},
                "counters": dict(self.counters), "incidents": list(self.incidents)}
