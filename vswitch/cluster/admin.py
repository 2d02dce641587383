"""What operators and the API ask of the cluster: networks created and
deleted, a dead node removed, policies and namespace labels written, and
the cluster-wide listings (networks, nodes, blocks). Each write waits a
little for etcd, then fails with a retryable error."""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from typing import TYPE_CHECKING

from ..config import NAME_RE
from ..errors import Conflict, InvalidRequest, NotFound
from ..etcd import Txn
from ..protocol import MAX_NETWORK_MTU, MIN_MTU
from .gateways import Gateways
from .graves import Graves
from .publisher import TXN_OPS
from .schema import DEFAULT_BLOCK_SIZE6, block_of_key_part, family, network_from_record, parse_json
from .session import Session
from .view import View

if TYPE_CHECKING:
    from ..switch import Switch

log = logging.getLogger("vswitch.cluster")


class Admin:
    def __init__(self, session: Session, view: View, gateways: Gateways, graves: Graves,
                 switch: Switch):
        self.session, self.view, self.gateways, self.graves = session, view, gateways, graves
        self.switch, self.name, self.keys = switch, session.name, session.keys

    async def put_policies(self, manifests: dict[str, dict | None]):
        """Policies (None: deleted) into etcd, in one transaction per TXN_OPS."""
        await self.session.need_connection()
        ops = [Txn.put(self.keys.key("policies", key), json.dumps(m).encode()) if m is not None
               else Txn.delete(self.keys.key("policies", key)) for key, m in manifests.items()]
        for i in range(0, len(ops), TXN_OPS):
            txn = Txn()
            txn.success = ops[i:i + TXN_OPS]
            await self.session.commit(txn)

    async def put_namespace(self, name: str, labels: dict[str, str]):
        await self.session.need_connection()
        txn = Txn()
        key = self.keys.key("namespaces", name)
        txn.success = [Txn.put(key, json.dumps({"labels": labels}).encode()) if labels
                       else Txn.delete(key)]
        await self.session.commit(txn)



    async def create_network(self, name, vni, subnet=None, block_size=26, mtu=None, gateway=True,
                             masquerade=True, subnet6=None,
                             block_size6=DEFAULT_BLOCK_SIZE6) -> dict:
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
            raise InvalidRequest(f"mtu {mtu} + {ov.overhead} bytes of "
                                 f"{ov.encapsulation.name.upper()} overhead exceeds "
                                 f"this node's underlay MTU {ov.underlay_mtu}")
        await self.session.need_connection()
        for other, rec in self.view.networks.items():
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
        key, vni_key = self.keys.key("networks", name), self.keys.key("vnis", str(net.vni))
        txn = Txn().absent(key).absent(vni_key)
        txn.success = [Txn.put(key, json.dumps(record).encode()),
                       Txn.put(vni_key, json.dumps(name).encode())]
        if not (await self.session.commit(txn)).succeeded:
            raise Conflict(f"network {name!r} or VNI {net.vni} exists already")
        log.info("cluster: network %s created (vni %d, %s)", name, net.vni, ", ".join(
            f"{subnet} in /{size} blocks" for subnet, size in (family(net, 4), family(net, 6))
            if subnet))
        return {"name": name, **record}

    async def delete_network(self, name: str) -> dict:
        await self.session.need_connection()
        kv = await self.session.etcd.get(self.keys.key("networks", name))
        if kv is None:
            raise NotFound(f"no network {name!r}")
        rec = parse_json(kv.value) or {}
        txn = Txn().unchanged(kv.key, kv.mod_revision)
        txn.success = [Txn.delete(kv.key), Txn.delete(self.keys.key("vnis", str(rec.get("vni")))),
                       Txn.delete(self.keys.key("blocks", name) + "/", prefix=True),
                       Txn.delete(self.keys.key("endpoints", name) + "/", prefix=True)]
        if not (await self.session.commit(txn)).succeeded:
            raise Conflict(f"network {name!r} changed meanwhile; try again")
        log.info("cluster: network %s deleted", name)
        return {"deleted": name}

    def list_networks(self) -> list[dict]:
        out = []
        for name, rec in sorted(self.view.networks.items()):
            gw, gw6 = self.gateways.of(name), self.gateways.of(name, 6)
            out.append({"name": name, **{k: rec.get(k) for k in ("vni", "subnet", "block_size",
                                                                  "mtu")},
                        "gateway": bool(rec.get("gateway")),
                        "masquerade": bool(rec.get("masquerade")),
                        "gateway_here": str(gw) if gw else None,
                        "gateway6_here": str(gw6) if gw6 else None,
                        "subnet6": rec.get("subnet6"), "block_size6": rec.get("block_size6"),
                        "blocks": sum(1 for (n, _) in self.view.holders if n == name),
                        "endpoints": sum(1 for (n, _) in self.view.endpoints if n == name),
                        "joined": self.switch.dataplane.has_network(name)})
        return out

    async def remove_node(self, name: str) -> dict:
        """The operator says node `name` is gone: free its blocks now.
        Refused while its record lives (stop it first)."""
        await self.session.need_connection()
        if name == self.name:
            raise Conflict("a node cannot remove itself")
        if await self.session.etcd.get(self.keys.key("nodes", name)):
            raise Conflict(f"node {name!r} is alive (its lease is being renewed): stop its "
                           "vswitchd first, or wait for its lease to expire")
        done, count = await self.graves.reclaim(name)
        if not done:
            raise Conflict(f"node {name!r} came back meanwhile; not removed")
        return {"removed": name, "blocks_released": count}

    def node_list(self) -> list[dict]:
        names = set(self.view.nodes) | set(self.view.holders.values()) | set(self.view.graves)
        out = []
        for name in sorted(n for n in names if n):
            rec = self.view.nodes.get(name)
            grave = self.view.graves.get(name)
            out.append({
                "name": name, "state": "alive" if rec else "gone",
                "vtep": rec.get("vtep") if rec else None,
                "version": rec.get("version") if rec else None,
                "started": rec.get("started") if rec else None,
                "blocks": sorted(f"{n}:{c.replace('-', '/')}" for (n, c), h in self.view.holders.items()
                                 if h == name),
                "pods": len({(w[0], self.view.endpoints[w].get("mac"))      # (dual-stack: one
                             for w in self.view.by_node.get(name, ())}),     # pod, two records)
                "gone_since": (grave or {}).get("since"),
                "self": name == self.name})
        return out

    def block_list(self) -> list[dict]:
        out = []
        for (network, cidr), holder in sorted(self.view.holders.items()):
            block = block_of_key_part(cidr)
            used = sum(1 for (n, ip) in self.view.endpoints
                       if n == network and ipaddress.ip_address(ip) in block)
            out.append({"network": network, "block": str(block), "node": holder,
                        "endpoints": used, "alive": holder in self.view.nodes})
        return out

