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
from .protocol import ErrorKind
from .state import State


@dataclass(frozen=True)
class Allocation:
    container_id: str
    ifname: str
    network: str
    ip: ipaddress.IPv4Address | None               # None: an IPv6-only network
    mac: str
    netns: str
    cni_network: str
    created: float
    ip6: ipaddress.IPv6Address | None = None      # a dual-stack network's pods have one

    @classmethod
    def from_row(cls, row) -> "Allocation":
        return cls(row[0], row[1], row[2], ipaddress.IPv4Address(row[3]) if row[3] else None,
                   row[4], row[5], row[6], row[7],
                   ipaddress.IPv6Address(row[8]) if row[8] else None)

    @property
    def ips(self) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
        return tuple(ip for ip in (self.ip, self.ip6) if ip is not None)

    def as_dict(self) -> dict:
        return {"container_id": self.container_id, "ifname": self.ifname,
                "network": self.network, "ip": str(self.ip) if self.ip else None,
                "ip6": str(self.ip6) if self.ip6 else None, "mac": self.mac,
                "netns": self.netns, "cni_network": self.cni_network,
                "created": self.created}


COLUMNS = "container_id, ifname, network, ip, mac, netns, cni_network, created, ip6"
Block = ipaddress.IPv4Network | ipaddress.IPv6Network     # an address block of either family


def gateway(net: NetworkConfig) -> ipaddress.IPv4Address | None:
    """The network's gateway on this node: configured, or the block's first
    address (None: IPv6 only)."""
    if net.block is None:
        return None
    return net.gateway or next(net.block.hosts())


def gateway6(net: NetworkConfig) -> ipaddress.IPv6Address | None:
    """Its IPv6 gateway (dual-stack networks): configured, or block6's first address."""
    if net.block6 is None:
        return None
    return net.gateway6 or next(net.block6.hosts())


def reserved(net: NetworkConfig) -> set[ipaddress.IPv4Address]:
    """Addresses of the block never handed out."""
    gw = gateway(net)
    if net.subnet is None or net.block is None or gw is None:
        return set()
    return {net.subnet.network_address, net.subnet.broadcast_address,
            net.block.network_address, net.block.broadcast_address, gw}


def reserved6(net: NetworkConfig) -> set[ipaddress.IPv6Address]:
    """Addresses of block6 never handed out: the subnet-router anycast
    addresses (RFC 4291) and the gateway."""
    gw6 = gateway6(net)
    assert net.subnet6 is not None and net.block6 is not None and gw6 is not None
    return {net.subnet6.network_address, net.block6.network_address, gw6}


class AddressBlocks(Protocol):
    """Where a node's addresses come from (StaticBlocks, cluster.Cluster).
    fenced: the node may not bring any address of its blocks up now (its
    ports are held down)."""

    @property
    def fenced(self) -> bool: ...

    async def ready(self, net: NetworkConfig) -> NetworkConfig: ...
    def held(self, net: NetworkConfig) -> list[Block]: ...
    async def blocks(self, net: NetworkConfig) -> list[Block]: ...
    async def more(self, net: NetworkConfig, full: list[Block], version: int = 4) -> bool: ...
    def holds(self, net: NetworkConfig, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool: ...


class StaticBlocks:
    """Where a network's addresses come from in static mode: its configured
    block, which never grows. (Cluster mode: cluster.Cluster, with the
    same methods.)"""

    fenced = False

    async def ready(self, net: NetworkConfig) -> NetworkConfig:
        """The network, ready for a pod (cluster mode: with this node's gateway)."""
        return net

    def held(self, net: NetworkConfig) -> list[Block]:
        """The blocks this node holds, of both families."""
        return [b for b in (net.block, net.block6) if b is not None]

    async def blocks(self, net: NetworkConfig) -> list[Block]:
        """The blocks to allocate from now."""
        return self.held(net)

    async def more(self, net: NetworkConfig, full: list[Block], version: int = 4) -> bool:
        """Get another block of a family when `full` (what blocks() gave)
        has no free address of it; False: there is none."""
        return False

    def holds(self, net: NetworkConfig, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
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

    def used(self, network: str, version: int = 4) -> set[ipaddress.IPv4Address |
                                                            ipaddress.IPv6Address]:
        """Addresses of a family allocated, or held by a recorded port
        (hand-made ones too)."""
        column = "ip" if version == 4 else "ip6"
        return {ipaddress.ip_address(r[0]) for r in self.db.execute(
                f"SELECT {column} FROM allocations WHERE network=? AND {column} IS NOT NULL",
                (network,))} \
            | {a for a in map(ipaddress.ip_address, self._state.port_addresses(network))
               if a.version == version}

    def mac_used(self, network: str, mac: str) -> bool:
        return any(self.db.execute(f"SELECT 1 FROM {table} WHERE network=? AND mac=?",
                                   (network, mac)).fetchone() for table in ("allocations", "ports"))

    def free_count(self, net: NetworkConfig, in_use: Iterable[ipaddress.IPv4Address] = (),
                   blocks: Sequence[Block] | None = None) -> int:
        """Addresses left in the held blocks of the network's first family
        (IPv4; IPv6 in an IPv6-only network): a pod takes one of each."""
        version = 4 if net.subnet is not None else 6
        taken: set = self.used(net.name, version) | set(in_use) | \
            (reserved(net) if version == 4 else reserved6(net))
        blocks = StaticBlocks().held(net) if blocks is None else blocks
        return sum(b.num_addresses - sum(ip in b for ip in taken) for b in blocks
                   if b.version == version)

    def count_in(self, network: str, block: Block) -> int:
        """Addresses of block allocated or held by a port record."""
        return sum(ip in block for ip in self.used(network, block.version))

    # ------------------------------------------------------------- changes

    def allocate(self, net: NetworkConfig, container_id: str, ifname: str, netns: str,
                 cni_network: str, mac: str, ip: ipaddress.IPv4Address | None = None,
                 in_use: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
                 blocks: Sequence[Block] | None = None,
                 ip6: ipaddress.IPv6Address | None = None) -> Allocation:
        """A new allocation, committed before it returns: an IPv4 address,
        and an IPv6 one in a dual-stack network (kept and released
        together). ip, ip6: requested static addresses; in_use: addresses
        held outside IPAM (ports added by hand), which are never handed out
        either; blocks: where addresses come from, of both families (None:
        the network's configured block and block6)."""
        blocks = StaticBlocks().held(net) if blocks is None else blocks
        blocks4 = sorted(b for b in blocks if b.version == 4)
        blocks6 = sorted(b for b in blocks if b.version == 6)
        in_use = set(in_use)
        with self._transaction():
            if self.get(container_id, ifname):
                raise InvalidRequest(f"{container_id}/{ifname} already has an address",
                                     kind=ErrorKind.INVALID)
            if self.mac_used(net.name, mac):
                raise Conflict(f"MAC {mac} is already used in network {net.name!r}",
                               kind=ErrorKind.UNAVAILABLE)
            if net.subnet is not None:
                ip = self._pick(net.name, ip, blocks4, reserved(net),
                                self.used(net.name) | {a for a in in_use if a.version == 4})
            elif ip is not None:
                raise Conflict(f"network {net.name!r} is IPv6 only: no IPv4 address for {ip}",
                               kind=ErrorKind.UNAVAILABLE)
            if net.block6 is not None:
                ip6 = self._pick(f"{net.name}/6", ip6, blocks6, reserved6(net),
                                 self.used(net.name, 6) | {a for a in in_use if a.version == 6})
            elif ip6 is not None:
                raise Conflict(f"network {net.name!r} has no IPv6 subnet (subnet6) for {ip6}",
                               kind=ErrorKind.UNAVAILABLE)
            alloc = Allocation(container_id, ifname, net.name, ip, mac, netns, cni_network,
                               time.time(), ip6)
            self.db.execute(f"INSERT INTO allocations ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                            (container_id, ifname, net.name, str(ip) if ip else None, mac, netns,
                             cni_network, alloc.created, str(ip6) if ip6 else None))
        return alloc

    def _pick(self, cursor: str, ip, blocks, reserved, used):
        """The requested address if it is free, else the next free one after
        the cursor (the network's name, plus /6 for IPv6), which moves to it."""
        if ip is not None:
            self._check_static(cursor.split("/")[0], ip, used, blocks, reserved)
        else:
            ip = self._next_free(cursor, used | reserved, blocks, 6 if "/" in cursor else 4)
        self.db.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?)", (cursor, str(ip)))
        return ip

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

    @staticmethod
    def _check_static(network: str, ip, used, blocks, reserved):
        if not any(ip.version == b.version and ip in b for b in blocks):
            raise Conflict(f"address {ip} is outside this node's blocks "
                           f"({', '.join(map(str, blocks)) or 'none'}) of network {network!r}",
                           kind=ErrorKind.UNAVAILABLE)
        if ip in reserved:
            raise Conflict(f"address {ip} is reserved (network, broadcast or gateway)",
                           kind=ErrorKind.UNAVAILABLE)
        if ip in used:
            raise Conflict(f"address {ip} is already in use in network {network!r}",
                           kind=ErrorKind.UNAVAILABLE)

    def _next_free(self, cursor_key: str, skip, blocks, version: int):
        """The first address not in skip after the cursor, going round the
        blocks (in address order) as if they were one range."""
        spans = [(int(b.network_address), b.num_addresses) for b in blocks]
        size = sum(n for _, n in spans)
        row = self.db.execute("SELECT last_ip FROM cursors WHERE network=?",
                              (cursor_key,)).fetchone()
        start, offset = 0, 0
        cursor = int(ipaddress.ip_address(row[0])) if row else None
        for base, n in spans:
            if cursor is not None and base <= cursor < base + n:
                start = offset + cursor - base + 1
            offset += n
        skip = {int(ip) for ip in skip}
        for k in range(min(size, len(skip) + 1)):      # one of the first len(skip)+1 is free
            ip = _nth(spans, (start + k) % size)
            if ip not in skip:
                return ipaddress.IPv4Address(ip) if version == 4 else ipaddress.IPv6Address(ip)
        network = cursor_key.split("/")[0]
        raise Exhausted(f"no free address left in block{'s' if len(blocks) > 1 else ''} "
                        f"{', '.join(map(str, blocks)) or '(none held)'} of network {network!r} "
                        f"(IPv{version})", kind=ErrorKind.EXHAUSTED, version=version)


def _nth(spans: list[tuple[int, int]], index: int) -> int:
    """The index-th address of the ranges (first address, count), in order."""
    for base, n in spans:
        if index < n:
            return base + index
        index -= n
    raise IndexError(index)
