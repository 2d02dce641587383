"""IP address management: each network hands out addresses from this node's
blocks (static mode: the configured block; cluster mode: the blocks the node
claimed in etcd), keyed by (container id, ifname), in the daemon's SQLite
state.

Durability: WAL with synchronous=FULL and one transaction per change, so
an allocation is on disk before its address is used; a crash at any point
leaves at worst an allocation without an interface (re-used by the repeated
ADD, released by DEL or GC), never one address given twice.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .config import NetworkConfig
from .errors import Conflict, Exhausted, InvalidRequest
from .state import State


@dataclass(frozen=True)
class Allocation:
    container_id: str
    ifname: str
    network: str
    ip: ipaddress.IPv4Address
    mac: str
    netns: str
    cni_network: str
    created: float

    @classmethod
    def from_row(cls, row) -> "Allocation":
        return cls(row[0], row[1], row[2], ipaddress.IPv4Address(row[3]), *row[4:])

    def as_dict(self) -> dict:
        return {"container_id": self.container_id, "ifname": self.ifname,
                "network": self.network, "ip": str(self.ip), "mac": self.mac,
                "netns": self.netns, "cni_network": self.cni_network,
                "created": self.created}


COLUMNS = "container_id, ifname, network, ip, mac, netns, cni_network, created"


def gateway(net: NetworkConfig) -> ipaddress.IPv4Address:
    """The network's gateway on this node: configured, or the block's first address."""
    return net.gateway or next(net.block.hosts())


def reserved(net: NetworkConfig) -> set[ipaddress.IPv4Address]:
    """Addresses of the block never handed out."""
    return {net.subnet.network_address, net.subnet.broadcast_address,
            net.block.network_address, net.block.broadcast_address, gateway(net)}


class AddressBlocks(Protocol):
    """Where a node's addresses come from (StaticBlocks, cluster.Cluster)."""

    async def ready(self, net: NetworkConfig) -> NetworkConfig: ...
    def held(self, net: NetworkConfig) -> list[ipaddress.IPv4Network]: ...
    async def blocks(self, net: NetworkConfig) -> list[ipaddress.IPv4Network]: ...
    async def more(self, net: NetworkConfig, full: list[ipaddress.IPv4Network]) -> bool: ...
    def holds(self, net: NetworkConfig, ip: ipaddress.IPv4Address) -> bool: ...


class StaticBlocks:
    """Where a network's addresses come from in static mode: its configured
    block, which never grows. (Cluster mode: cluster.Cluster, with the
    same methods.)"""

    async def ready(self, net: NetworkConfig) -> NetworkConfig:
        """The network, ready for a pod (cluster mode: with this node's gateway)."""
        return net

    def held(self, net: NetworkConfig) -> list[ipaddress.IPv4Network]:
        """The blocks this node holds."""
        return [net.block]

    async def blocks(self, net: NetworkConfig) -> list[ipaddress.IPv4Network]:
        """The blocks to allocate from now."""
        return self.held(net)

    async def more(self, net: NetworkConfig, full: list[ipaddress.IPv4Network]) -> bool:
        """Get another block when `full` (what blocks() gave) is full;
        False: there is none."""
        return False

    def holds(self, net: NetworkConfig, ip: ipaddress.IPv4Address) -> bool:
        """Whether this node may give ip to a port it makes by hand."""
        return True


class Ipam:
    """Allocations, kept in the daemon's State database."""

    def __init__(self, state: State):
        self.db = state.db
        self._state = state
        self._transaction = state.transaction

    # ------------------------------------------------------------- queries

    def get(self, container_id: str, ifname: str) -> Allocation | None:
        row = self.db.execute(f"SELECT {COLUMNS} FROM allocations WHERE container_id=? AND ifname=?",
                              (container_id, ifname)).fetchone()
        return Allocation.from_row(row) if row else None

    def list(self, network: str | None = None) -> list[Allocation]:
        sql = f"SELECT {COLUMNS} FROM allocations"
        rows = self.db.execute(sql + " WHERE network=? ORDER BY created", (network,)) if network \
            else self.db.execute(sql + " ORDER BY network, created")
        return [Allocation.from_row(r) for r in rows]

    def used(self, network: str) -> set[ipaddress.IPv4Address]:
        """Addresses allocated, or held by a recorded port (hand-made ones too)."""
        return {ipaddress.IPv4Address(r[0])
                for r in self.db.execute("SELECT ip FROM allocations WHERE network=?", (network,))} \
            | {ipaddress.IPv4Address(a) for a in self._state.port_addresses(network)}

    def mac_used(self, network: str, mac: str) -> bool:
        return any(self.db.execute(f"SELECT 1 FROM {table} WHERE network=? AND mac=?",
                                   (network, mac)).fetchone() for table in ("allocations", "ports"))

    def free_count(self, net: NetworkConfig, in_use: Iterable[ipaddress.IPv4Address] = (),
                   blocks: Sequence[ipaddress.IPv4Network] | None = None) -> int:
        taken = self.used(net.name) | reserved(net) | set(in_use)
        blocks = [net.block] if blocks is None else blocks
        return sum(b.num_addresses - sum(ip in b for ip in taken) for b in blocks)

    def count_in(self, network: str, block: ipaddress.IPv4Network) -> int:
        """Addresses of block allocated or held by a port record."""
        return sum(ip in block for ip in self.used(network))

    # ------------------------------------------------------------- changes

    def allocate(self, net: NetworkConfig, container_id: str, ifname: str, netns: str,
                 cni_network: str, mac: str, ip: ipaddress.IPv4Address | None = None,
                 in_use: Iterable[ipaddress.IPv4Address] = (),
                 blocks: Sequence[ipaddress.IPv4Network] | None = None) -> Allocation:
        """A new allocation, committed before it returns. ip: a requested
        static address; in_use: addresses held outside IPAM (ports added
        by hand), which are never handed out either; blocks: where
        addresses come from (None: the network's configured block)."""
        blocks = [net.block] if blocks is None else sorted(blocks)
        with self._transaction():
            if self.get(container_id, ifname):
                raise InvalidRequest(f"{container_id}/{ifname} already has an address", kind="invalid")
            used = self.used(net.name) | set(in_use)
            if self.mac_used(net.name, mac):
                raise Conflict(f"MAC {mac} is already used in network {net.name!r}", kind="unavailable")
            if ip is not None:
                self._check_static(net, ip, used, blocks)
            else:
                ip = self._next_free(net, used, blocks)
            alloc = Allocation(container_id, ifname, net.name, ip, mac, netns, cni_network,
                               time.time())
            self.db.execute(f"INSERT INTO allocations ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                            (container_id, ifname, net.name, str(ip), mac, netns, cni_network,
                             alloc.created))
            self.db.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?)", (net.name, str(ip)))
        return alloc

    def move(self, container_id: str, ifname: str, netns: str):
        """The pod's namespace changed (a new sandbox for the same container)."""
        with self._transaction():
            self.db.execute("UPDATE allocations SET netns=? WHERE container_id=? AND ifname=?",
                            (netns, container_id, ifname))

    def release(self, container_id: str, ifname: str) -> Allocation | None:
        with self._transaction():
            alloc = self.get(container_id, ifname)
            if alloc:
                self.db.execute("DELETE FROM allocations WHERE container_id=? AND ifname=?",
                                (container_id, ifname))
        return alloc

    def _check_static(self, net: NetworkConfig, ip: ipaddress.IPv4Address, used, blocks):
        if not any(ip in b for b in blocks):
            raise Conflict(f"address {ip} is outside this node's blocks "
                           f"({', '.join(map(str, blocks)) or 'none'}) of network {net.name!r}",
                           kind="unavailable")
        if ip in reserved(net):
            raise Conflict(f"address {ip} is reserved (network, broadcast or gateway)",
                           kind="unavailable")
        if ip in used:
            raise Conflict(f"address {ip} is already in use in network {net.name!r}",
                           kind="unavailable")

    def _next_free(self, net: NetworkConfig, used, blocks) -> ipaddress.IPv4Address:
        """The first free address after the network's cursor, going round
        the blocks (in address order) as if they were one range."""
        spans = [(int(b.network_address), b.num_addresses) for b in blocks]
        size = sum(n for _, n in spans)
        row = self.db.execute("SELECT last_ip FROM cursors WHERE network=?", (net.name,)).fetchone()
        start, offset = 0, 0
        cursor = int(ipaddress.IPv4Address(row[0])) if row else None
        for base, n in spans:
            if cursor is not None and base <= cursor < base + n:
                start = offset + cursor - base + 1
            offset += n
        skip = {int(ip) for ip in reserved(net) | used}
        for k in range(size):
            ip = _nth(spans, (start + k) % size)
            if ip not in skip:
                return ipaddress.IPv4Address(ip)
        raise Exhausted(f"no free address left in block{'s' if len(blocks) > 1 else ''} "
                        f"{', '.join(map(str, blocks)) or '(none held)'} of network {net.name!r}",
                        kind="exhausted")


def _nth(spans: list[tuple[int, int]], index: int) -> int:
    """The index-th address of the ranges (first address, count), in order."""
    for base, n in spans:
        if index < n:
            return base + index
        index -= n
    raise IndexError(index)
