"""What this node knows of the cluster's records, whatever source fed them:
the tables, the indices reconcilers ask (endpoints by node and by MAC,
block holders), and the listeners told of each change. Malformed records
are counted and logged (a few), never fatal, and leave what the node knew
of their key as it was."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from ..errors import VswitchError
from .schema import (
    PARTS,
    Change,
    Keys,
    block_of_key_part,
    network_from_record,
    parse_json,
    vtep_of,
)

log = logging.getLogger("vswitch.cluster")

LOGGED_BAD_RECORDS = 20                 # malformed records logged; the rest only counted

# A listener: (name, the record before, the record now); None: absent.
Listener = Callable[[tuple[str, ...], dict | None, dict | None], None]


class View:
    def __init__(self, keys: Keys):
        self.keys = keys
        self.networks: dict[str, dict] = {}
        self.nodes: dict[str, dict] = {}
        self.endpoints: dict[tuple[str, str], dict] = {}     # (network, ip) -> record
        self.by_node: dict[str, set[tuple[str, str]]] = {}   # node -> its endpoints
        self.mac_of: dict[tuple[str, str], tuple[str, str]] = {}   # (network, MAC) -> endpoint
        self.holders: dict[tuple[str, str], str] = {}         # (network, cidr) -> holder
        # ... and by (network, IP version, prefix length, first address as an
        # int): whose an address's block is, without formatting the block.
        self.block_holders: dict[tuple[str, int, int, int], str] = {}
        self.graves: dict[str, dict] = {}
        self.policies: dict[tuple[str, str], dict] = {}
        self.namespaces: dict[str, dict] = {}
        self.revision = 0
        self.ignored = 0
        self.failed: set[tuple[str, tuple[str, ...]]] = set()   # records a listener refused
        self.listeners: dict[str, list[Listener]] = {kind: [] for kind in PARTS}

    def listen(self, kind: str, listener: Listener):
        self.listeners[kind].append(listener)

    def known(self) -> list[tuple[str, tuple[str, ...]]]:
        """Every record the view holds, as (kind, name): what a re-list
        that lacks one must remove."""
        known: list[tuple[str, tuple[str, ...]]] = []
        return known + [("networks", (n,)) for n in self.networks] + \
            [("nodes", (n,)) for n in self.nodes] + \
            [("graves", (n,)) for n in self.graves] + \
            [("endpoints", where) for where in self.endpoints] + \
            [("blocks", where) for where in self.holders] + \
            [("policies", where) for where in self.policies] + \
            [("namespaces", (n,)) for n in self.namespaces]

    def apply(self, change: Change):
        """One record's new value into the tables, then to the listeners."""
        rec = None if change.value is None else parse_json(change.value)
        if change.value is not None and not isinstance(rec, dict):
            # Every kind's record is an object.
            self.ignore(change, "not JSON" if rec is None else "not a JSON object")
            return
        which = (change.kind, change.name)
        if rec is not None and which not in self.failed and self.current(*which) == rec:
            return      # as the node has it (a re-list, a put of the same value): nothing to do
        try:
            before = self._store(change.kind, change.name, rec)
            for listener in self.listeners[change.kind]:
                listener(change.name, before, rec)
            self.failed.discard(which)
        except Exception as e:      # whatever a record holds, the source goes on
            if rec is not None:
                self.failed.add(which)      # tried again when it comes again
            else:
                self.failed.discard(which)
            self.ignore(change, str(e) if isinstance(e, (VswitchError, ValueError))
                        else f"{type(e).__name__}: {e}")

    def ignore(self, change: Change, why: str):
        """A record that cannot be applied: counted, logged while there are
        few (whoever can write etcd could otherwise flood the log)."""
        self.ignored += 1
        if self.ignored <= LOGGED_BAD_RECORDS:
            log.warning("cluster: %s ignored: %s%s", self.keys.key(change.kind, *change.name), why,
                        " (further ones are only counted: records_ignored)"
                        if self.ignored == LOGGED_BAD_RECORDS else "")

    def _store(self, kind: str, name: tuple[str, ...], rec: dict | None) -> dict | None:
        """Check a record and put it in its table; what the key held before."""
        if kind == "networks":
            if rec is not None:
                network_from_record(name[0], rec)       # malformed: not taken up at all
            return _set(self.networks, name[0], rec)
        if kind == "nodes":
            if rec is not None and not vtep_of(rec):
                raise ValueError(f"{rec.get('vtep')!r} is not a VTEP address a node can have")
            return _set(self.nodes, name[0], rec)
        if kind == "endpoints":
            return self._endpoint((name[0], name[1]), rec)
        if kind == "blocks":
            try:
                block = block_of_key_part(name[1])
            except ValueError:
                if rec is not None:
                    raise ValueError(f"{name[1]!r} names no block") from None
                block = None
            before = self.holders.get((name[0], name[1]))
            _set(self.holders, (name[0], name[1]), rec.get("node") if rec else None)
            if block is not None:
                _set(self.block_holders, (name[0], block.version, block.prefixlen,
                                          int(block.network_address)),
                     rec.get("node") if rec else None)
            return {"node": before} if before else None
        if kind == "graves":
            return _set(self.graves, name[0], rec)
        if kind == "policies":
            return _set(self.policies, (name[0], name[1]), rec)
        return _set(self.namespaces, name[0], rec)

    def _endpoint(self, where: tuple[str, str], rec: dict | None) -> dict | None:
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
            self.by_node.get(str(before.get("node")), set()).discard(where)
            if self.mac_of.get((where[0], str(before.get("mac")))) == where:
                del self.mac_of[(where[0], str(before.get("mac")))]
        _set(self.endpoints, where, rec)
        if rec is not None:
            self.mac_of[mac_key] = where
            self.by_node.setdefault(str(rec.get("node")), set()).add(where)
        return before

    def current(self, kind: str, name: tuple[str, ...]) -> dict | None:
        """The record the view holds under a name (blocks: never, as only
        their holder is kept)."""
        table = {"networks": self.networks, "nodes": self.nodes, "graves": self.graves,
                 "namespaces": self.namespaces}.get(kind)
        if table is not None:
            return table.get(name[0])
        if kind == "endpoints":
            return self.endpoints.get((name[0], name[1]))
        if kind == "policies":
            return self.policies.get((name[0], name[1]))
        return None

    def holder(self, network: str, cidr: str) -> str | None:
        return self.holders.get((network, cidr))

    def holder_of(self, network: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                  prefixlen: int) -> str | None:
        """Who holds the block (of prefixlen) an address is in."""
        host_bits = address.max_prefixlen - prefixlen
        return self.block_holders.get((network, address.version, prefixlen,
                                       int(address) >> host_bits << host_bits))


def _set(table: dict, name, rec):
    """Put or (None) remove; what was there."""
    before = table.get(name)
    if rec is None:
        table.pop(name, None)
    else:
        table[name] = rec
    return before
