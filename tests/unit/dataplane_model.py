"""A Python model of the data plane's switching rules (SPEC §3: check,
learn, look up, deliver) for frames from plain ports (no offloads, no port
security, no tunnel), with the interface of datapath_rig.Rig, the C data
plane on socketpairs. The same tests run over both: one that passes on the
model only points at the C code, and the other way round at the model."""

from __future__ import annotations

from vswitch.protocol import ETH_HLEN


class Model:
    def __init__(self, mtu: int = 1500):
        self.mtu = {1: mtu, 2: mtu}                 # networks 1 and 2, as Rig declares
        self.network_of: dict[int, int] = {}
        self.fdb: dict[tuple[int, bytes], int] = {}
        self.queues: dict[int, list[bytes]] = {}
        self.unicast = self.flooded = 0
        self.drops: dict[str, int] = {}

    def port(self, network: int = 1) -> int:
        pid = len(self.network_of)
        self.network_of[pid] = network
        self.queues[pid] = []
        return pid

    def _drop(self, reason: str):
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def send(self, pid: int, frame: bytes):
        net = self.network_of[pid]
        l2 = ETH_HLEN + (4 if frame[12:14] in (b"\x81\x00", b"\x88\xa8") else 0)
        if len(frame) < l2:
            return self._drop("runt")
        if len(frame) - l2 > self.mtu[net]:
            return self._drop("oversize")
        dst, src = frame[:6], frame[6:12]
        if src[0] & 1:
            return self._drop("bad_source")
        self.fdb[(net, src)] = pid                     # learn, or move
        out = None if dst[0] & 1 else self.fdb.get((net, dst))
        if out == pid:
            return self._drop("loop")
        if out is not None:
            self.unicast += 1
            self.queues[out].append(frame)
            return
        others = [p for p, n in self.network_of.items() if n == net and p != pid]
        if not others:
            return self._drop("no_route")
        self.flooded += 1
        for p in others:
            self.queues[p].append(frame)

    def received(self, pid: int) -> list[bytes]:
        out, self.queues[pid] = self.queues[pid], []
        return out

    def decisions(self) -> dict:
        return {"unicast": self.unicast, "flooded": self.flooded, "drops": dict(self.drops)}


class ModelDatapath:
    """A Python model of the data plane's control interface (the Cython
    Datapath's methods the control plane calls, through DataPlane): its
    tables as dicts, nothing forwarded. The control-plane objects (Switch,
    Policies, Attachments, Gateways, the cluster's reconcilers) run on it
    without root or TAPs; the tests then read what they programmed."""

    def __init__(self):
        import os
        self.networks: dict[int, tuple[int, int]] = {}      # id -> (vni, mtu)
        self.ports: dict[int, dict] = {}
        self.peers: dict[int, set[int]] = {}                # address key -> network ids
        self.fdb: dict[tuple[int, int], int] = {}           # (network, mac) -> peer address
        self.neighbours: dict[tuple[int, int], int] = {}    # (network, address) -> mac
        self.policies: dict[int, tuple] = {}                # port id -> (ingress, egress)
        self.policy_changes = 0
        self.service_ranges: list = []
        self.aging_time, self.busy_poll_us = 300.0, 0.0
        self._wakeup = os.pipe()                            # never readable: nothing to poll

    # networks
    def set_network(self, network: int, vni: int, mtu: int):
        self.networks[network] = (vni, mtu)

    def remove_network(self, network: int):
        del self.networks[network]
        for nets in self.peers.values():
            nets.discard(network)
        self.fdb = {k: v for k, v in self.fdb.items() if k[0] != network}
        self.neighbours = {k: v for k, v in self.neighbours.items() if k[0] != network}

    # ports
    def add_port(self, fds, network: int, vnet_hdr: bool = False, router: bool = False):
        assert network in self.networks, "a port in an undeclared network"
        port_id = min(set(range(len(self.ports) + 1)) - set(self.ports))
        self.ports[port_id] = {"fds": fds, "network": network, "router": router}
        return port_id

    def remove_port(self, port_id: int):
        del self.ports[port_id]
        self.policies.pop(port_id, None)

    def set_port_security(self, port_id, mac=None, ips=(), ip6s=()):
        self.ports[port_id]["security"] = (mac, list(ips), list(ip6s))

    def set_host_addresses(self, port_id, ips=(), ip6s=()):
        self.ports[port_id]["host_addresses"] = (list(ips), list(ip6s))

    def pin_mac(self, port_id, mac):
        self.ports[port_id]["mac"] = mac

    def set_port_rates(self, port_id, *rates):
        self.ports[port_id]["rates"] = rates

    def port_counters(self, port_id):
        return dict.fromkeys(("rx_packets", "rx_bytes", "rx_dropped", "tx_packets", "tx_bytes",
                              "tx_dropped", "policy_denied"), 0)

    # peers and the FDB
    def set_tunnel(self, *settings):
        self.tunnel = settings

    def add_peer(self, ip: int, network: int):
        assert network in self.networks
        self.peers.setdefault(ip, set()).add(network)
        return list(self.peers).index(ip)

    def remove_peer(self, ip: int, network: int = 0) -> bool:
        if ip not in self.peers:
            return False
        self.peers[ip].discard(network) if network else self.peers[ip].clear()
        if not self.peers[ip]:
            del self.peers[ip]
            self.fdb = {k: v for k, v in self.fdb.items() if v != ip}
        return True

    def peer_list(self, only=0):
        return [(ip, sorted(nets), {}, False) for ip, nets in self.peers.items()
                if not only or ip == only]

    def fdb_add_remote(self, network: int, mac: int, peer_ip: int):
        if peer_ip not in self.peers:
            raise KeyError("no such peer")
        self.fdb[(network, mac)] = peer_ip

    def fdb_delete(self, network: int, mac: int) -> bool:
        return self.fdb.pop((network, mac), None) is not None

    def fdb_lookup(self, network: int, mac: int) -> int:
        return -1 if (network, mac) not in self.fdb else 1 << 20

    def fdb_entries(self, network: int = 0):
        return []

    def fdb_flush(self, network: int = 0) -> int:
        return 0

    # the neighbour table
    def neigh_set(self, network: int, ip: int, mac: int):
        self.neighbours[(network, ip)] = mac

    def neigh_delete(self, network: int, ip: int) -> bool:
        return self.neighbours.pop((network, ip), None) is not None

    # policy
    def set_port_policy(self, port_id: int, ingress=None, egress=None):
        self.policies[port_id] = (ingress, egress)

    def policy_changed(self):
        self.policy_changes += 1

    def set_service_ranges(self, ranges):
        self.service_ranges = list(ranges)

    def conntrack_entries(self, port: int = -1, limit: int = 0):
        return []

    # forwarding threads: none, and no fd ever fails
    n_workers = 1

    def start(self):
        pass

    def stop(self):
        pass

    def failures_fd(self) -> int:
        return self._wakeup[0]

    def take_failed(self) -> list:
        return []

    def reclaim(self) -> int:
        return 0
