"""The daemon's durable state: one SQLite database under node.state_dir
(WAL, synchronous=FULL, one transaction per change) holding IPAM
allocations and the port table, guarded by a lock file so that only one
vswitchd uses a state directory."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field

SCHEMA = """
CREATE TABLE IF NOT EXISTS allocations (
    container_id TEXT NOT NULL,
    ifname       TEXT NOT NULL,
    network      TEXT NOT NULL,
    ip           TEXT NOT NULL,
    mac          TEXT NOT NULL,
    netns        TEXT NOT NULL,
    cni_network  TEXT NOT NULL,     -- the CNI config's "name", the scope of CNI GC
    created      REAL NOT NULL,
    PRIMARY KEY (container_id, ifname),
    UNIQUE (network, ip)
);
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
    rates        TEXT NOT NULL DEFAULT '{}'   -- JSON: rate limits in bits/s and bits
);
"""


class StateInUse(Exception):
    pass


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
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        # State written before rate limits existed.
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(ports)")}
        if "rates" not in columns:
            self.db.execute("ALTER TABLE ports ADD COLUMN rates TEXT NOT NULL DEFAULT '{}'")

    def transaction(self):
        return _Transaction(self.db)

    def close(self):
        self.db.close()
        self._lock.close()

    # ---------------------------------------------------------------- ports

    def save_port(self, p: PortRecord):
        container_id, cni_ifname = p.attachment or (None, None)
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO ports VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                            (p.name, p.netns, p.ifname, p.network, p.mac,
                             json.dumps(list(p.addresses)), p.mtu, int(p.secured),
                             container_id, cni_ifname, time.time(), json.dumps(p.rates)))

    def delete_port(self, name: str):
        with self.transaction():
            self.db.execute("DELETE FROM ports WHERE name=?", (name,))

    def ports(self) -> list[PortRecord]:
        rows = self.db.execute("SELECT name, netns, ifname, network, mac, addresses, mtu, secured,"
                               " container_id, cni_ifname, rates FROM ports ORDER BY created")
        return [PortRecord(r[0], r[1], r[2], r[3], r[4], tuple(json.loads(r[5])), r[6],
                           bool(r[7]), (r[8], r[9]) if r[8] is not None else None,
                           json.loads(r[10])) for r in rows]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, tb):
        self.db.execute("ROLLBACK" if kind else "COMMIT")
