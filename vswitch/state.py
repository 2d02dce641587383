"""The daemon's durable state: one SQLite database under node.state_dir
(WAL, synchronous=FULL, one transaction per change) holding IPAM
allocations and the port table, guarded by a lock file so that only one
vswitchd uses a state directory.

Every database call runs on one thread of its own (`await state.run(fn,
...)`): a commit waits for the disk (fsync), and the event loop that
drives forwarding must not wait with it. One thread also keeps the calls
in order and the connection to a single user."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

ALLOCATIONS = """
CREATE TABLE IF NOT EXISTS allocations (
    container_id TEXT NOT NULL,
    ifname       TEXT NOT NULL,
    network      TEXT NOT NULL,
    ip           TEXT,              -- IPv4, NULL in an IPv6-only network
    mac          TEXT NOT NULL,
    netns        TEXT NOT NULL,
    cni_network  TEXT NOT NULL,     -- the CNI config's "name", the scope of CNI GC
    created      REAL NOT NULL,
    ip6          TEXT,              -- IPv6, in a network with subnet6
    PRIMARY KEY (container_id, ifname),
    UNIQUE (network, ip),
    UNIQUE (network, ip6)
)"""
SCHEMA = ALLOCATIONS + """;
-- Where the next search for a free address starts, per network: handing
-- out addresses round-robin keeps a just-released one (still in peers' ARP
-- caches) unused for as long as possible.
CREATE TABLE IF NOT EXISTS cursors (
    network TEXT PRIMARY KEY,
    last_ip TEXT NOT NULL
);
-- Pod ports, so that a restarted daemon re-attaches their (persistent) TAPs.
CREATE TABLE IF NOT EXISTS ports (
    name         TEXT PRIMARY KEY,
    netns        TEXT NOT NULL,
    ifname       TEXT NOT NULL,
    network      TEXT NOT NULL,
    mac          TEXT NOT NULL,
    addresses    TEXT NOT NULL,     -- JSON list of CIDR strings
    mtu          INTEGER NOT NULL,
    secured      INTEGER NOT NULL,
    container_id TEXT,              -- CNI ports: the attachment
    cni_ifname   TEXT,
    created      REAL NOT NULL,
    rates        TEXT NOT NULL DEFAULT '{}',  -- JSON: rate limits in bits/s and bits
    netns_id     TEXT,             -- JSON [st_dev, st_ino] of the namespace it was made in
    identity     TEXT              -- JSON: the pod's namespace, name, labels, named ports
);
-- NetworkPolicy objects and namespace labels (cluster mode: etcd's, as last seen).
CREATE TABLE IF NOT EXISTS policy_objects (
    kind  TEXT NOT NULL,             -- "policy" (key NS/NAME) or "namespace" (key NS)
    key   TEXT NOT NULL,
    value TEXT NOT NULL,             -- JSON: the manifest, or the labels
    PRIMARY KEY (kind, key)
);
-- Cluster mode: the address blocks this node holds (its mirror of etcd, so
-- that it allocates while etcd is away and after a restart), and what it
-- last knew of the cluster (its lease, networks, nodes) to start from.
CREATE TABLE IF NOT EXISTS cluster_blocks (
    network TEXT NOT NULL,
    cidr    TEXT NOT NULL,
    PRIMARY KEY (network, cidr)
);
CREATE TABLE IF NOT EXISTS cluster_cache (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL              -- JSON
);
"""


class StateInUse(Exception):
    pass


class Taken(Exception):
    """A new port's address or MAC is already someone's."""


@dataclass(frozen=True)
class PortRecord:
    name: str
    netns: str
    ifname: str
    network: str
    mac: str
    addresses: tuple[str, ...]
    mtu: int
    secured: bool
    attachment: tuple[str, str] | None = None
    rates: dict = field(default_factory=dict)
    netns_id: tuple[int, int] | None = None
    identity: dict | None = None      # PodIdentity.to_json()


class State:
    def __init__(self, state_dir: str):
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        # One daemon per state: a second one would hand out the same addresses.
        self._lock = open(os.path.join(state_dir, "vswitchd.lock"), "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise StateInUse(f"{state_dir} is in use by another vswitchd") from None
        self.path = os.path.join(state_dir, "state.db")
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE).
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="state")
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        # State written before rate limits and namespace identities existed.
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(ports)")}
        if "rates" not in columns:
            self.db.execute("ALTER TABLE ports ADD COLUMN rates TEXT NOT NULL DEFAULT '{}'")
        if "netns_id" not in columns:
            self.db.execute("ALTER TABLE ports ADD COLUMN netns_id TEXT")
        if "identity" not in columns:
            self.db.execute("ALTER TABLE ports ADD COLUMN identity TEXT")
        # ... and before IPv6 (no ip6, ip NOT NULL): the table again, rows kept.
        if "ip6" not in {row[1] for row in self.db.execute("PRAGMA table_info(allocations)")}:
            with self.transaction():
                self.db.execute("ALTER TABLE allocations RENAME TO allocations_v4")
                self.db.execute(ALLOCATIONS)
                self.db.execute("INSERT INTO allocations SELECT *, NULL FROM allocations_v4")
                self.db.execute("DROP TABLE allocations_v4")

    async def run(self, fn, *args):
        """fn(*args) on the database thread (fn: a method of this State or of Ipam)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def run_sync(self, fn, *args):
        """fn(*args) on the database thread, waited for (at shutdown)."""
        return self._thread.submit(fn, *args).result()

    def transaction(self):
        return _Transaction(self.db)

    def close(self):
        self.run_sync(self.db.close)
        self._thread.shutdown()
        self._lock.close()

    # ---------------------------------------------------------------- ports

    def save_port(self, p: PortRecord, exclusive: bool = False):
        """Record a port. exclusive (a new port): in the same transaction,
        Taken unless its addresses and MAC are no other port's and no other
        attachment's, so that concurrent requests cannot both get one."""
        container_id, cni_ifname = p.attachment or (None, None)
        with self.transaction():
            if exclusive:
                self._check_free(p)
            self.db.execute("INSERT OR REPLACE INTO ports VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                            (p.name, p.netns, p.ifname, p.network, p.mac,
                             json.dumps(list(p.addresses)), p.mtu, int(p.secured),
                             container_id, cni_ifname, time.time(), json.dumps(p.rates),
                             json.dumps(p.netns_id) if p.netns_id else None,
                             json.dumps(p.identity) if p.identity else None))

    def _check_free(self, p: PortRecord):
        ips = {a.split("/")[0] for a in p.addresses}
        for cid, ifname, ip, mac in self.db.execute(
                "SELECT container_id, ifname, ip, mac FROM allocations WHERE network=?",
                (p.network,)):
            if (cid, ifname) != p.attachment and ip in ips:
                raise Taken(f"address {ip} is allocated by IPAM (ipam show)")
            if (cid, ifname) != p.attachment and mac == p.mac:
                raise Taken(f"MAC {mac} is already used in network {p.network!r}")
        for name, addresses, mac in self.db.execute(
                "SELECT name, addresses, mac FROM ports WHERE network=? AND name!=?",
                (p.network, p.name)):
            taken = ips & {a.split("/")[0] for a in json.loads(addresses)}
            if taken:
                raise Taken(f"address {taken.pop()} is already used by port {name!r}")
            if mac == p.mac:
                raise Taken(f"MAC {mac} is already used in network {p.network!r} "
                            f"(port {name!r})")

    def port_addresses(self, network: str) -> set[str]:
        """Addresses the network's port records hold (hand-made ports too)."""
        return {a.split("/")[0] for (addresses,) in self.db.execute(
            "SELECT addresses FROM ports WHERE network=?", (network,))
            for a in json.loads(addresses)}

    def delete_port(self, name: str):
        with self.transaction():
            self.db.execute("DELETE FROM ports WHERE name=?", (name,))

    def ports(self) -> list[tuple[str, PortRecord | Exception]]:
        """(name, record) of every port, or (name, the error) for a row that
        cannot be read back as one."""
        rows = self.db.execute("SELECT name, netns, ifname, network, mac, addresses, mtu, secured,"
                               " container_id, cni_ifname, rates, netns_id, identity FROM ports"
                               " ORDER BY created").fetchall()
        out: list[tuple[str, PortRecord | Exception]] = []
        for r in rows:
            try:
                out.append((r[0], PortRecord(
                    r[0], r[1], r[2], r[3], r[4], tuple(json.loads(r[5])), r[6], bool(r[7]),
                    (r[8], r[9]) if r[8] is not None else None, json.loads(r[10]),
                    tuple(json.loads(r[11])) if r[11] else None,
                    json.loads(r[12]) if r[12] else None)))
            except (ValueError, TypeError) as e:
                out.append((r[0], e))
        return out


    # ------------------------------------------------------------- policy

    def policy_rows(self) -> list[tuple[str, str, object]]:
        return [(kind, key, json.loads(value)) for kind, key, value in self.db.execute(
            "SELECT kind, key, value FROM policy_objects ORDER BY kind, key")]

    def save_policy_row(self, kind: str, key: str, value):
        """A policy's manifest or a namespace's labels; None deletes it."""
        with self.transaction():
            if value is None:
                self.db.execute("DELETE FROM policy_objects WHERE kind=? AND key=?", (kind, key))
            else:
                self.db.execute("INSERT OR REPLACE INTO policy_objects VALUES (?, ?, ?)",
                                (kind, key, json.dumps(value)))


# ------------------------------------------------------------- cluster mode

def held_blocks(db: sqlite3.Connection) -> list[tuple[str, str]]:
    return db.execute("SELECT network, cidr FROM cluster_blocks ORDER BY network, cidr").fetchall()


def hold_block(state: "State", network: str, cidr: str, held: bool):
    with state.transaction():
        state.db.execute("INSERT OR IGNORE INTO cluster_blocks VALUES (?, ?)" if held else
                         "DELETE FROM cluster_blocks WHERE network=? AND cidr=?", (network, cidr))


def cached(db: sqlite3.Connection, key: str, default=None):
    row = db.execute("SELECT value FROM cluster_cache WHERE key=?", (key,)).fetchone()
    return json.loads(row[0]) if row else default


def cache(state: "State", key: str, value):
    with state.transaction():
        state.db.execute("INSERT OR REPLACE INTO cluster_cache VALUES (?, ?)",
                         (key, json.dumps(value)))


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, tb):
        self.db.execute("ROLLBACK" if kind else "COMMIT")
