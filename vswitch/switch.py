"""The control plane's model of the switch: networks, ports and the data
plane that forwards between them. The API calls these methods; only they
change data-plane state, through the Datapath's small API."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from dataclasses import dataclass

from . import __version__
from ._fastpath import Datapath
from .config import Config, NetworkConfig
from .tap import OFFLOADS_ALL, OFFLOADS_TCP, Tap, TapError, check_ifname, normalize_mac, random_mac
from .tunnel import Tunnel, ip_str, ip_to_int

log = logging.getLogger("vswitch.switch")

PORT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class Port:
    name: str
    netns: str
    ifname: str
    network: NetworkConfig
    mac: str
    addresses: list[ipaddress.IPv4Interface]
    tap: Tap
    port_id: int
    state: str = "up"       # "lost" once its device disappeared under us


class Switch:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop):
        self.config = config
        self.loop = loop
        self.dp = Datapath(config.fdb_max_entries, config.aging_time, config.batch)
        # Data-plane network ids: 1.. in config order.
        self.network_ids = {n.name: i + 1 for i, n in enumerate(config.networks)}
        for net in config.networks:
            self.dp.set_network(self.network_ids[net.name], net.vni, net.mtu)
        self.ports: dict[str, Port] = {}
        self.tunnel: Tunnel | None = None
        if config.overlay:
            self._start_tunnel()
        # Ports being created (netlink work in a thread): name -> (network, addresses).
        self._pending: dict[str, tuple[NetworkConfig, list[ipaddress.IPv4Interface]]] = {}
        self.started = time.monotonic()

    # ------------------------------------------------------------- overlay

    def _start_tunnel(self):
        ov = self.config.overlay
        self.tunnel = Tunnel(ov.vtep_ip, ov.udp_port)      # OSError: the daemon reports it
        self.dp.set_tunnel(self.tunnel.rx.fileno(), self.tunnel.tx.fileno(), ov.udp_port,
                           ov.underlay_mtu, ov.learn_peers)
        self.loop.add_reader(self.tunnel.rx.fileno(), self._tunnel_readable)
        for peer in ov.peers:
            for net_id in self.network_ids.values():
                self.dp.add_peer(ip_to_int(peer), net_id)

    def _tunnel_readable(self):
        if self.dp.drain_tunnel() < 0:
            log.error("VXLAN socket failed; tunnel traffic stops")
            self.loop.remove_reader(self.tunnel.rx.fileno())

    def _need_overlay(self):
        if self.tunnel is None:
            raise TapError("peers need overlay mode (node.mode = \"overlay\")", 409)

    @staticmethod
    def _peer_ip(ip: str) -> int:
        try:
            return ip_to_int(ipaddress.IPv4Address(ip))
        except ValueError:
            raise TapError(f"bad peer address {ip!r}: expected an IPv4 address") from None

    def add_peer(self, ip: str, network: str | None = None) -> dict:
        self._need_overlay()
        value = self._peer_ip(ip)
        if ip_str(value) == str(self.config.overlay.vtep_ip):
            raise TapError(f"{ip} is this node's own VTEP address")
        ids = [self._network_id(network)] if network else list(self.network_ids.values())
        for net_id in ids:
            try:
                self.dp.add_peer(value, net_id)
            except OverflowError as e:
                raise TapError(str(e), 507) from None
        log.info("peer %s added for %s", ip_str(value), network or "all networks")
        return self.peer(ip)

    def del_peer(self, ip: str):
        self._need_overlay()
        if not self.dp.remove_peer(self._peer_ip(ip)):
            raise TapError(f"no peer {ip}", 404)
        log.info("peer %s removed", ip)

    def peers(self) -> list[dict]:
        if self.tunnel is None:
            return []
        names = {i: n for n, i in self.network_ids.items()}
        return [{"ip": ip_str(ip), "networks": [names[n] for n in nets], "counters": counters}
                for ip, nets, counters in self.dp.peer_list()]

    def peer(self, ip: str) -> dict:
        wanted = ip_str(self._peer_ip(ip))
        for p in self.peers():
            if p["ip"] == wanted:
                return p
        raise TapError(f"no peer {ip}", 404)

    def _fdb_key(self, mac: str, network: str | None) -> tuple[int, int]:
        """(network id, MAC as an integer); the default network if none is named."""
        return self.network_ids[self._network(network).name], int(normalize_mac(mac).replace(":", ""), 16)

    def fdb_add(self, mac: str, peer: str, network: str | None = None) -> dict:
        """A static entry: mac lives behind peer (never ages, not re-learned)."""
        self._need_overlay()
        try:
            self.dp.fdb_add_remote(*self._fdb_key(mac, network), self._peer_ip(peer))
        except KeyError:
            raise TapError(f"no peer {peer}: add it first", 404) from None
        except OverflowError as e:
            raise TapError(str(e), 507) from None
        return {"mac": normalize_mac(mac), "peer": peer}

    def fdb_del(self, mac: str, network: str | None = None):
        if not self.dp.fdb_delete(*self._fdb_key(mac, network)):
            raise TapError(f"no FDB entry for {mac}", 404)

    # ---------------------------------------------------------------- ports

    def _network(self, name: str | None) -> NetworkConfig:
        net = self.config.network(name) if name else self.config.networks[0]
        if net is None:
            known = ", ".join(n.name for n in self.config.networks)
            raise TapError(f"unknown network {name!r} (known: {known})", 404)
        return net

    def _address(self, net: NetworkConfig, cidr: str) -> ipaddress.IPv4Interface:
        try:
            addr = ipaddress.IPv4Interface(cidr if "/" in cidr else f"{cidr}/{net.subnet.prefixlen}")
        except ValueError as e:
            raise TapError(f"bad address {cidr!r}: {e}") from None
        if addr.ip not in net.subnet:
            raise TapError(f"address {addr} is outside network {net.name!r} ({net.subnet})")
        if addr.ip in (net.subnet.network_address, net.subnet.broadcast_address):
            raise TapError(f"address {addr.ip} is the network or broadcast address of {net.subnet}")
        ports = [(p.name, p.network, p.addresses) for p in self.ports.values()]
        ports += [(name, n, addresses) for name, (n, addresses) in self._pending.items()]
        for name, network, addresses in ports:
            if network is net and any(a.ip == addr.ip for a in addresses):
                raise TapError(f"address {addr.ip} is already used by port {name!r}", 409)
        return addr

    async def add_port(self, name: str, netns: str, ifname: str = "eth0",
                       network: str | None = None, ip: str | None = None,
                       mac: str | None = None) -> Port:
        if not isinstance(name, str) or not PORT_NAME_RE.match(name):
            raise TapError(f"bad port name {name!r}: 1-64 letters, digits, '.', '_' or '-'")
        if name in self.ports or name in self._pending:
            raise TapError(f"port {name!r} already exists", 409)
        net = self._network(network)
        addresses = [self._address(net, ip)] if ip else []
        mac = normalize_mac(mac) if mac else random_mac()
        check_ifname(ifname)
        self._pending[name] = (net, addresses)
        try:
            # Netlink work runs off the loop so forwarding goes on meanwhile.
            tap = await self.loop.run_in_executor(
                None, Tap, netns, ifname, mac, net.mtu, addresses, self._offloads())
        finally:
            del self._pending[name]
        try:
            port_id = self.dp.add_port(tap.fileno(), self.network_ids[net.name], tap.vnet_hdr)
        except OverflowError as e:
            tap.close()
            raise TapError(str(e), 507) from None
        port = Port(name, netns, ifname, net, mac, addresses, tap, port_id)
        self.ports[name] = port
        self.loop.add_reader(tap.fileno(), self._readable, port)
        log.info("port %s added: %s in %s, network %s, mac %s%s", name, ifname, netns,
                 net.name, mac, "".join(f", {a}" for a in addresses))
        return port

    def _offloads(self) -> tuple[str, ...]:
        if not self.config.offloads:
            return ()
        # Superframes bound for the tunnel are segmented before encapsulation;
        # the data plane does that for TCP, not (yet) for UDP.
        return OFFLOADS_TCP if self.tunnel else OFFLOADS_ALL

    def _readable(self, port: Port):
        if self.dp.drain(port.port_id) < 0:
            # The device is gone (its namespace was deleted): stop watching.
            self.loop.remove_reader(port.tap.fileno())
            port.state = "lost"
            log.warning("port %s: device gone, no longer forwarding", port.name)

    def port(self, name: str) -> Port:
        try:
            return self.ports[name]
        except KeyError:
            raise TapError(f"no port {name!r}", 404) from None

    def remove_port(self, name: str):
        port = self.port(name)
        self.loop.remove_reader(port.tap.fileno())
        self.dp.remove_port(port.port_id)
        port.tap.close()
        del self.ports[name]
        log.info("port %s removed", name)

    def close(self):
        for name in list(self.ports):
            self.remove_port(name)
        if self.tunnel:
            self.loop.remove_reader(self.tunnel.rx.fileno())
            self.tunnel.close()

    # ---------------------------------------------------------- inspection

    def port_info(self, port: Port) -> dict:
        return {"name": port.name, "netns": port.netns, "ifname": port.ifname,
                "network": port.network.name, "mac": port.mac,
                "addresses": [str(a) for a in port.addresses], "mtu": port.network.mtu,
                "state": port.state, "id": port.port_id, "offloads": port.tap.offloads,
                "counters": self.dp.port_counters(port.port_id)}

    def _network_id(self, name: str | None) -> int:
        return self.network_ids[self._network(name).name] if name else 0

    def fdb(self, network: str | None = None) -> list[dict]:
        names = {i: n for n, i in self.network_ids.items()}
        by_id = {p.port_id: p.name for p in self.ports.values()}
        entries = self.dp.fdb_entries(self._network_id(network))
        return sorted(({"network": names[net], "mac": mac,
                        "port": by_id.get(pid, f"#{pid}") if peer is None else f"vxlan:{ip_str(peer)}",
                        "age": round(age, 1), "static": static}
                       for net, mac, pid, peer, age, static in entries),
                      key=lambda e: (e["network"], e["port"], e["mac"]))

    def fdb_flush(self, network: str | None = None) -> int:
        return self.dp.fdb_flush(self._network_id(network))

    def expire_fdb(self) -> int:
        return self.dp.fdb_expire()

    def stats(self) -> dict:
        counters = self.dp.counters()
        counters["ports"] = {p.name: self.dp.port_counters(p.port_id) for p in self.ports.values()}
        counters["peers"] = self.peers()
        return counters

    def status(self) -> dict:
        fdb = self.dp.counters()["fdb"]
        return {"node": self.config.node_name, "mode": self.config.mode,
                "version": __version__, "uptime": round(time.monotonic() - self.started, 1),
                "ports": len(self.ports), "networks": [n.name for n in self.config.networks],
                "fdb_entries": fdb["entries"], "aging_time": self.dp.aging_time,
                "vtep": str(self.config.overlay.vtep_ip) if self.config.overlay else None,
                "peers": len(self.peers())}
