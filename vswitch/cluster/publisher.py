"""This node's pods, published: one endpoint record per address, on the
node's lease, written when a port comes up and deleted when it goes (one
etcd write per ADD and per DEL in the steady state); after a (re)connect,
what etcd lacks or has otherwise is put right in batches. A pod's record
overwritten or deleted by someone else while the pod has it is said
again. The node's gateways are not published: another node's is found by
ARP/ND, as on a LAN; pods' ARP and ND for their own gateway are answered
here."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING

from ..etcd import Txn
from .session import Session
from .view import View

if TYPE_CHECKING:
    from ..port import Port
    from ..switch import Switch

TXN_OPS = 100                           # operations per transaction (etcd allows 128)


class Publisher:
    """The switch's PortObserver in cluster mode."""

    def __init__(self, session: Session, view: View, switch: Switch, arp_suppression: bool,
                 spawn: Callable[[Coroutine], None]):
        self.session, self.view, self.switch, self.spawn = session, view, switch, spawn
        self.name, self.arp_suppression = session.name, arp_suppression
        view.listen("endpoints", self._endpoint)

    def port_up(self, port: Port):
        if port.network.name not in self.view.networks or not port.addresses:
            return
        if not port.is_host:
            self.spawn(self._publish(port))
        elif self.arp_suppression:
            for a in port.addresses:
                self.switch.dataplane.neigh_set(port.network.name, a.ip, port.mac)

    def port_down(self, port: Port):
        if port.network.name not in self.view.networks or not port.addresses:
            return
        if not port.is_host:
            self.spawn(self._unpublish(port.network.name, [str(a.ip) for a in port.addresses]))
        elif self.switch.dataplane.has_network(port.network.name):
            for a in port.addresses:
                self.switch.dataplane.neigh_delete(port.network.name, a.ip)

    def _endpoint(self, where: tuple[str, ...], before: dict | None, rec: dict | None):
        if before and before.get("node") == self.name and (rec or {}).get("node") != self.name \
                and self.session.connected and where[0] in self.view.networks:
            for port in self._ports_with(where[0], where[1]):
                self.spawn(self._publish(port))

    def _ports_with(self, network: str, ip: str) -> list[Port]:
        return [p for p in self.switch.ports.values() if p.state == "up" and not p.is_host
                and p.network.name == network and any(str(a.ip) == ip for a in p.addresses)]

    def _value(self, port: Port) -> bytes:
        pod = port.identity.to_json()
        pod["name"] = pod["name"] or port.name
        return json.dumps({"mac": port.mac, "node": self.name, "pod": pod}).encode()

    async def _publish(self, port: Port):
        """One write per address (if etcd is away, the next sync publishes it)."""
        if not self.session.connected or port.network.name not in self.view.networks:
            return
        for a in port.addresses:
            await self.session.put(self.session.keys.key("endpoints", port.network.name,
                                                         str(a.ip)), self._value(port))

    async def _unpublish(self, network: str, ips: list[str]):
        if not self.session.connected:
            return
        for ip in ips:
            key = self.session.keys.key("endpoints", network, ip)
            txn = Txn().leased(key, self.session.lease)
            txn.success = [Txn.delete(key)]
            await self.session.commit(txn)

    async def publish_all(self):
        """After a (re)connect: endpoints of this node's pods that etcd lacks
        (or has otherwise) are put, and those of pods gone are deleted."""
        want = {(p.network.name, str(a.ip)): self._value(p)
                for p in self.switch.ports.values() if p.state == "up" and not p.is_host
                and p.network.name in self.view.networks for a in p.addresses}
        ops = []
        for where, value in want.items():
            if self.view.endpoints.get(where) != json.loads(value):
                ops.append(Txn.put(self.session.keys.key("endpoints", *where), value,
                                   self.session.lease))
        for where, ep in self.view.endpoints.items():
            if ep.get("node") == self.name and where not in want:
                ops.append(Txn.delete(self.session.keys.key("endpoints", *where)))
        for i in range(0, len(ops), TXN_OPS):
            txn = Txn()
            txn.success = ops[i:i + TXN_OPS]
            await self.session.commit(txn)
