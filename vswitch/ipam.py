"""IP address management: each network hands out addresses from this node's
block, keyed by (container id, ifname), in the daemon's SQLite state.

Durability: WAL with synchronous=FULL and one transaction per change, so
an allocation is on disk before its address is used; a crash at any point
leaves at worst an allocation without an interface (re-used by the repeated
ADD, released by DEL or GC), never one address given twice.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass

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

    def free_count(self, net: NetworkConfig, in_use: Iterable[ipaddress.IPv4Address] = ()) -> int:
        taken = self.used(net.name) | reserved(net) | set(in_use)
        return net.block.num_addresses - sum(ip in net.block for ip in taken)

    # ------------------------------------------------------------- changes

    def allocate(self, net: NetworkConfig, container_id: str, ifname: str, netns: str,
                 cni_network: str, mac: str, ip: ipaddress.IPv4Address | None = None,
                 in_use: Iterable[ipaddress.IPv4Address] = ()) -> Allocation:
        """A new allocation, committed before it returns. ip: a requested
        static address; in_use: addresses held outside IPAM (ports added
        by hand), which are never handed out either."""
        with self._transaction():
            if self.get(container_id, ifname):
                raise InvalidRequest(f"{container_id}/{ifname} already has an address", kind="invalid")
            used = self.used(net.name) | set(in_use)
            if self.mac_used(net.name, mac):
                raise Conflict(f"MAC {mac} is already used in network {net.name!r}", kind="unavailable")
            if ip is not None:
                self._check_static(net, ip, used)
            else:
                ip = self._next_free(net, used)
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

    def _check_static(self, net: NetworkConfig, ip: ipaddress.IPv4Address, used):
        if ip not in net.block:
            raise Conflict(f"address {ip} is outside this node's block {net.block} "
                           f"of network {net.name!r}", kind="unavailable")
        if ip in reserved(net):
            raise Conflict(f"address {ip} is reserved (network, broadcast or gateway)",
                           kind="unavailable")
        if ip in used:
            raise Conflict(f"address {ip} is already in use in network {net.name!r}",
                           kind="unavailable")

    def _next_free(self, net: NetworkConfig, used) -> ipaddress.IPv4Address:
        base, size = int(net.block.network_address), net.block.num_addresses
        row = self.db.execute("SELECT last_ip FROM cursors WHERE network=?", (net.name,)).fetchone()
        start = int(ipaddress.IPv4Address(row[0])) - base + 1 if row else 0
        skip = {int(ip) for ip in reserved(net) | used}
        for k in range(size):
            ip = base + (start + k) % size
            if ip not in skip:
                return ipaddress.IPv4Address(ip)
        raise Exhausted(f"no free address left in block {net.block} of network {net.name!r}",
                        kind="exhausted")
