"""The datapath boundary: the one module that imports the C extension
(vswitch._fastpath, typed in _fastpath.pyi). Everything above it speaks
names (networks, ports by id, peers by address, MACs as text) and the
project's errors; this module owns the maps from names to the data plane's
ids and turns the extension's ValueError, KeyError and OverflowError into
errors.py's. Tests and benchmarks that drive the C code directly import it
from here as well."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from . import protocol
from ._fastpath import (
    DROP_NAMES,
    PEER_SLOTS,
    PORT_PEER_BASE,
    PORT_TUNNEL,
    Datapath,
    conntrack_cost,
    decap_cost,
    encap_cost,
    learn_sources,
    pipeline_cost,
    segment_cost,
)
from .config import Config
from .errors import Busy, Conflict, Exhausted, InvalidRequest, NotFound
from .protocol import address_key, address_str, link_local

__all__ = ["DataPlane", "Datapath", "new_datapath", "DROP_NAMES", "PORT_PEER_BASE", "PORT_TUNNEL",
           "conntrack_cost", "decap_cost", "encap_cost", "learn_sources", "pipeline_cost", "segment_cost",
           "mac_value", "address_key", "address_str"]


def new_datapath(**overrides) -> Datapath:
    """A Datapath with the daemon's default settings (Config's), but for
    overrides: for rigs, benches and fuzzers."""
    return Datapath(**{**Config(node_name="-").datapath_settings(), **overrides})


def mac_value(mac: str) -> int:
    """A MAC in text (aa:bb:..., already normalized) as the data plane's integer."""
    return int(mac.replace(":", ""), 16)


PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
CT_NO_PORT = 0xFFFF             # a connection's in/out port beyond the tunnel (_conntrack.pxd)


def ct_state(proto: int, flags: int) -> str:
    """A connection's state from its flags (_conntrack.pxd: CT_*)."""
    if proto == 6 and flags & 16:
        return "reset"
    if proto == 6 and flags & 4 and flags & 8:
        return "closing"
    if proto == 6 and flags & 12:
        return "fin_wait"
    return "established" if flags & 2 else "new"


@dataclass(frozen=True)
class TunnelSettings:
    rx_fds: list[int]                 # one receiving socket per worker (SO_REUSEPORT)
    senders: list[list[tuple[int, int]]]      # a pool of (fd, source port) per worker
    udp_port: int
    underlay_mtu: int
    outer_overhead: int               # what the encapsulation puts around a frame (encap.py)
    learn_peers: bool
    vtep_ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    max_learned_peers: int


def own_addresses(mac: str, addresses: Iterable[ipaddress.IPv4Interface | ipaddress.IPv6Interface]
                  ) -> tuple[list[int], list[int]]:
    """A port's IPv4 and IPv6 addresses as the data plane binds them: the
    IPv6 ones with the link-local address the kernel forms from mac (tap.py
    sets EUI-64 address generation)."""
    addresses = list(addresses)
    return ([int(a.ip) for a in addresses if a.version == 4],
            [int(a.ip) for a in addresses if a.version == 6] + [int(link_local(mac))])


class DataPlane:
    """One node's data plane, addressed by names."""

    def __init__(self, settings: dict, datapath=None):
        """settings: Datapath's arguments (Config.datapath_settings);
        datapath: another implementation of its interface (the unit tests'
        model) instead."""
        self.dp = Datapath(**settings) if datapath is None else datapath
        self.network_ids: dict[str, int] = {}
        self.policy_names: dict[int, str] = {}     # data-plane policy ids -> "namespace/name"

    # ------------------------------------------------------------- networks

    def add_network(self, name: str, vni: int, mtu: int) -> int:
        """Declare a network under the lowest free id."""
        used = set(self.network_ids.values())
        free = next((i for i in range(1, protocol.MAX_NETWORKS) if i not in used), None)
        if free is None:
            raise Exhausted("too many networks")
        self.dp.set_network(free, vni, mtu)
        self.network_ids[name] = free
        return free

    def set_mtu(self, name: str, vni: int, mtu: int):
        self.dp.set_network(self.network_ids[name], vni, mtu)

    def remove_network(self, name: str):
        """Forget a network whose ports are gone (peers' memberships, FDB)."""
        self.dp.remove_network(self.network_ids.pop(name))

    def has_network(self, name: str) -> bool:
        return name in self.network_ids

    def network_id(self, name: str | None) -> int:
        """A configured network's id; 0 (all networks) for None."""
        return self.network_ids[name] if name else 0

    def network_name(self, net_id: int) -> str:
        """The name of a data-plane network id; reports show what the data
        plane holds even if it is no longer (or never was) configured."""
        return next((n for n, i in self.network_ids.items() if i == net_id), f"#{net_id}")

    # ---------------------------------------------------------------- ports

    def add_port(self, fds: list[int], network: str, vnet_hdr: bool, router: bool) -> int:
        """A port on a TAP's queues (worker k reads the k-th)."""
        try:
            return self.dp.add_port(fds, self.network_ids[network], vnet_hdr, router)
        except OverflowError as e:
            raise Exhausted(str(e)) from None

    def remove_port(self, port_id: int):
        self.dp.remove_port(port_id)

    def secure_port(self, port_id: int, mac: str,
                    addresses: Iterable[ipaddress.IPv4Interface | ipaddress.IPv6Interface]):
        """Port security: the port may send only from mac, addresses and the
        link-local address the pod's kernel forms from mac (tap.py sets
        EUI-64 address generation), and mac is pinned to it."""
        self._pinning(self.dp.set_port_security, port_id, mac_value(mac),
                      *own_addresses(mac, addresses))

    def set_host_addresses(self, port_id: int, mac: str,
                           addresses: Iterable[ipaddress.IPv4Interface | ipaddress.IPv6Interface]):
        """The node's own addresses on its host port (and the link-local
        one its MAC gives it): what it sends from them is the node's."""
        self.dp.set_host_addresses(port_id, *own_addresses(mac, addresses))

    def pin_mac(self, port_id: int, mac: str):
        self._pinning(self.dp.pin_mac, port_id, mac_value(mac))

    @staticmethod
    def _pinning(call, *args):
        try:
            call(*args)
        except (ValueError, OverflowError) as e:
            raise Conflict(str(e)) from None

    def set_rates(self, port_id: int, rates: dict):
        self.dp.set_port_rates(port_id, *(rates.get(k, 0) for k in protocol.RATE_KEYS))

    def port_counters(self, port_id: int) -> dict:
        return self.dp.port_counters(port_id)

    def behind_peer(self, network: str, mac: str) -> bool:
        """Whether the FDB knows mac in network behind a peer."""
        net_id = self.network_ids.get(network)
        return net_id is not None and \
            self.dp.fdb_lookup(net_id, mac_value(mac)) >= PORT_PEER_BASE

    # ------------------------------------------------------ neighbour table

    def neigh_set(self, network: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, mac: str):
        """ARP requests for ip in network are answered with mac (ARP suppression)."""
        self.dp.neigh_set(self.network_ids[network], address_key(ip), mac_value(mac))

    def neigh_delete(self, network: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        net_id = self.network_ids.get(network)
        return net_id is not None and self.dp.neigh_delete(net_id, address_key(ip))

    # -------------------------------------------------- policy and conntrack

    def set_port_policy(self, port_id: int, ingress, egress):
        """A pod's compiled tables (see Datapath.set_port_policy)."""
        self.dp.set_port_policy(port_id, ingress, egress)

    def policy_changed(self):
        self.dp.policy_changed()

    def policy_name(self, policy_id: int | None) -> str | None:
        return None if not policy_id else self.policy_names.get(policy_id, f"#{policy_id}")

    def conntrack(self, port_id: int = -1, limit: int = 0) -> list[dict]:
        """Live connections in the direction they were opened."""
        out = []
        for net, proto, src, sport, dst, dport, flags, left, in_port, out_port, owner \
                in self.dp.conntrack_entries(port_id, limit):
            out.append({"network": self.network_name(net),
                        "protocol": PROTOCOL_NAMES.get(proto, str(proto)),
                        "source": address_str(src), "sport": sport,
                        "destination": address_str(dst), "dport": dport,
                        "state": ct_state(proto, flags), "expires_in": round(left, 1),
                        "in_port": None if in_port == CT_NO_PORT else in_port,
                        "out_port": None if out_port == CT_NO_PORT else out_port,
                        "charged_to": None if owner == CT_NO_PORT else owner})
        return out

    def conntrack_usage(self) -> dict[int | None, int]:
        """{port id (None: the tunnel): connections charged to it}."""
        return {None if port == PORT_TUNNEL else port: n
                for port, n in self.dp.conntrack_usage().items()}

    def set_service_ranges(self, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]):
        """Where kube-proxy's Services live: egress rules judge a pod's
        packets to them after the node's DNAT, not before."""
        self.dp.set_service_ranges([(address_key(n.network_address), address_key(n.broadcast_address))
                                    for n in networks])

    def conntrack_flush(self) -> int:
        return self.dp.conntrack_flush()

    def expire_conntrack(self, budget: int) -> int:
        return self.dp.conntrack_expire(budget)

    # ---------------------------------------------------------------- peers

    def set_tunnel(self, t: TunnelSettings):
        self.dp.set_tunnel(t.rx_fds, t.senders, t.udp_port, t.underlay_mtu, t.outer_overhead,
                           t.learn_peers, address_key(t.vtep_ip), t.max_learned_peers)

    def add_peer(self, ip, networks: Iterable[str] | None = None):
        """Flood the networks (None: all) to the VTEP ip."""
        for name in self.network_ids if networks is None else networks:
            try:
                self.dp.add_peer(address_key(ip), self.network_ids[name])
            except OverflowError as e:
                raise Exhausted(str(e)) from None

    def remove_peer(self, ip) -> bool:
        return self.dp.remove_peer(address_key(ip))

    def peer_count(self) -> int:
        return self.dp.peer_count()

    def peers(self, only=None) -> list[dict]:
        """Every peer, or (only: an address) that one."""
        return [{"ip": address_str(ip), "networks": [self.network_name(n) for n in nets],
                 "counters": counters, "learned": learned}
                for ip, nets, counters, learned
                in self.dp.peer_list(address_key(only) if only else 0)]

    def peer_port_id(self, ip) -> int | None:
        """The id the data plane gives the peer at ip in FDB entries and
        capture records, None if it is not a peer."""
        wanted = address_key(ip)
        for index in range(PEER_SLOTS):
            if self.dp.peer_ip(index) == wanted:
                return PORT_PEER_BASE + index
        return None

    def peer_address(self, port_id: int) -> str:
        """The address of the peer with this data-plane id (:: when none)."""
        return address_str(self.dp.peer_ip(port_id - PORT_PEER_BASE))

    def expire_peers(self, max_idle: float) -> list[str]:
        return [address_str(ip) for ip in self.dp.expire_peers(max_idle)]

    # ------------------------------------------------------------------ FDB

    def fdb_add_remote(self, network: str, mac: str, peer) -> None:
        try:
            self.dp.fdb_add_remote(self.network_ids[network], mac_value(mac), address_key(peer))
        except KeyError:
            raise NotFound(f"no peer {peer}: add it first") from None
        except ValueError as e:
            raise Conflict(str(e)) from None
        except OverflowError as e:
            raise Exhausted(str(e)) from None

    def fdb_delete(self, network: str, mac: str) -> bool:
        return self.dp.fdb_delete(self.network_ids[network], mac_value(mac))

    def fdb_entries(self, network: str | None = None) -> list[tuple]:
        """Live entries: (network name, MAC, local port id or None, peer
        address or None, age, static, pinned)."""
        names = {i: n for n, i in self.network_ids.items()}
        return [(names.get(net, f"#{net}"), mac, pid, None if peer is None else address_str(peer),
                 age, static, pinned)
                for net, mac, pid, peer, age, static, pinned
                in self.dp.fdb_entries(self.network_id(network))]

    def fdb_flush(self, network: str | None = None) -> int:
        return self.dp.fdb_flush(self.network_id(network))

    def expire_fdb(self, budget: int) -> int:
        return self.dp.fdb_expire(budget)

    @property
    def aging_time(self) -> float:
        return self.dp.aging_time

    @aging_time.setter
    def aging_time(self, seconds: float):
        self.dp.aging_time = seconds

    @property
    def busy_poll_us(self) -> float:
        return self.dp.busy_poll_us

    @busy_poll_us.setter
    def busy_poll_us(self, us: float):
        self.dp.busy_poll_us = us

    # ------------------------------------------------------- frames and records

    @property
    def workers(self) -> int:
        return self.dp.n_workers

    def start(self):
        """Start the forwarding threads."""
        self.dp.start()

    def stop(self):
        self.dp.stop()

    def failures_fd(self) -> int:
        """Readable when a worker stopped polling a failed fd (take_failed)."""
        return self.dp.failures_fd()

    def take_failed(self) -> list[int]:
        return self.dp.take_failed()

    def reclaim(self) -> int:
        """Free what the control plane unlinked and no worker holds any more."""
        return self.dp.reclaim()

    def worker_counters(self) -> list[dict]:
        return self.dp.worker_counters()

    def trace(self, port_id: int, frame: bytes) -> list[dict]:
        steps = self.dp.trace(port_id, frame)
        for step in steps:
            if "network" in step:
                step["network"] = self.network_name(step["network"])
            if step["step"] == "policy":
                step["policy"] = self.policy_name(step["policy"])
        return steps

    def counters(self) -> dict:
        return self.dp.counters()

    def capture_add(self, points: int, port_id: int, snaplen: int, program) -> int:
        try:
            return self.dp.capture_add(points, port_id, snaplen, program)
        except OverflowError as e:            # all sessions in use
            raise Busy(str(e)) from None
        except ValueError as e:
            raise InvalidRequest(str(e)) from None

    def capture_remove(self, session: int):
        self.dp.capture_remove(session)

    def capture_read(self) -> list:
        return self.dp.capture_read()

    @property
    def capture_dropped(self) -> int:
        return self.dp.cap_dropped
