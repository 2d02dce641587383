"""The control plane's model of the switch: networks, ports and the data
plane that forwards between them. The API calls these methods; only they
change data-plane state, through the Datapath's small API."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import re
import sqlite3
import time
from dataclasses import dataclass, field

from . import __version__
from ._fastpath import (
    MAX_NETWORK_IDS,
    PEER_SLOTS,
    PORT_PEER_BASE,
    PORT_TUNNEL,
    Datapath,
)
from .capture import Captures
from .config import Config, ConfigError, NetworkConfig, node_address
from .hooks import Hooks
from .ipam import Ipam, gateway
from .netns import fd_identity, netns_id
from .state import PortRecord, State, StateInUse, Taken
from .tap import (
    OFFLOADS_ALL,
    OFFLOADS_TCP,
    NamespaceGone,
    Tap,
    TapError,
    check_ifname,
    normalize_mac,
    pod_namespace,
    random_mac,
    set_mtu,
)
from .tunnel import Tunnel, ip_str, ip_to_int

log = logging.getLogger("vswitch.switch")

# Config keys a reload cannot change (a restart can).
FIXED_ON_RELOAD = {"node_name": "node.name", "mode": "node.mode", "socket": "node.socket",
                   "state_dir": "node.state_dir", "log_format": "node.log_format",
                   "fdb_max_entries": "fdb.max_entries", "batch": "datapath.batch",
                   "offloads": "datapath.offloads", "hooks": "[[hook]]"}
FIXED_NETWORK_KEYS = ("vni", "subnet", "block", "gateway", "host_port")


class ReloadError(Exception):
    pass


# Per-port rate limits, from the switch's side: ingress is what the port
# sends into the switch (the pod's upload), egress what the switch writes to it.
RATE_KEYS = ("ingress_rate", "ingress_burst", "egress_rate", "egress_burst")


MAX_RATE = 10**13           # bits/s or bits: 10 Tbit/s is more than any port moves
PORT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FDB_SWEEP_SLOTS = 65536     # FDB slots the expiry sweep looks at per housekeeping step


def check_rates(rates) -> dict:
    """Rate limits: known keys, integers 0..MAX_RATE (0: none)."""
    if not isinstance(rates, dict):
        raise TapError("rates must be an object of rate limits")
    for key, value in rates.items():
        if key not in RATE_KEYS:
            raise TapError(f"unknown rate {key!r} (known: {', '.join(RATE_KEYS)})")
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_RATE:
            raise TapError(f"{key} must be an integer 0..{MAX_RATE} (bits/s or bits), "
                           f"got {value!r}")
    return {k: v for k, v in rates.items() if v}


def check_peer(ip, own=None) -> ipaddress.IPv4Address:
    """A peer's VTEP address: a unicast IPv4 address that is not this node's."""
    try:
        addr = ipaddress.IPv4Address(ip)
    except ValueError:
        raise TapError(f"bad peer address {ip!r}: expected an IPv4 address") from None
    if not node_address(addr):
        raise TapError(f"bad peer address {ip}: not a unicast address a node can have")
    if own is not None and addr == own:
        raise TapError(f"{ip} is this node's own VTEP address")
    return addr


@dataclass
class Port:
    name: str
    netns: str
    ifname: str
    network: NetworkConfig
    mac: str
    addresses: list[ipaddress.IPv4Interface]
    tap: Tap | None         # None: a recorded port that could not be restored
    port_id: int
    mtu: int
    secured: bool = False   # port security: bound to its MAC and addresses
    attachment: tuple[str, str] | None = None   # (container id, ifname) for CNI ports
    netns_id: tuple[int, int] | None = None     # the namespace's (st_dev, st_ino)
    rates: dict = field(default_factory=dict)    # RATE_KEYS -> bits/s or bits
    state: str = "up"       # "lost" once its device or namespace disappeared under us
    final_counters: dict | None = None          # once lost: its counters at that moment
    error: str | None = None                    # why it is lost, when it never came up

    @property
    def is_host(self) -> bool:
        return self.netns is None


class Switch:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop):
        self.config = config
        self.loop = loop
        self.dp = Datapath(config.fdb_max_entries, config.aging_time, config.batch,
                           config.busy_poll_us, config.fdb_max_per_port, config.fdb_max_per_peer)
        # Data-plane network ids: 1.. in config order.
        self.network_ids = {n.name: i + 1 for i, n in enumerate(config.networks)}
        for net in config.networks:
            self.dp.set_network(self.network_ids[net.name], net.vni, net.mtu)
        self.ports: dict[str, Port] = {}
        # Ports being created (netlink work in a thread): name -> (network, addresses, MAC).
        self._pending: dict[str, tuple[NetworkConfig, list[ipaddress.IPv4Interface], str]] = {}
        try:
            self.state = State(config.state_dir)
        except StateInUse as e:
            raise ConfigError("node.state_dir", str(e)) from None
        except (OSError, sqlite3.Error) as e:
            raise ConfigError("node.state_dir", f"cannot open the state database: {e}") from None
        self.ipam = Ipam(self.state)
        self.captures = Captures(self)
        self.hooks: Hooks | None = None
        self.tunnel: Tunnel | None = None
        try:
            if config.overlay:
                self._start_tunnel()
        except BaseException:
            self.close()
            raise
        loop.add_reader(self.dp.fileno(), self._poll)
        self.started = time.monotonic()

    async def start(self):
        """Make (or re-open) the host ports, and re-attach the pod ports a
        previous run left (netlink work, in threads)."""
        for i, net in enumerate(self.config.networks):
            if net.host_port:
                await self._add_host_port(i, net)
        for name, record in await self.state.run(self.state.ports):
            try:
                if isinstance(record, Exception):
                    raise TapError(f"unreadable record: {record}")
                await self._restore(record)
            except Exception as e:     # one bad record must not keep every other pod down
                log.error("port %s: cannot re-attach, marked lost: %s", name, e)
                self.ports[name] = self._unrestored(name, record, str(e))
        self.hooks = Hooks(self.captures, self.config.hooks)
        await self.hooks.start()

    def _unrestored(self, name: str, rec: PortRecord | Exception, error: str) -> Port:
        """A recorded port that did not come back: listed as lost (with the
        error) until deleted; its record stays for the next start."""
        ok = isinstance(rec, PortRecord)
        net = (self.config.network(rec.network) if ok else None) or self.config.networks[0]
        counters = dict.fromkeys(("rx_packets", "rx_bytes", "rx_dropped", "tx_packets",
                                  "tx_bytes", "tx_dropped"), 0)
        return Port(name, rec.netns if ok else "?", rec.ifname if ok else "?", net,
                    rec.mac if ok else "?", [], None, -1, 0, attachment=rec.attachment if ok
                    else None, state="lost", final_counters=counters, error=error)

    async def _restore(self, rec: PortRecord):
        """Re-open a recorded port's TAP in its namespace; forget the port
        (and release its address) if the namespace or network is gone, or
        another namespace is at its path now."""
        net = self.config.network(rec.network)
        addresses = [ipaddress.IPv4Interface(a) for a in rec.addresses]
        try:
            if net is None:
                raise NamespaceGone(f"network {rec.network} is gone")
            await self.create_port(rec.name, rec.netns, rec.ifname, net, rec.mac, addresses,
                                   rec.secured, rec.attachment, rec.mtu, reattach=True,
                                   rates=rec.rates, netns_identity=rec.netns_id)
        except NamespaceGone as e:
            log.info("port %s: %s; forgetting it", rec.name, e)
            await self.state.run(self.state.delete_port, rec.name)
            if rec.attachment:
                await self.state.run(self.ipam.release, *rec.attachment)

    # ------------------------------------------------------------- overlay

    def _start_tunnel(self):
        ov = self.config.overlay
        try:
            self.tunnel = Tunnel(ov.vtep_ip, ov.udp_port)
        except OSError as e:       # the address is not this node's, or the port is in use
            raise ConfigError("overlay.vtep_ip", f"cannot bind {ov.vtep_ip}:{ov.udp_port}: "
                              f"{e.strerror}") from None
        self.dp.set_tunnel(self.tunnel.rx.fileno(), self.tunnel.senders(), ov.udp_port,
                           ov.underlay_mtu, ov.learn_peers, ip_to_int(ov.vtep_ip),
                           ov.max_learned_peers)
        for peer in ov.peers:
            for net_id in self.network_ids.values():
                self.dp.add_peer(ip_to_int(peer), net_id)

    def _need_overlay(self):
        if self.tunnel is None:
            raise TapError("peers need overlay mode (node.mode = \"overlay\")", 409)

    @staticmethod
    def _peer_ip(ip: str) -> int:
        return ip_to_int(check_peer(ip))

    def add_peer(self, ip: str, network: str | None = None) -> dict:
        self._need_overlay()
        value = ip_to_int(check_peer(ip, self.config.overlay.vtep_ip))
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
        name = self._network_name
        return [{"ip": ip_str(ip), "networks": [name(n) for n in nets], "counters": counters,
                 "learned": learned}
                for ip, nets, counters, learned in self.dp.peer_list()]

    def _network_name(self, net_id: int) -> str:
        """The name of a data-plane network id; reports show what the data
        plane holds even if it is no longer (or never was) configured."""
        return next((n for n, i in self.network_ids.items() if i == net_id), f"#{net_id}")

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
        except ValueError as e:
            raise TapError(str(e), 409) from None
        except OverflowError as e:
            raise TapError(str(e), 507) from None
        return {"mac": normalize_mac(mac), "peer": peer}

    def fdb_del(self, mac: str, network: str | None = None):
        if not self.dp.fdb_delete(*self._fdb_key(mac, network)):
            raise TapError(f"no FDB entry for {mac}", 404)

    # --------------------------------------------------------------- reload

    def check_reload(self, new: Config):
        """ReloadError if `new` changes what only a restart can."""
        old = self.config
        for attr, key in FIXED_ON_RELOAD.items():
            if getattr(new, attr) != getattr(old, attr):
                raise ReloadError(f"{key} cannot change on reload; restart vswitchd for that")
        if old.overlay and (new.overlay.vtep_ip, new.overlay.udp_port) != \
                (old.overlay.vtep_ip, old.overlay.udp_port):
            raise ReloadError("overlay.vtep_ip and overlay.udp_port cannot change on reload")
        for i, net in enumerate(new.networks):
            before = old.network(net.name)
            for key in FIXED_NETWORK_KEYS if before else ():
                if getattr(net, key) != getattr(before, key):
                    raise ReloadError(f"network[{i}].{key} of {net.name!r} cannot change on "
                                      "reload (pods are addressed from it); remove the network "
                                      "in one reload and add it back in another")
        if len({*self.network_ids, *(n.name for n in new.networks)}) >= MAX_NETWORK_IDS:
            raise ReloadError("too many networks")

    async def reload(self, new: Config) -> list[str]:
        """Apply a new config without touching what did not change: networks
        come and go (with their ports and host port), MTUs, peers, aging and
        the underlay MTU change in place. Refused as a whole (ReloadError)
        if it changes what only a restart can."""
        self.check_reload(new)
        old, changes = self.config, []
        for net in old.networks:
            if new.network(net.name) is None:
                await self._remove_network(net)
                changes.append(f"network {net.name} removed")
        self.config = new
        for port in self.ports.values():        # the ports' networks, as now configured
            port.network = new.network(port.network.name) or port.network
        for i, net in enumerate(new.networks):
            before = old.network(net.name)
            if before is None:
                await self._add_network(i, net)
                changes.append(f"network {net.name} added")
            elif before.mtu != net.mtu:
                await self._set_mtu(net)
                changes.append(f"network {net.name} mtu {before.mtu} -> {net.mtu}")
        if new.aging_time != old.aging_time:
            self.dp.aging_time = new.aging_time
            changes.append(f"aging_time {old.aging_time:g} -> {new.aging_time:g}")
        if new.busy_poll_us != old.busy_poll_us:
            self.dp.busy_poll_us = new.busy_poll_us
            changes.append(f"busy_poll_us {old.busy_poll_us:g} -> {new.busy_poll_us:g}")
        if new.overlay:
            changes += self._reload_overlay(old.overlay, new.overlay)
        return changes

    async def _remove_network(self, net: NetworkConfig):
        for port in [p for p in self.ports.values() if p.network.name == net.name]:
            await self.detach_port(port)
        for alloc in await self.state.run(self.ipam.list, net.name):
            await self.state.run(self.ipam.release, alloc.container_id, alloc.ifname)
        self.dp.remove_network(self.network_ids.pop(net.name))

    async def _add_network(self, index: int, net: NetworkConfig):
        net_id = min(set(range(1, MAX_NETWORK_IDS)) - set(self.network_ids.values()))
        self.dp.set_network(net_id, net.vni, net.mtu)
        self.network_ids[net.name] = net_id
        if self.tunnel:
            for peer in self.config.overlay.peers:
                self.dp.add_peer(ip_to_int(peer), net_id)
        if net.host_port:
            try:
                await self._add_host_port(index, net)
            except ConfigError as e:
                log.error("host port of new network %s: %s", net.name, e)

    async def _set_mtu(self, net: NetworkConfig):
        """The network's MTU, in the data plane and on its ports' interfaces."""
        self.dp.set_network(self.network_ids[net.name], net.vni, net.mtu)
        for port in [p for p in self.ports.values() if p.network.name == net.name]:
            try:
                await self.loop.run_in_executor(None, set_mtu, port.netns, port.ifname, net.mtu)
            except TapError as e:
                log.warning("port %s: %s", port.name, e)
                continue
            port.mtu = net.mtu
            if not port.is_host:
                await self.state.run(self.state.save_port, self._record(port))

    def _reload_overlay(self, old, new) -> list[str]:
        changes = []
        tunable = ("underlay_mtu", "learn_peers", "max_learned_peers", "peer_aging_time")
        if any(getattr(new, k) != getattr(old, k) for k in tunable):
            # Turning learn_peers off (or lowering nothing) forgets learned peers in the data plane.
            self.dp.set_tunnel(self.tunnel.rx.fileno(), self.tunnel.senders(), new.udp_port,
                               new.underlay_mtu, new.learn_peers, ip_to_int(new.vtep_ip),
                               new.max_learned_peers)
            changes.append(", ".join(f"{k} {getattr(new, k)}" for k in tunable))
        for ip in set(old.peers) - set(new.peers):
            self.dp.remove_peer(ip_to_int(ip))
            changes.append(f"peer {ip} removed")
        for ip in sorted(set(new.peers) - set(old.peers)):
            for net_id in self.network_ids.values():
                self.dp.add_peer(ip_to_int(ip), net_id)
            changes.append(f"peer {ip} added")
        return changes

    # ---------------------------------------------------------------- ports

    async def _add_host_port(self, index: int, net: NetworkConfig):
        """The network's gateway address on a TAP left in our own namespace."""
        address = ipaddress.IPv4Interface(f"{gateway(net)}/{net.subnet.prefixlen}")
        # The same MAC every start, so that pods' ARP entries for the gateway stay right.
        digest = hashlib.sha256(f"{self.config.node_name}/{net.name}".encode()).digest()
        mac = "02:" + digest[:5].hex(":")
        try:
            tap = await self.loop.run_in_executor(
                None, Tap, None, net.host_port, mac, net.mtu, [address], self._offloads(), None, True)
        except TapError as e:
            raise ConfigError(f"network[{index}].host_port", str(e)) from None
        await self.loop.run_in_executor(None, refuse_router_messages, net.host_port)
        # The host routes for others: no port security on its port, and only
        # it may send Router Advertisements.
        self._register(f"host-{net.name}", None, net, mac, [address], tap, secured=False,
                       router=True)

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
        return addr

    def addresses_in_use(self, net: NetworkConfig) -> dict[str, ipaddress.IPv4Address]:
        """Port name -> address, for the ports of a network, made or being made."""
        ports = [(p.name, p.network, p.addresses) for p in self.ports.values()]
        ports += [(name, n, addresses) for name, (n, addresses, _) in self._pending.items()]
        return {name: a.ip for name, n, addresses in ports if n.name == net.name for a in addresses}

    def mac_in_use(self, net: NetworkConfig, mac: str) -> bool:
        """Whether a port of the network, made or being made, has mac, or the
        FDB knows it behind a peer (a pod of another node). Allocations and
        port records are checked with the record, atomically (create_port)."""
        if any(p.mac == mac and p.network.name == net.name for p in self.ports.values()) or \
                any(m == mac and n.name == net.name for n, _, m in self._pending.values()):
            return True
        net_id = self.network_ids.get(net.name)
        return net_id is not None and \
            self.dp.fdb_lookup(net_id, int(mac.replace(":", ""), 16)) >= PORT_PEER_BASE

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
        if self.mac_in_use(net, mac):
            raise TapError(f"MAC {mac} is already used in network {net.name!r}", 409)
        secured = bool(addresses) if port_security is None else port_security
        return await self.create_port(name, netns, ifname, net, mac, addresses, secured)

    @staticmethod
    def _record(port: Port) -> PortRecord:
        return PortRecord(port.name, port.netns, port.ifname, port.network.name, port.mac,
                          tuple(str(a) for a in port.addresses), port.mtu, port.secured,
                          port.attachment, port.rates, port.netns_id)

    def name_taken(self, name: str) -> bool:
        return name in self.ports or name in self._pending

    async def create_port(self, name: str, netns: str, ifname: str, net: NetworkConfig, mac: str,
                          addresses: list[ipaddress.IPv4Interface], secured: bool,
                          attachment: tuple[str, str] | None = None, mtu: int | None = None,
                          reattach: bool = False, rates: dict | None = None,
                          netns_identity: tuple[int, int] | None = None) -> Port:
        """Make the TAP in the pod's namespace (reattach: open the one a
        previous run left, in the namespace of identity netns_identity) and
        attach it to the data plane. Everything is validated before anything
        is made; the port is recorded before its TAP exists, so that a crash
        in between leaves a record the next start completes, never a TAP
        nobody knows; a failure after the TAP exists undoes it."""
        if self.name_taken(name):
            raise TapError(f"port {name!r} already exists", 409)
        check_ifname(ifname)
        rates = check_rates(rates or {})
        if not 68 <= (mtu or net.mtu) <= 65535 or len(addresses) > MAX_PORT_ADDRESSES:
            raise TapError(f"bad port record: mtu {mtu}, {len(addresses)} addresses")
        gw = self.default_gateway(net) if addresses else None
        mtu = mtu or net.mtu
        if netns_identity is None and netns is not None:
            with pod_namespace(netns) as fd:        # Tap checks it is still this one
                netns_identity = fd_identity(fd)
        record = PortRecord(name, netns, ifname, net.name, mac, tuple(str(a) for a in addresses),
                            mtu, secured, attachment, rates, netns_identity)
        self._pending[name] = (net, addresses, mac)
        tap = None
        try:
            try:
                await self.state.run(self.state.save_port, record, not reattach)
            except Taken as e:
                raise TapError(str(e), 409) from None
            # Netlink work runs off the loop so forwarding goes on meanwhile.
            tap = await self.loop.run_in_executor(
                None, Tap, netns, ifname, mac, mtu, addresses, self._offloads(), gw, reattach,
                netns_identity)
            # A reload may have removed the network while the TAP was being made.
            net = self.config.network(net.name) or net
            if net.name not in self.network_ids:
                raise TapError(f"network {net.name!r} was removed while port {name!r} was "
                               "being made", 409)
            port = self._register(name, netns, net, mac, addresses, tap, secured, attachment,
                                  ifname, mtu, "re-attached" if reattach else "added")
            if rates:
                self._apply_rates(port, rates)
            return port
        except BaseException:
            if name in self.ports:
                self.dp.remove_port(self.ports.pop(name).port_id)
            if tap is not None:
                tap.close(remove=not reattach)
            if not reattach:
                await self.state.run(self.state.delete_port, name)
            raise
        finally:
            del self._pending[name]

    async def set_rates(self, name: str, rates: dict) -> Port:
        """Change a port's rate limits (missing keys keep their value)."""
        port = self.port(name)
        if port.state != "up":
            raise TapError(f"port {name!r} is {port.state}", 409)
        if not isinstance(rates, dict):
            raise TapError("rates must be an object of rate limits")
        self._apply_rates(port, check_rates({**port.rates, **rates}))
        if not port.is_host:
            await self.state.run(self.state.save_port, self._record(port))
        log.info("port %s: rates %s", name, port.rates or "unlimited")
        return port

    def _apply_rates(self, port: Port, rates: dict):
        self.dp.set_port_rates(port.port_id, *(rates.get(k, 0) for k in RATE_KEYS))
        port.rates = {k: v for k, v in rates.items() if v}

    def _register(self, name, netns, net, mac, addresses, tap, secured, attachment=None,
                  ifname=None, mtu=None, how="added", router=False) -> Port:
        try:
            port_id = self.dp.add_port(tap.fileno(), self.network_ids[net.name], tap.vnet_hdr,
                                       router)
        except OverflowError as e:
            tap.close()
            raise TapError(str(e), 507) from None
        port = Port(name, netns, ifname or net.host_port, net, mac, addresses, tap, port_id,
                    mtu or net.mtu, secured, attachment, tap.netns_id)
        self.ports[name] = port
        mac_value = int(mac.replace(":", ""), 16)
        try:
            if secured:
                self.dp.set_port_security(port_id, mac_value, [int(a.ip) for a in addresses])
            elif router:            # the gateway's MAC: nobody else may take it either
                self.dp.pin_mac(port_id, mac_value)
        except (ValueError, OverflowError) as e:
            raise TapError(f"port {name!r}: {e}", 409) from None
        log.info("port %s %s: %s in %s, network %s, mac %s%s%s", name, how, port.ifname,
                 netns or "the host namespace", net.name, mac,
                 "".join(f", {a}" for a in addresses), ", port security" if secured else "")
        return port

    def _offloads(self) -> tuple[str, ...]:
        if not self.config.offloads:
            return ()
        # Superframes bound for the tunnel are segmented before encapsulation;
        # the data plane does that for TCP, not (yet) for UDP.
        return OFFLOADS_TCP if self.tunnel else OFFLOADS_ALL

    def _poll(self):
        """The data plane has frames: it serves every ready fd in C."""
        if self.dp.poll():
            by_id = {p.port_id: p for p in self.ports.values() if p.state != "lost"}
            for port_id in self.dp.take_failed():
                if port_id == PORT_TUNNEL:
                    log.error("VXLAN socket failed; tunnel traffic stops")
                elif port_id in by_id:
                    self._lose(by_id[port_id], "device gone")

    def check_namespaces(self):
        """Ports whose namespace was deleted (or replaced under the same
        path) are lost. Our fd holds a reference on the namespace, so the
        kernel would keep it, and the pod's interface, alive: let go."""
        for port in list(self.ports.values()):
            if port.state == "up" and not port.is_host and netns_id(port.netns) != port.netns_id:
                self._lose(port, f"namespace {port.netns} gone")

    def _lose(self, port: Port, why: str):
        """Stop forwarding for a port whose pod is gone; it stays listed as
        lost (with its last counters) until deleted."""
        port.final_counters = self.dp.port_counters(port.port_id)
        self.dp.remove_port(port.port_id)
        port.tap.close(remove=True)
        port.state = "lost"
        log.warning("port %s: %s, no longer forwarding", port.name, why)

    def port(self, name: str) -> Port:
        try:
            return self.ports[name]
        except KeyError:
            raise TapError(f"no port {name!r}", 404) from None

    async def remove_port(self, name: str):
        port = self.port(name)
        if port.is_host:
            raise TapError(f"port {name!r} is the host port of network {port.network.name!r}; "
                           "it comes and goes with the config", 409)
        await self.detach_port(port)

    def _take_off(self, port: Port, remove: bool):
        if port.state != "lost":
            self.dp.remove_port(port.port_id)
            port.tap.close(remove)
        del self.ports[port.name]

    async def detach_port(self, port: Port):
        """Take any port off the switch (the host port too, which
        remove_port refuses), and delete its TAP and record."""
        self._take_off(port, True)
        if not port.is_host:
            await self.state.run(self.state.delete_port, port.name)
        log.info("port %s removed", port.name)

    def close(self, remove_ports: bool = False):
        """Stop switching. The pods' TAPs stay (and keep their addresses and
        routes) for the next start, unless remove_ports."""
        if self.hooks:
            self.hooks.close()
        for port in list(self.ports.values()):
            self._take_off(port, remove_ports)
            if remove_ports and not port.is_host:
                self.state.run_sync(self.state.delete_port, port.name)
        self.loop.remove_reader(self.dp.fileno())
        if self.tunnel:
            self.tunnel.close()
        self.state.close()

    # ---------------------------------------------------------- inspection

    def capture_port_id(self, name: str) -> int:
        """The data-plane id of a port name, or of "vxlan:IP" (a peer)."""
        if name.startswith("vxlan:"):
            wanted = self._peer_ip(name[6:])
            for index in range(PEER_SLOTS):
                if self.dp.peer_ip(index) == wanted:
                    return PORT_PEER_BASE + index
            raise TapError(f"no peer {name[6:]}", 404)
        return self.port(name).port_id

    def trace(self, port_name: str, frame: bytes) -> dict:
        """Where a frame from the port would go and why (nothing is learned
        or sent): the data plane's steps, with names for ids."""
        port = self.port(port_name)
        if port.state != "up":
            raise TapError(f"port {port_name!r} is {port.state}", 409)
        label = self.capture_port_label
        steps = self.dp.trace(port.port_id, frame)
        for step in steps:
            for key in ("port", "peer", "known_at"):
                if isinstance(step.get(key), int):
                    step[key] = label(step[key])
            for key in ("ports", "peers"):
                if key in step:
                    step[key] = [label(x) for x in step[key]]
            if "network" in step:
                step["network"] = self._network_name(step["network"])
        return {"port": port_name, "frame": frame.hex(), "steps": steps}

    def capture_port_label(self, port_id: int) -> str:
        if port_id == PORT_TUNNEL:
            return "vxlan"
        if port_id >= PORT_PEER_BASE:
            return f"vxlan:{ip_str(self.dp.peer_ip(port_id - PORT_PEER_BASE))}"
        for port in self.ports.values():
            if port.port_id == port_id and port.state == "up":
                return port.name
        return f"#{port_id}"

    def port_info(self, port: Port) -> dict:
        return {"name": port.name, "netns": port.netns or "(host)", "ifname": port.ifname,
                "network": port.network.name, "mac": port.mac,
                "addresses": [str(a) for a in port.addresses], "mtu": port.mtu,
                "state": port.state, "id": port.port_id,
                "offloads": port.tap.offloads if port.tap else [], "error": port.error,
                "port_security": port.secured, "rates": port.rates,
                "container": "/".join(port.attachment) if port.attachment else None,
                "counters": port.final_counters or self.dp.port_counters(port.port_id)}

    def _network_id(self, name: str | None) -> int:
        return self.network_ids[self.network(name).name] if name else 0

    def fdb(self, network: str | None = None) -> list[dict]:
        by_id = {p.port_id: p.name for p in self.ports.values()}
        entries = self.dp.fdb_entries(self._network_id(network))
        return sorted(({"network": self._network_name(net), "mac": mac,
                        "port": by_id.get(pid, f"#{pid}") if peer is None else f"vxlan:{ip_str(peer)}",
                        "age": round(age, 1), "static": static, "pinned": pinned}
                       for net, mac, pid, peer, age, static, pinned in entries),
                      key=lambda e: (e["network"], e["port"], e["mac"]))

    def fdb_flush(self, network: str | None = None) -> int:
        return self.dp.fdb_flush(self._network_id(network))

    def expire_fdb(self) -> int:
        """One slice of the FDB's expiry sweep (a whole sweep of a large
        table would hold up forwarding)."""
        return self.dp.fdb_expire(FDB_SWEEP_SLOTS)

    def expire_peers(self):
        if self.tunnel and self.config.overlay.learn_peers:
            for ip in self.dp.expire_peers(self.config.overlay.peer_aging_time):
                log.info("learned peer %s aged out", ip_str(ip))

    def stats(self) -> dict:
        counters = self.dp.counters()
        counters["ports"] = {p.name: p.final_counters or self.dp.port_counters(p.port_id)
                             for p in self.ports.values()}
        counters["peers"] = self.peers()
        counters["capture"] = self.captures.stats()
        counters["hooks"] = self.hooks.stats() if self.hooks else []
        return counters

    def status(self) -> dict:
        fdb = self.dp.counters()["fdb"]
        return {"node": self.config.node_name, "mode": self.config.mode,
                "version": __version__, "uptime": round(time.monotonic() - self.started, 1),
                "ports": len(self.ports), "networks": [n.name for n in self.config.networks],
                "fdb_entries": fdb["entries"], "aging_time": self.dp.aging_time,
                "vtep": str(self.config.overlay.vtep_ip) if self.config.overlay else None,
                "peers": len(self.peers())}


MAX_PORT_ADDRESSES = 8      # as many as port security binds to a port


def refuse_router_messages(ifname: str):
    """The host port's stack takes no Router Advertisements or Redirects
    (defence in depth behind the data plane's RA guard): pods must never
    set the node's routes."""
    for key in ("accept_ra", "accept_redirects"):
        try:
            with open(f"/proc/sys/net/ipv6/conf/{ifname}/{key}", "w") as f:
                f.write("0")
        except FileNotFoundError:       # no IPv6 on this interface: nothing to refuse
            return
