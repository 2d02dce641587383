"""The control plane's model of the switch: networks, ports and the data
plane that forwards between them. The API calls these methods; only they
change data-plane state, through the Datapath's small API."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import sqlite3
import time
from dataclasses import dataclass

from . import __version__
from ._fastpath import Datapath
from .config import Config, ConfigError, NetworkConfig
from .ipam import Ipam, StateInUse, gateway
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
    mtu: int
    secured: bool = False   # port security: bound to its MAC and addresses
    attachment: tuple[str, str] | None = None   # (container id, ifname) for CNI ports
    state: str = "up"       # "lost" once its device disappeared under us

    @property
    def is_host(self) -> bool:
        return self.netns is None


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
        # Ports being created (netlink work in a thread): name -> (network, addresses).
        self._pending: dict[str, tuple[NetworkConfig, list[ipaddress.IPv4Interface]]] = {}
        try:
            self.ipam = Ipam(config.state_dir)
        except StateInUse as e:
            raise ConfigError("node.state_dir", str(e)) from None
        except (OSError, sqlite3.Error) as e:
            raise ConfigError("node.state_dir", f"cannot open the state database: {e}") from None
        self.tunnel: Tunnel | None = None
        try:
            if config.overlay:
                self._start_tunnel()
        except BaseException:
            self.close()
            raise
        self.started = time.monotonic()

    async def start(self):
        """Make the host ports (netlink work, in a thread)."""
        for i, net in enumerate(self.config.networks):
            if net.host_port:
                await self._add_host_port(i, net)

    # ------------------------------------------------------------- overlay

    def _start_tunnel(self):
        ov = self.config.overlay
        try:
            self.tunnel = Tunnel(ov.vtep_ip, ov.udp_port)
        except OSError as e:       # the address is not this node's, or the port is in use
            raise ConfigError("overlay.vtep_ip", f"cannot bind {ov.vtep_ip}:{ov.udp_port}: "
                              f"{e.strerror}") from None
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
        return self.network_ids[self.network(network).name], int(normalize_mac(mac).replace(":", ""), 16)

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

    async def _add_host_port(self, index: int, net: NetworkConfig):
        """The network's gateway address on a TAP left in our own namespace."""
        address = ipaddress.IPv4Interface(f"{gateway(net)}/{net.subnet.prefixlen}")
        mac = random_mac()
        try:
            tap = await self.loop.run_in_executor(
                None, Tap, None, net.host_port, mac, net.mtu, [address], self._offloads())
        except TapError as e:
            raise ConfigError(f"network[{index}].host_port", str(e)) from None
        # The host routes for others: no port security on its port.
        self._register(f"host-{net.name}", None, net, mac, [address], tap, secured=False)

    def default_gateway(self, net: NetworkConfig) -> ipaddress.IPv4Address | None:
        """Where pods of the network send what is not on their subnet: the
        host port, when the network has one."""
        return gateway(net) if net.host_port else None

    def network(self, name: str | None) -> NetworkConfig:
        net = self.config.network(name) if name else self.config.networks[0]
        if net is None:
            known = ", ".join(n.name for n in self.config.networks)
            raise TapError(f"unknown network {name!r} (known: {known})", 404, kind="unknown_network")
        return net

    def _address(self, net: NetworkConfig, cidr: str) -> ipaddress.IPv4Interface:
        """A hand-given address: in the subnet, not a special one, not in use."""
        try:
            addr = ipaddress.IPv4Interface(cidr if "/" in cidr else f"{cidr}/{net.subnet.prefixlen}")
        except ValueError as e:
            raise TapError(f"bad address {cidr!r}: {e}") from None
        if addr.ip not in net.subnet:
            raise TapError(f"address {addr} is outside network {net.name!r} ({net.subnet})")
        if addr.ip in (net.subnet.network_address, net.subnet.broadcast_address):
            raise TapError(f"address {addr.ip} is the network or broadcast address of {net.subnet}")
        for name, address in self.addresses_in_use(net).items():
            if address == addr.ip:
                raise TapError(f"address {addr.ip} is already used by port {name!r}", 409)
        if addr.ip in self.ipam.used(net.name):
            raise TapError(f"address {addr.ip} is allocated by IPAM (ipam show)", 409)
        return addr

    def addresses_in_use(self, net: NetworkConfig) -> dict[str, ipaddress.IPv4Address]:
        """Port name -> address, for the ports of a network, made or being made."""
        ports = [(p.name, p.network, p.addresses) for p in self.ports.values()]
        ports += [(name, n, addresses) for name, (n, addresses) in self._pending.items()]
        return {name: a.ip for name, n, addresses in ports if n is net for a in addresses}

    def macs_in_use(self, net: NetworkConfig) -> set[str]:
        return {p.mac for p in self.ports.values() if p.network is net}

    async def add_port(self, name: str, netns: str, ifname: str = "eth0",
                       network: str | None = None, ip: str | None = None,
                       mac: str | None = None, port_security: bool | None = None) -> Port:
        """A port made by hand (vswitchctl port add). Port security is on by
        default when it has an address, and off for a port without one."""
        if not isinstance(name, str) or not PORT_NAME_RE.match(name):
            raise TapError(f"bad port name {name!r}: 1-64 letters, digits, '.', '_' or '-'")
        net = self.network(network)
        addresses = [self._address(net, ip)] if ip else []
        mac = normalize_mac(mac) if mac else random_mac()
        if mac in self.macs_in_use(net) or self.ipam.mac_used(net.name, mac):
            raise TapError(f"MAC {mac} is already used in network {net.name!r}", 409)
        secured = bool(addresses) if port_security is None else port_security
        return await self.create_port(name, netns, ifname, net, mac, addresses, secured)

    def name_taken(self, name: str) -> bool:
        return name in self.ports or name in self._pending

    async def create_port(self, name: str, netns: str, ifname: str, net: NetworkConfig, mac: str,
                          addresses: list[ipaddress.IPv4Interface], secured: bool,
                          attachment: tuple[str, str] | None = None, mtu: int | None = None) -> Port:
        """Make the TAP in the pod's namespace and attach it to the data plane."""
        if self.name_taken(name):
            raise TapError(f"port {name!r} already exists", 409)
        check_ifname(ifname)
        gw = self.default_gateway(net) if addresses else None
        self._pending[name] = (net, addresses)
        try:
            # Netlink work runs off the loop so forwarding goes on meanwhile.
            tap = await self.loop.run_in_executor(
                None, Tap, netns, ifname, mac, mtu or net.mtu, addresses, self._offloads(), gw)
        finally:
            del self._pending[name]
        return self._register(name, netns, net, mac, addresses, tap, secured, attachment, ifname,
                              mtu)

    def _register(self, name, netns, net, mac, addresses, tap, secured, attachment=None,
                  ifname=None, mtu=None) -> Port:
        try:
            port_id = self.dp.add_port(tap.fileno(), self.network_ids[net.name], tap.vnet_hdr)
        except OverflowError as e:
            tap.close()
            raise TapError(str(e), 507) from None
        if secured:
            self.dp.set_port_security(port_id, int(mac.replace(":", ""), 16),
                                      [int(a.ip) for a in addresses])
        port = Port(name, netns, ifname or net.host_port, net, mac, addresses, tap, port_id,
                    mtu or net.mtu, secured, attachment)
        self.ports[name] = port
        self.loop.add_reader(tap.fileno(), self._readable, port)
        log.info("port %s added: %s in %s, network %s, mac %s%s%s", name, port.ifname,
                 netns or "the host namespace", net.name, mac,
                 "".join(f", {a}" for a in addresses), ", port security" if secured else "")
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
        if port.is_host:
            raise TapError(f"port {name!r} is the host port of network {port.network.name!r}; "
                           "it comes and goes with the config", 409)
        self.detach_port(port)

    def detach_port(self, port: Port):
        """Remove any port, the host port too (remove_port refuses that)."""
        name = port.name
        self.loop.remove_reader(port.tap.fileno())
        self.dp.remove_port(port.port_id)
        port.tap.close()
        del self.ports[name]
        log.info("port %s removed", name)

    def close(self):
        for port in list(self.ports.values()):
            self.detach_port(port)
        if self.tunnel:
            self.loop.remove_reader(self.tunnel.rx.fileno())
            self.tunnel.close()
        self.ipam.close()

    # ---------------------------------------------------------- inspection

    def port_info(self, port: Port) -> dict:
        return {"name": port.name, "netns": port.netns or "(host)", "ifname": port.ifname,
                "network": port.network.name, "mac": port.mac,
                "addresses": [str(a) for a in port.addresses], "mtu": port.mtu,
                "state": port.state, "id": port.port_id, "offloads": port.tap.offloads,
                "port_security": port.secured,
                "container": "/".join(port.attachment) if port.attachment else None,
                "counters": self.dp.port_counters(port.port_id)}

    def _network_id(self, name: str | None) -> int:
        return self.network_ids[self.network(name).name] if name else 0

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
