"""Pod attachments: what the CNI plugin asks the daemon for. An attachment
is a (container id, ifname) pair with an IPAM allocation and, while the pod
is connected, a secured port. ADD allocates (durably) before it makes the
port and gives the allocation back if the port cannot be made; DEL and GC
remove both and succeed when there is nothing left to remove."""

from __future__ import annotations

import hashlib
import ipaddress
import logging

from .errors import Busy, CheckFailed, Conflict, Exhausted, InvalidRequest
from .ipam import Allocation, gateway, gateway6
from .netns import netns_id
from .port import PodIdentity, Port, check_rates
from .protocol import CONTAINER_ID_RE, MIN_MTU, ErrorKind
from .switch import Switch
from .tap import check_ifname, inspect, normalize_mac, random_mac

log = logging.getLogger("vswitch.attachments")


class Attachments:
    def __init__(self, switch: Switch):
        self.switch = switch
        self.ipam = switch.ipam
        self.db = switch.state.run         # every IPAM call runs on the database thread
        self._busy: set[tuple[str, str]] = set()    # attachments with an ADD/DEL under way

    # -------------------------------------------------------------- helpers

    def _key(self, container_id, ifname) -> tuple[str, str]:
        if not isinstance(container_id, str) or not CONTAINER_ID_RE.match(container_id):
            raise InvalidRequest(f"bad container id {container_id!r}")
        return container_id, check_ifname(ifname)

    def _claim(self, key):
        if key in self._busy:
            raise Busy(f"{key[0]}/{key[1]}: another request for it is under way", kind=ErrorKind.BUSY)
        self._busy.add(key)

    def port_of(self, key) -> Port | None:
        return next((p for p in self.switch.ports.values() if p.attachment == key), None)

    @staticmethod
    def _connected(port: Port | None, netns: str) -> bool:
        return port is not None and port.state == "up" and port.netns == netns

    def _port_name(self, key) -> str:
        container_id, ifname = key
        name = f"{container_id[:12]}-{ifname}"
        if self.switch.name_taken(name):
            # Another attachment holds the short name: disambiguate by a digest.
            digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()[:8]
            name = f"{container_id[:12]}-{digest}-{ifname}"
        return name

    def result(self, alloc: Allocation, port: Port | None) -> dict:
        net = self.switch.network(alloc.network)
        gw, gw6 = gateway(net), gateway6(net)
        return {"container_id": alloc.container_id, "ifname": alloc.ifname,
                "network": net.name, "port": port.name if port else None,
                "state": port.state if port else "detached",
                "netns": alloc.netns, "mac": alloc.mac, "mtu": port.mtu if port else net.mtu,
                "ip": str(_interface(net, alloc.ip)) if alloc.ip else None,
                "gateway": str(gw) if gw else None,
                "ip6": str(_interface(net, alloc.ip6)) if alloc.ip6 else None,
                "gateway6": str(gw6) if gw6 else None,
                "routes": [{"dst": "0.0.0.0/0" if gw.version == 4 else "::/0", "gw": str(gw)}
                           for gw in self.switch.default_gateways(net)]}

    # ------------------------------------------------------------- commands

    async def add(self, container_id: str, ifname: str, netns: str, network: str | None = None,
                  cni_network: str = "", ip: str | None = None, mac: str | None = None,
                  mtu: int | None = None, rates: dict | None = None,
                  pod: dict | None = None) -> dict:
        """Connect a pod; a repeated ADD gives back the same address and MAC.
        mtu: the pod's, at most (and by default) the network's; rates: the
        port's rate limits (see Switch.set_rates); pod: who it is for
        NetworkPolicy (PodIdentity.from_json)."""
        key = self._key(container_id, ifname)
        net = await self.switch.addresses.ready(self.switch.network(network))
        if mtu is not None and not MIN_MTU <= mtu <= net.mtu:
            raise InvalidRequest(f"mtu {mtu} must be {MIN_MTU}..{net.mtu} (network {net.name!r})",
                                 kind=ErrorKind.INVALID)
        rates = check_rates(rates or {})
        try:
            identity = PodIdentity.from_json(pod)
        except InvalidRequest as e:
            raise InvalidRequest(str(e), kind=ErrorKind.INVALID) from None
        requested_ip, requested_ip6 = _parse_ips(ip)
        requested_mac = normalize_mac(mac) if mac else None
        self._claim(key)
        try:
            alloc, created = await self.db(self.ipam.get, *key), False
            if alloc:
                self._same_request(alloc, net.name, requested_ip, requested_ip6, requested_mac)
                port = self.port_of(key)
                if not self._connected(port, netns):
                    # Bringing its addresses up again: only while this node can
                    # prove it still holds their blocks (cluster mode: its lease;
                    # else a retryable error), never on the strength of the record.
                    await self.switch.addresses.blocks(net)
                    port = self.port_of(key)    # (the wait may have brought it back)
                if self._connected(port, netns):
                    return self.result(alloc, port)
                lost = [ip for ip in alloc.ips if not self.switch.addresses.holds(net, ip)]
                if lost:
                    raise Conflict(f"{key[0]}/{key[1]}: the block of {lost[0]} is no longer "
                                   "this node's", kind=ErrorKind.UNAVAILABLE)
                if port:                    # lost, or the pod has a new sandbox
                    await self.switch.detach_port(port)
                if alloc.netns != netns:
                    await self.db(self.ipam.move, *key, netns)
            else:
                stale = self.port_of(key)       # listed as lost, its address released
                if stale:
                    await self.switch.detach_port(stale)
                mac = requested_mac or random_mac()
                if self.switch.mac_in_use(net, mac):
                    raise Conflict(f"MAC {mac} is already used in network {net.name!r}",
                                   kind=ErrorKind.UNAVAILABLE)
                alloc = await self._allocate(net, key, netns, cni_network, mac, requested_ip,
                                             requested_ip6)
                created = True
            net = self.switch.network(net.name)     # as it is now (its gateway)
            addresses = [_interface(net, a) for a in alloc.ips]
            try:
                port = await self.switch.create_port(self._port_name(key), netns, key[1], net,
                                                     alloc.mac, addresses, True, key, mtu,
                                                     rates=rates, identity=identity)
            except BaseException:
                if created:         # leave nothing half-made behind
                    await self.db(self.ipam.release, *key)
                raise
            log.info("attached %s/%s: %s, %s", *key, ", ".join(map(str, addresses)), alloc.mac)
            return self.result(alloc, port)
        finally:
            self._busy.discard(key)

    async def _allocate(self, net, key, netns, cni_network, mac, requested_ip,
                        requested_ip6) -> Allocation:
        """An address from the blocks this node holds; when they are full,
        one more block if the node can get one (cluster mode), and again."""
        async def allocate(blocks):
            return await self.db(self.ipam.allocate, net, *key, netns, cni_network, mac,
                                 requested_ip, set(self.switch.addresses_in_use(net)),
                                 blocks, requested_ip6)
        while True:     # ends: more() fails once the node holds its limit or none is free
            blocks = await self.switch.addresses.blocks(net)
            try:
                return await allocate(blocks)
            except Exhausted as e:
                requested = requested_ip if e.version == 4 else requested_ip6
                if requested is not None or \
                        not await self.switch.addresses.more(net, blocks, e.version or 4):
                    raise

    @staticmethod
    def _same_request(alloc: Allocation, network: str, ip, ip6, mac):
        if alloc.network != network:
            raise Conflict(f"{alloc.container_id}/{alloc.ifname} is attached to network "
                           f"{alloc.network!r}", kind=ErrorKind.UNAVAILABLE)
        for wanted, has in ((ip, alloc.ip), (ip6, alloc.ip6)):
            if wanted is not None and wanted != has:
                raise Conflict(f"{alloc.container_id}/{alloc.ifname} already has address {has}",
                               kind=ErrorKind.UNAVAILABLE)
        if mac is not None and mac != alloc.mac:
            raise Conflict(f"{alloc.container_id}/{alloc.ifname} already has MAC {alloc.mac}",
                           kind=ErrorKind.UNAVAILABLE)

    async def delete(self, container_id: str, ifname: str) -> dict:
        """Disconnect a pod and release its address; fine if nothing is left."""
        key = self._key(container_id, ifname)
        self._claim(key)
        try:
            port = self.port_of(key)
            if port:
                await self.switch.detach_port(port)
            alloc = await self.db(self.ipam.release, *key)
        finally:
            self._busy.discard(key)
        if alloc:
            log.info("detached %s/%s, released %s", *key, ", ".join(map(str, alloc.ips)))
        return {"released": [str(ip) for ip in alloc.ips] if alloc else [],
                "port": port.name if port else None}

    async def check(self, container_id: str, ifname: str, netns: str) -> dict:
        """The attachment as it is now; CheckFailed says what is wrong."""
        key = self._key(container_id, ifname)
        alloc = await self.db(self.ipam.get, *key)
        if alloc is None:
            raise CheckFailed(f"{container_id}/{ifname} has no address allocated")
        port = self.port_of(key)
        if port is None or port.state != "up":
            raise CheckFailed(f"{container_id}/{ifname} is not connected to the switch")
        if port.netns != netns:
            raise CheckFailed(f"{container_id}/{ifname} is connected in {port.netns}, not {netns}")
        result = self.result(alloc, port)
        live = await self.switch.loop.run_in_executor(None, inspect, netns, ifname)
        if live is None:
            raise CheckFailed(f"interface {ifname!r} is missing from {netns}")
        if live["mac"] != alloc.mac:
            raise CheckFailed(f"{ifname} has MAC {live['mac']}, expected {alloc.mac}")
        for address in (result["ip"], result["ip6"]):
            if address and address not in live["addresses"]:
                raise CheckFailed(f"{ifname} lacks address {address} (has {live['addresses']})")
        if not live["up"]:
            raise CheckFailed(f"{ifname} is down")
        for route in result["routes"]:
            if route["gw"] not in live["gateways"]:
                raise CheckFailed(f"{ifname} has no default route via {route['gw']}")
        return result

    async def gc(self, cni_network: str | None = None, valid: list | None = None) -> dict:
        """Release attachments that are gone. With `valid` (CNI GC: the
        runtime's list of attachments of `cni_network`), every other one of
        that CNI network; without it, those whose namespace no longer exists."""
        if valid is not None:
            keep = {(v["containerID"], v["ifname"]) for v in valid}
            gone = [a for a in await self.db(self.ipam.list) if a.cni_network == cni_network
                    and (a.container_id, a.ifname) not in keep]
        else:
            gone = [a for a in await self.db(self.ipam.list) if self._namespace_gone(a)]
        released = []
        for a in gone:
            if (a.container_id, a.ifname) in self._busy:
                continue
            await self.delete(a.container_id, a.ifname)
            released.append(a.as_dict())
        return {"released": released}

    def _namespace_gone(self, alloc: Allocation) -> bool:
        port = self.port_of((alloc.container_id, alloc.ifname))
        if port is not None and port.state == "up":
            return netns_id(alloc.netns) != port.netns_id
        return netns_id(alloc.netns) is None

    async def show(self, network: str | None = None) -> dict:
        nets = [self.switch.network(network)] if network else list(self.switch.config.networks)
        allocations = []
        for a in await self.db(self.ipam.list, network and nets[0].name):
            entry = a.as_dict()
            port = self.port_of((a.container_id, a.ifname))
            entry["port"] = port.name if port else None
            entry["state"] = port.state if port else "detached"
            allocations.append(entry)
        held = [self.switch.addresses.held(n) for n in nets]
        free = [await self.db(self.ipam.free_count, n,
                              set(self.switch.addresses_in_use(n)), blocks)
                for n, blocks in zip(nets, held)]
        return {"networks": [{"name": n.name, "subnet": str(n.subnet) if n.subnet else None,
                              "block": ", ".join(map(str, blocks)) or None,
                              "gateway": str(gateway(n)) if n.subnet else None,
                              "host_port": n.host_port, "free": f,
                              "subnet6": str(n.subnet6) if n.subnet6 else None,
                              "block6": str(n.block6) if n.block6 else None,
                              "gateway6": str(gateway6(n)) if n.block6 else None}
                             for n, f, blocks in zip(nets, free, held)],
                "allocations": allocations}


def _parse_ips(ips: str | None) -> tuple[ipaddress.IPv4Address | None,
                                         ipaddress.IPv6Address | None]:
    """Requested static addresses, comma-separated: at most one per family."""
    texts = ips.split(",") if ips else []
    found: dict[int, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
    for text in texts:
        try:
            ip = ipaddress.ip_interface(text).ip
        except (ValueError, TypeError):
            raise InvalidRequest(f"bad address {text!r}: expected IPv4 or IPv6, optionally in "
                                 "CIDR form", kind=ErrorKind.INVALID) from None
        if ip.version in found:
            raise InvalidRequest(f"more than one IPv{ip.version} address requested",
                                 kind=ErrorKind.INVALID)
        found[ip.version] = ip
    return found.get(4), found.get(6)  # type: ignore[return-value]


def _interface(net, ip) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """A pod's address with its network's prefix length."""
    return ipaddress.ip_interface(f"{ip}/{net.subnet_of(ip.version).prefixlen}")

