"""Other nodes and their pods, into this node's data plane: every live
node is a VXLAN peer of every network; every endpoint of a live node is a
neighbour entry (ARP and ND are answered here) and, for another node's
pod, a static FDB entry behind that node's VTEP; and remote pods are
policy peers. Only the holder of an address's block may say whose the
address is."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..config import NetworkConfig
from ..errors import VswitchError
from ..policy import PolicyPod
from ..port import PodIdentity
from ..protocol import address_key
from .schema import Change, family
from .slices import sliced
from .view import View

if TYPE_CHECKING:
    from ..switch import Switch

log = logging.getLogger("vswitch.cluster")


Who = tuple[str, str, str, str]          # a remote pod: (node, network, namespace, name)


class Remote:
    def __init__(self, view: View, switch: Switch, name: str, vtep: str, arp_suppression: bool):
        self.view, self.switch, self.name, self.vtep = view, switch, name, vtep
        self.arp_suppression = arp_suppression
        # Remote pods for NetworkPolicy, kept up to date one endpoint at a
        # time (never rebuilt from every endpoint): endpoint -> its pod and
        # address, pod -> its addresses and its PolicyPod.
        self._pod_of: dict[tuple[str, str], tuple[Who, int]] = {}
        self._addresses: dict[Who, dict[int, None]] = {}
        self._pods: dict[Who, PolicyPod] = {}
        view.listen("nodes", self._node)
        view.listen("endpoints", self._endpoint)

    def _node(self, name: tuple[str, ...], before: dict | None, rec: dict | None):
        if name[0] == self.name:
            return
        if before and (rec is None or before.get("vtep") != rec.get("vtep")):
            self._forget_peer(name[0], before.get("vtep"))
        if (before is None) != (rec is None):
            for where in self.view.by_node.get(name[0], ()):     # its pods come or go
                self._index(where)
        if rec is not None:
            self.add_peer(name[0], rec["vtep"])
            self.program_each(self.view.by_node.get(name[0], ()))

    def _endpoint(self, where: tuple[str, ...], before: dict | None, rec: dict | None):
        network, ip = where
        if before:
            self._unprogram(network, ip, before)
        self._index((network, ip))              # who is where: policy peers
        if rec is not None:
            self._program(network, ip, rec)     # (raises: the view counts it ignored)

    def add_peer(self, node: str, vtep: str):
        """Flood every network to a node's VTEP (checked with its record)."""
        networks = [n for n in self.view.networks if self.switch.dataplane.has_network(n)]
        address = ipaddress.ip_address(vtep)
        if address.version != ipaddress.ip_address(self.vtep).version:
            log.error("cluster: a node's VTEP %s is not of this underlay's family (vtep %s): "
                      "not a peer", vtep, self.vtep)
        elif vtep != self.vtep and networks:
            self.switch.overlay.peer_table.hold(address, f"node:{node}", networks)

    async def add_peers(self):
        async for name, node in sliced(list(self.view.nodes.items())):
            if name != self.name:
                self.add_peer(name, node["vtep"])

    def _forget_peer(self, node: str, vtep):
        """Stop flooding to a node's VTEP, unless another source (another
        node, the config) holds it too; its FDB entries go with it."""
        if isinstance(vtep, str) and vtep != self.vtep:
            self.switch.overlay.peer_table.release(ipaddress.ip_address(vtep), f"node:{node}")

    async def program_all(self, wheres: Iterable[tuple[str, str]]):
        """program_each, for many (a network joined): in slices."""
        async for where in sliced(wheres):
            if where in self.view.endpoints:        # (not gone meanwhile)
                self.program_each((where,))

    def program_each(self, wheres: Iterable[tuple[str, str]]):
        """Program these endpoints; one that cannot be is counted, not fatal."""
        for where in wheres:
            self._index(where)
            try:
                self._program(*where, self.view.endpoints[where])
            except (VswitchError, ValueError, KeyError, TypeError) as e:
                self.view.ignore(Change("endpoints", where, None), str(e))

    def _program(self, network: str, ip: str, ep: dict):
        """An endpoint into the data plane, while its node is alive."""
        dp = self.switch.dataplane
        node = self.view.nodes.get(str(ep.get("node")))
        net = self.switch.config.network(network)
        if node is None or net is None or not dp.has_network(network):
            return
        address = ipaddress.ip_address(ip)
        if not self.holds(net, address, ep["node"]):
            raise ValueError(f"{ip} is outside the blocks of node {ep['node']}")
        mac = ep["mac"]
        if ep["node"] != self.name:
            dp.fdb_add_remote(network, mac, node["vtep"])
        if self.arp_suppression:
            dp.neigh_set(network, address, mac)

    def _unprogram(self, network: str, ip: str, ep: dict):
        dp = self.switch.dataplane
        if not dp.has_network(network):
            return
        dp.neigh_delete(network, ipaddress.ip_address(ip))
        if ep.get("node") != self.name and isinstance(ep.get("mac"), str):
            dp.fdb_delete(network, ep["mac"])

    def holds(self, net: NetworkConfig, address: ipaddress.IPv4Address | ipaddress.IPv6Address,
              node) -> bool:
        """Only the holder of an address's block may say whose it is: a node
        cannot divert another node's pod address to a MAC of its own (nor
        claim it for a pod that policies let in)."""
        size = family(net, address.version)[1]
        return size is not None and self.view.holder_of(net.name, address, size) == node

    async def reindex(self, wheres: Iterable[tuple[str, str]]):
        async for where in sliced(wheres):
            self._index(where)

    def _index(self, where: tuple[str, str]):
        """An endpoint's part in the remote pods, as its record, its node and
        its block's holder now say; policy recompiles (soon) if it changed."""
        now = self._pod(where)
        was = self._pod_of.pop(where, None)
        if now is not None and was is not None and now[:2] == was and \
                self._pods[was[0]].labels == now[2].labels and \
                self._pods[was[0]].named_ports == now[2].named_ports:
            self._pod_of[where] = was
            return
        if was is not None:
            who, key = was
            self._addresses[who].pop(key, None)
            self._update(who, self._pods[who].labels, self._pods[who].named_ports)
        if now is not None:
            who, key, ident = now       # (a pod's identity: its latest record's)
            self._pod_of[where] = (who, key)
            self._addresses.setdefault(who, {})[key] = None
            self._update(who, ident.labels, ident.named_ports)
        if now is not None or was is not None:
            self.switch.policy.schedule()

    def _update(self, who: Who, labels: dict, named_ports: dict):
        """A pod's PolicyPod anew from its addresses (gone with the last)."""
        if not self._addresses[who]:
            del self._addresses[who], self._pods[who]
            return
        node, network, ns, name = who
        self._pods[who] = PolicyPod(ns, name, labels, named_ports,
                                    tuple(self._addresses[who]), network, None, node)

    def _pod(self, where: tuple[str, str]) -> tuple[Who, int, PodIdentity] | None:
        """(pod, address key, identity) of an endpoint of another live node;
        None if it is not one (an unreadable identity, an address outside
        its node's blocks, a network this node does not run)."""
        ep = self.view.endpoints.get(where)
        if ep is None:
            return None
        network, ip = where
        node = ep.get("node")
        net = self.switch.config.network(network)
        if node == self.name or node not in self.view.nodes or net is None:
            return None
        try:
            address = ipaddress.ip_address(ip)
            ident = PodIdentity.from_json(ep.get("pod"))
        except (VswitchError, ValueError):
            return None
        if not self.holds(net, address, node):
            return None
        return (str(node), network, ident.namespace, ident.name or ip), address_key(address), \
            ident

    def remote_pods(self) -> list[PolicyPod]:
        """Pods of other live nodes, from their endpoint records, for
        NetworkPolicy (a record with an unreadable identity, or for an
        address outside its node's blocks, is left out)."""
        return list(self._pods.values())
