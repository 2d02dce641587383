"""The node's NetworkPolicy engine: who each pod is (namespace, labels,
named ports), the policies and namespace labels in force (in the state
database; in cluster mode from etcd, mirrored there), and their
compilation into the data plane's per-port tables (_policy.pxd).

Compiling is whole-node and cheap: any change (a policy, a label, a pod
coming or going here or on another node) schedules one recompilation of
every local pod's tables; the data plane swaps each port's tables in
between two frames and then checks every tracked connection again on its
next packet (so a policy change cuts connections it no longer allows, and
keeps the others)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from . import netpol
from .errors import InvalidRequest, NotFound
from .netpol import NAMESPACE_NAME_LABEL, PROTOCOLS, NetworkPolicy, Rule
from .protocol import ALL_ADDRESSES, IPV4_MAPPED, address_key, address_str

if TYPE_CHECKING:
    from .datapath import DataPlane
    from .port import Port
    from .state import State

log = logging.getLogger("vswitch.policy")

ALL_PORTS = 65535


@dataclass(frozen=True)
class PolicyPod:
    """A pod of the cluster, local (port_id) or on another node. Selectors
    pick peers in the pod's own network only: another network's addresses
    never reach its port (and may overlap with its own)."""
    namespace: str
    name: str
    labels: dict
    named_ports: dict
    addresses: tuple[int, ...]         # of both families, as the data plane keys them
    network: str = ""
    port_id: int | None = None
    node: str | None = None

    @classmethod
    def of_port(cls, port: Port) -> PolicyPod:
        ident = port.identity
        return cls(ident.namespace, ident.name or port.name, dict(ident.labels),
                   dict(ident.named_ports),
                   tuple(address_key(a.ip) for a in port.addresses), port.network.name,
                   port.port_id)


# ------------------------------------------------------------ compilation

def cidr_ranges(block: netpol.IpBlock) -> list[tuple[int, int]]:
    """An ipBlock as disjoint ranges of data-plane keys. An IPv6 block
    leaves out IPv4's mapped part (::/0 means every IPv6 address, not
    every address)."""
    def span(net) -> tuple[int, int]:
        return address_key(net.network_address), address_key(net.broadcast_address)

    ranges = [span(block.cidr)]
    cuts = [span(ex) for ex in block.excepts]
    if block.cidr.version == 6:
        cuts.append(IPV4_MAPPED)
    for lo, hi in cuts:
        ranges = [piece for a, b in ranges
                  for piece in ((a, min(b, lo - 1)), (max(a, hi + 1), b)) if piece[0] <= piece[1]]
    return ranges


def disjoint(ranges: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Sorted, merged ranges; where they overlap, the first policy is named."""
    out: list[list[int]] = []
    for lo, hi, pid in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi, pid])
    return [(lo, hi, pid) for lo, hi, pid in out]


class Compiler:
    """The tables of local pods under a set of policies, over the pods and
    namespaces known at one moment."""

    def __init__(self, policies: Iterable[NetworkPolicy], ids: dict[str, int],
                 pods: list[PolicyPod], namespace_labels):
        self.policies = list(policies)
        self.ids = ids
        self.pods = pods
        self.namespace_labels = namespace_labels
        # A rule's peers depend on the pod's network only: found once per
        # pass, not once per local pod (each search goes over every pod).
        self._peers: dict[tuple[int, str], list[tuple[int, int]]] = {}

    def selecting(self, pod: PolicyPod, direction: str) -> list[NetworkPolicy]:
        return [p for p in self.policies if p.namespace == pod.namespace
                and getattr(p, direction) is not None and p.pods.matches(pod.labels)]

    def peers(self, pod: PolicyPod, policy: NetworkPolicy, rule: Rule) -> list[tuple[int, int]]:
        if not rule.peers:
            return [ALL_ADDRESSES]
        found = self._peers.get((id(rule), pod.network))
        if found is None:
            found = self._peers[(id(rule), pod.network)] = self._search(pod, policy, rule)
        return found

    def _search(self, pod: PolicyPod, policy: NetworkPolicy, rule: Rule) -> list[tuple[int, int]]:
        out = []
        for peer in rule.peers:
            if peer.ip_block:
                out += cidr_ranges(peer.ip_block)
                continue
            for q in self.pods:
                if q.network != pod.network:
                    continue
                in_namespace = q.namespace == policy.namespace if peer.namespaces is None else \
                    peer.namespaces.matches(self.namespace_labels(q.namespace))
                if in_namespace and (peer.pods is None or peer.pods.matches(q.labels)):
                    out += [(a, a) for a in q.addresses]
        return out

    def direction(self, pod: PolicyPod, direction: str):
        """(isolating policy id, [(ranges, l4)]) or None: not isolated."""
        policies = self.selecting(pod, direction)
        if not policies:
            return None
        groups: dict[tuple, list[tuple[int, int, int]]] = {}

        def allow(l4: tuple, ranges: Iterable[tuple[int, int]], pid: int):
            groups.setdefault(l4, []).extend((lo, hi, pid) for lo, hi in ranges)

        for policy in policies:
            pid = self.ids[policy.key]
            for rule in getattr(policy, direction):
                ranges = self.peers(pod, policy, rule)
                if not rule.ports:
                    allow((), ranges, pid)
                numbered = tuple(sorted(
                    (PROTOCOLS[p.protocol], p.port or 0, p.end_port or p.port or ALL_PORTS)
                    for p in rule.ports if not isinstance(p.port, str)))
                if numbered:
                    allow(numbered, ranges, pid)
                for p in rule.ports:
                    if isinstance(p.port, str):
                        self.named(pod, direction, p, ranges, pid, allow)
        isolating = self.ids[policies[0].key]
        return isolating, [(disjoint(ranges), list(l4)) for l4, ranges in groups.items()]

    def named(self, pod: PolicyPod, direction: str, port: netpol.Port, ranges, pid, allow):
        """A named port is the destination pod's: for ingress, this pod's;
        for egress, each peer pod's that has it (addresses no pod has, in
        an ipBlock, have no named ports)."""
        proto = PROTOCOLS[port.protocol]
        if direction == "ingress":
            if pod.named_ports.get(port.port) is not None and \
                    pod.named_ports[port.port][0] == port.protocol:
                number = pod.named_ports[port.port][1]
                allow(((proto, number, number),), ranges, pid)
            return
        for q in self.pods:
            found = q.named_ports.get(port.port)
            if found is None or found[0] != port.protocol or q.network != pod.network:
                continue
            mine = [(a, a) for a in q.addresses if any(lo <= a <= hi for lo, hi in ranges)]
            if mine:
                allow(((proto, found[1], found[1]),), mine, pid)


def _compile(compiler: Compiler, ports: list[tuple[Port, PolicyPod]]) -> list[tuple]:
    """(port, its id, ingress, egress tables) of each local pod (in a thread)."""
    return [(port, pod.port_id, compiler.direction(pod, "ingress"),
             compiler.direction(pod, "egress")) for port, pod in ports]


# ----------------------------------------------------------------- engine

class PolicyWriter(Protocol):
    """Where policy changes are written before they are in force (cluster
    mode: etcd, which every node follows)."""

    async def put_policies(self, manifests: dict[str, dict | None]) -> None: ...
    async def put_namespace(self, name: str, labels: dict[str, str]) -> None: ...


class Policies:
    """The policies and namespace labels in force on this node, and their
    enforcement on its pods. In cluster mode the Cluster writes changes to
    etcd and tells this engine what etcd holds (set_policy, set_namespace)."""

    def __init__(self, dataplane: DataPlane, state: State, loop: asyncio.AbstractEventLoop,
                 ports: dict[str, Port]):
        self.dataplane, self.state, self.loop, self.ports = dataplane, state, loop, ports
        self.policies: dict[str, NetworkPolicy] = {}
        self.namespaces: dict[str, dict[str, str]] = {}     # labels given; the name label is added
        self.ids: dict[str, int] = {}                       # "ns/name" -> its data-plane id
        self.names: dict[int, str] = {}
        # Pods on other nodes (cluster mode sets it: from the endpoint records).
        self.remote_pods: Callable[[], Iterable[PolicyPod]] = lambda: ()
        # Where changes are written first in cluster mode (etcd; cluster sets it).
        self.writer: PolicyWriter | None = None
        self.compiled = 0
        self._scheduled = False
        self._compiling = self._again = False     # a pass in its thread; another due after it
        self._next_pass = 0.0           # (loop time) the next pass, at the soonest
        self._enforced = False          # some port may hold tables (with no policy, none does)
        self._writes: set[asyncio.Task] = set()

    # -------------------------------------------------------- state

    async def restore(self):
        """What the state database holds (cluster mode: etcd's last known)."""
        rows = await self.state.run(self.state.policy_rows)
        for kind, key, value in rows:
            try:
                if kind == "policy":
                    self._set_policy(netpol.parse(value))
                else:
                    self.namespaces[key] = netpol.check_labels(value, f"namespace {key}")
            except InvalidRequest as e:
                log.warning("stored %s %s ignored: %s", kind, key, e)
        self.schedule()

    def _set_policy(self, policy: NetworkPolicy):
        if policy.key not in self.ids:
            self.ids[policy.key] = len(self.names) + 1
            self.names[self.ids[policy.key]] = policy.key
        self.policies[policy.key] = policy

    def set_policy(self, key: str, manifest: dict | None) -> str:
        """A policy (None: deleted) as the store now has it; returns what
        changed (created, configured, unchanged, deleted)."""
        old = self.policies.get(key)
        if manifest is None:
            if old is None:
                return "unchanged"
            del self.policies[key]
            change = "deleted"
        else:
            policy = netpol.parse(manifest)
            if policy.key != key:
                raise InvalidRequest(f"record {key} holds policy {policy.key}")
            if old is not None and old.manifest == policy.manifest:
                return "unchanged"
            self._set_policy(policy)
            change = "configured" if old else "created"
        log.info("policy %s %s", key, change)
        self._store("policy", key, manifest)
        self.schedule()
        return change

    def set_namespace(self, name: str, labels: dict | None):
        labels = netpol.check_labels(labels or {}, f"namespace {name}")
        if self.namespaces.get(name, {}) == labels:
            return
        if labels:
            self.namespaces[name] = labels
        else:
            self.namespaces.pop(name, None)
        self._store("namespace", name, labels or None)
        self.schedule()

    def _store(self, kind: str, key: str, value):
        """Into the state database (in order, on its thread); requests wait
        for it (stored()), changes from etcd do not."""
        task = self.loop.create_task(self.state.run(self.state.save_policy_row, kind, key, value))
        self._writes.add(task)
        task.add_done_callback(self._written)

    def _written(self, task):
        self._writes.discard(task)
        if not task.cancelled() and task.exception():
            log.error("cannot store policy state: %s", task.exception())

    async def stored(self):
        """Wait until what was changed so far is in the state database."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    def namespace_labels(self, name: str) -> dict[str, str]:
        return {**self.namespaces.get(name, {}), NAMESPACE_NAME_LABEL: name}

    # -------------------------------------------------------- requests

    async def apply(self, manifests) -> list[dict]:
        """Apply manifests (all valid, or none applied)."""
        docs = netpol.documents(manifests)
        if not docs:
            raise InvalidRequest("no NetworkPolicy in the input")
        policies = []
        for i, doc in enumerate(docs):
            try:
                policies.append(netpol.parse(doc))
            except InvalidRequest as e:
                raise InvalidRequest(f"document {i + 1}: {e}") from None
        if self.writer:
            await self.writer.put_policies({p.key: p.manifest for p in policies})
        results = [{"policy": p.key, "result": self.set_policy(p.key, p.manifest)}
                   for p in policies]
        await self.stored()
        return results

    async def delete(self, key: str) -> dict:
        if key not in self.policies:
            raise NotFound(f"no policy {key!r} (policy list)")
        if self.writer:
            await self.writer.put_policies({key: None})
        self.set_policy(key, None)
        await self.stored()
        return {"deleted": key}

    async def label_namespace(self, name: str, changes: list[str]) -> dict:
        netpol.check_namespace(name)
        sets, removes = netpol.parse_label_changes(changes)
        if NAMESPACE_NAME_LABEL in sets or NAMESPACE_NAME_LABEL in removes:
            raise InvalidRequest(f"{NAMESPACE_NAME_LABEL} is the namespace's name; it is set "
                                 "for you")
        labels = {k: v for k, v in {**self.namespaces.get(name, {}), **sets}.items()
                  if k not in removes}
        if self.writer:
            await self.writer.put_namespace(name, labels)
        self.set_namespace(name, labels)
        await self.stored()
        return {"namespace": name, "labels": self.namespace_labels(name)}

    def find(self, key: str) -> NetworkPolicy:
        if key not in self.policies:
            raise NotFound(f"no policy {key!r} (policy list)")
        return self.policies[key]

    def summaries(self) -> list[dict]:
        pods = self.pods()
        return [self._summary(p, pods) for _, p in sorted(self.policies.items())]

    def show(self, key: str) -> dict:
        policy = self.find(key)
        return {**self._summary(policy, self.pods()), "manifest": policy.manifest}

    def _summary(self, p: NetworkPolicy, pods: list[PolicyPod]) -> dict:
        selected = [q for q in pods if q.namespace == p.namespace and p.pods.matches(q.labels)]
        return {"namespace": p.namespace, "name": p.name, "id": self.ids[p.key],
                "types": p.types, "ingress_rules": len(p.ingress or ()),
                "egress_rules": len(p.egress or ()),
                "pods": [{"pod": f"{q.namespace}/{q.name}", "node": q.node or "(this node)",
                          "addresses": [address_str(a) for a in q.addresses]}
                         for q in selected]}

    # -------------------------------------------------------- enforcement

    def local_ports(self) -> list[Port]:
        return [p for p in self.ports.values() if not p.is_host and p.state == "up"]

    def pods(self) -> list[PolicyPod]:
        return [PolicyPod.of_port(p) for p in self.local_ports()] + list(self.remote_pods())

    def schedule(self):
        """Recompile once, soon: changes that come together cost one pass,
        and a stream of them (a cluster's records coming in) at most a third
        of the event loop's time: the next pass waits twice as long as the
        last one took."""
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_at(max(self.loop.time(), self._next_pass), self.enforce)

    def enforce(self):
        """Every local pod's tables, from the policies as they are now. With
        no policy at all nobody is isolated: nothing to compile, whatever
        the number of pods (a node without policies adds a port in O(1)).
        The compiling (over every pod of the cluster) runs in a thread, on
        a snapshot, so that the event loop is never held by it; one pass at
        a time, and one more if something changed meanwhile."""
        self._scheduled = False
        if not self.policies and not self._enforced:
            return
        if self._compiling:
            self._again = True
            return
        self._enforced = bool(self.policies)
        self._compiling, self._again = True, False
        namespaces = dict(self.namespaces)
        compiler = Compiler(list(self.policies.values()), dict(self.ids), self.pods(),
                            lambda name: {**namespaces.get(name, {}), NAMESPACE_NAME_LABEL: name})
        ports = [(port, PolicyPod.of_port(port)) for port in self.local_ports()]
        names = dict(self.names)
        started = self.loop.time()
        done = self.loop.run_in_executor(None, _compile, compiler, ports)
        done.add_done_callback(lambda f: self._compiled(f, names, started))

    def _compiled(self, done: asyncio.Future, names: dict[int, str], started: float):
        self._compiling = False
        tables: list[tuple[Port, int, object, object]] = []
        try:
            tables = done.result()
        except Exception:           # a bug: logged, and the next change tries again
            log.exception("compiling policy tables")
        for port, port_id, ingress, egress in tables:
            # A port gone meanwhile, or its id now another's (it has its own tables).
            if self.ports.get(port.name) is not port or port.port_id != port_id:
                continue
            try:
                self.dataplane.set_port_policy(port_id, ingress, egress)
            except (KeyError, ValueError) as e:
                log.warning("policy tables for port %s: %s", port.name, e)
        self.dataplane.policy_names = names
        self.dataplane.policy_changed()
        self.compiled += 1
        ended = self.loop.time()
        self._next_pass = ended + 2 * (ended - started)
        if self._again:
            self.schedule()

    def enforce_port(self, port: Port):
        """One new port's tables, before it forwards its first frame (a new
        port has none: with no policy, nothing to do)."""
        if not self.policies:
            return
        compiler = Compiler(self.policies.values(), self.ids, self.pods(), self.namespace_labels)
        pod = PolicyPod.of_port(port)
        self.dataplane.set_port_policy(port.port_id, compiler.direction(pod, "ingress"),
                                              compiler.direction(pod, "egress"))

    def enforced(self, port: Port) -> dict:
        """Which policies isolate a port, per direction (port show)."""
        pod = PolicyPod.of_port(port)
        compiler = Compiler(self.policies.values(), self.ids, [], self.namespace_labels)
        return {d: [p.key for p in compiler.selecting(pod, d)] for d in ("ingress", "egress")}
