"""Overlay mode: the tunnel (its encapsulation's sockets, vswitch/encap.py),
the peers each network floods to, and static FDB entries behind peers."""

from __future__ import annotations

import ipaddress
import logging
from typing import Callable

from .config import Config, ConfigError, NetworkConfig, OverlayConfig, node_address
from .datapath import DataPlane, TunnelSettings
from .errors import Conflict, InvalidRequest, NotFound
from .tap import normalize_mac
from .tunnel import Tunnel

log = logging.getLogger("vswitch.overlay")


def check_peer(ip, own) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """A peer's VTEP address: a unicast address of the family of own (this
    node's VTEP) that is not own."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise InvalidRequest(f"bad peer address {ip!r}: expected an IPv{own.version} "
                             "address") from None
    if addr.version != own.version:
        raise InvalidRequest(f"bad peer address {ip}: the underlay is IPv{own.version} "
                             f"(vtep_ip {own})")
    if not node_address(addr):
        raise InvalidRequest(f"bad peer address {ip}: not a unicast address a node can have")
    if addr == own:
        raise InvalidRequest(f"{ip} is this node's own VTEP address")
    return addr


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class PeerTable:
    """The one writer of the data plane's configured peers. Each peer is
    held by the sources that want it: "config" (overlay.peers), "api"
    (peer add), "node:NAME" (a cluster node's VTEP); it goes when the last
    lets go, so that no source removes a peer another still needs. Learned
    peers (learn_peers) are the data plane's own."""

    def __init__(self, dataplane: DataPlane):
        self.dataplane = dataplane
        # peer -> source -> the networks it floods (None: every network)
        self.holds: dict[Address, dict[str, tuple[str, ...] | None]] = {}

    def hold(self, addr: Address, source: str, networks: list[str] | None = None):
        self.holds.setdefault(addr, {})[source] = None if networks is None else tuple(networks)
        self.dataplane.add_peer(addr, networks)

    def release(self, addr: Address, source: str):
        """source no longer wants addr: it goes if nobody else does."""
        held = self.holds.get(addr, {})
        if held.pop(source, False) is not False and not held:
            del self.holds[addr]
            self.dataplane.remove_peer(addr)

    def remove(self, addr: Address) -> bool:
        """The operator's word (peer del): gone, whoever held it."""
        self.holds.pop(addr, None)
        return self.dataplane.remove_peer(addr)

    def network_added(self, name: str):
        """A new network floods to the peers held for every network."""
        for addr, held in self.holds.items():
            if None in held.values():
                self.dataplane.add_peer(addr, [name])


class Overlay:
    """The tunnel and the peers (nothing to do in bridge mode: every
    request then says so)."""

    def __init__(self, config: Config, dataplane: DataPlane,
                 network_of: Callable[[str | None], NetworkConfig]):
        self.config = config
        self.dataplane = dataplane
        self.network_of = network_of    # a network by name (None: the default), or NotFound
        self.tunnel: Tunnel | None = None
        self.peer_table = PeerTable(dataplane)

    def start(self):
        ov = self.config.overlay
        if not ov:
            return
        try:
            self.tunnel = ov.encapsulation.open(ov.vtep_ip, ov.udp_port, self.dataplane.workers)
        except OSError as e:       # the address is not this node's, or the port is in use
            raise ConfigError("overlay.vtep_ip", f"cannot bind {ov.vtep_ip}:{ov.udp_port}: "
                              f"{e.strerror}") from None
        self.set_tunnel(ov)
        for peer in ov.peers:
            self.peer_table.hold(peer, "config")

    def set_tunnel(self, ov: OverlayConfig):
        """(Re)program the data plane's tunnel; turning learn_peers off
        forgets learned peers."""
        assert self.tunnel is not None
        self.dataplane.set_tunnel(TunnelSettings(
            [s.fileno() for s in self.tunnel.rx], self.tunnel.senders(), ov.udp_port, ov.underlay_mtu,
            ov.encapsulation.outer_overhead(ov.vtep_ip.version), ov.learn_peers, ov.vtep_ip,
            ov.max_learned_peers))

    def network_added(self, name: str):
        """A new network floods to the peers held for every network too."""
        if self.tunnel:
            self.peer_table.network_added(name)

    def close(self):
        if self.tunnel:
            self.tunnel.close()

    @property
    def settings(self) -> OverlayConfig:
        """The [overlay] config (callers checked that this node has one)."""
        assert self.config.overlay is not None
        return self.config.overlay

    def _need_overlay(self):
        if self.tunnel is None:
            raise Conflict("peers need overlay mode (node.mode = \"overlay\")")

    # ---------------------------------------------------------------- peers

    def add_peer(self, ip: str, network: str | None = None) -> dict:
        self._need_overlay()
        addr = check_peer(ip, self.settings.vtep_ip)
        self.peer_table.hold(addr, "api", [self.network_of(network).name] if network else None)
        log.info("peer %s added for %s", addr, network or "all networks")
        return self.peer(ip)

    def del_peer(self, ip: str):
        self._need_overlay()
        if not self.peer_table.remove(check_peer(ip, self.settings.vtep_ip)):
            raise NotFound(f"no peer {ip}")
        log.info("peer %s removed", ip)

    def peers(self) -> list[dict]:
        return self.dataplane.peers() if self.tunnel else []

    def peer_count(self) -> int:
        return self.dataplane.peer_count() if self.tunnel else 0

    def peer(self, ip: str) -> dict:
        found = self.dataplane.peers(check_peer(ip, self.settings.vtep_ip)) if self.tunnel else []
        if not found:
            raise NotFound(f"no peer {ip}")
        return found[0]

    def peer_port_id(self, ip: str) -> int:
        """The data-plane id of the peer at ip (as in capture records)."""
        if self.tunnel is None:
            raise NotFound(f"no peer {ip} (this node is in bridge mode)")
        port_id = self.dataplane.peer_port_id(check_peer(ip, self.settings.vtep_ip))
        if port_id is None:
            raise NotFound(f"no peer {ip}")
        return port_id

    def expire_peers(self):
        if self.tunnel and self.settings.learn_peers:
            for ip in self.dataplane.expire_peers(self.settings.peer_aging_time):
                log.info("learned peer %s aged out", ip)

    # ------------------------------------------------------------ static FDB

    def fdb_add(self, mac: str, peer: str, network: str | None = None) -> dict:
        """A static entry: mac lives behind peer (never ages, not re-learned)."""
        self._need_overlay()
        net = self.network_of(network)
        mac = normalize_mac(mac)
        self.dataplane.fdb_add_remote(net.name, mac, check_peer(peer, self.settings.vtep_ip))
        return {"mac": mac, "peer": peer}
