"""A data plane to fuzz: ports on AF_UNIX datagram socketpairs (frames of
any shape, as a TAP could hand them over) and a VXLAN tunnel on loopback
with a configured peer (127.0.0.2) and a stranger (127.0.0.3)."""

from __future__ import annotations

import socket

from vswitch.datapath import address_key, new_datapath
from vswitch.encap import VXLAN
from vswitch.tunnel import Tunnel


class FuzzRig:
    def __init__(self):
        self.dp = new_datapath(workers=1, fdb_max_entries=4096, batch=16, fdb_max_per_port=256,
                               fdb_max_per_peer=512, conntrack_max=64, conntrack_max_per_pod=0,
                               busy_poll_us=0)
        self.dp.set_network(1, 101, 1500)
        self.dp.set_network(2, 102, 9000)
        self.keep, self.pods, self.vnet = [], {}, {}
        for network, vnet, secured in ((1, True, True), (1, False, True), (1, True, False),
                                       (1, False, False), (2, True, False)):
            sw, pod = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            sw.setblocking(False)
            pod.setblocking(False)
            self.keep.append(sw)
            pid = self.dp.add_port(sw.fileno(), network, vnet, router=not secured)
            if secured:
                self.dp.set_port_security(pid, 0x020000000001 + pid, [0xC6120001 + pid])
            self.pods[pid], self.vnet[pid] = pod, vnet
        # NetworkPolicy on two ports, so that flow parsing, the rule walk and
        # conntrack (a small table: its limit and sweeps too) are fuzzed.
        pids = list(self.pods)
        self.dp.set_port_policy(pids[0], ingress=(1, [
            ([(address_key("198.18.0.0"), address_key("198.18.255.255"), 2)],
             [(6, 80, 81), (17, 53, 53), (132, 9, 9)]),
            ([(address_key("10.0.0.1"), address_key("10.0.0.1"), 3),
              (address_key("2001:db8::"), address_key("2001:db8::ffff"), 6)], [])]))
        self.dp.set_port_policy(pids[3], egress=(4, [([(0, (1 << 128) - 1, 5)],
                                                             [(6, 1, 1024)])]))
        self.tunnel = Tunnel("127.0.0.1", 0)
        self.port = self.tunnel.rx[0].getsockname()[1]
        self.dp.set_tunnel(self.tunnel.rx[0].fileno(), self.tunnel.senders(), self.port, 1500,
                           VXLAN.outer_overhead(4), learn_peers=False,
                           vtep=address_key("127.0.0.1"), max_learned_peers=4)
        self.dp.add_peer(address_key("127.0.0.2"), 1)
        self.senders = []
        for ip in ("127.0.0.2", "127.0.0.3"):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((ip, self.port))       # the peer also receives what the tunnel sends
            s.setblocking(False)
            self.senders.append(s)
        self.capture = self.dp.capture_add(31)        # every point: the capture paths run too

    def from_port(self, index: int, data: bytes):
        pid = list(self.pods)[index % len(self.pods)]
        try:
            self.pods[pid].send(data)
        except OSError:                   # longer than a datagram socket takes
            return
        while self.dp.drain(pid) > 0:
            pass
        self.dp.trace(pid, data[10:] if self.vnet[pid] else data)

    def from_underlay(self, sender: int, data: bytes, learn: bool):
        self.dp.set_tunnel(self.tunnel.rx[0].fileno(), self.tunnel.senders(), self.port, 1500,
                           VXLAN.outer_overhead(4), learn_peers=learn,
                           vtep=address_key("127.0.0.1"), max_learned_peers=4)
        try:
            self.senders[sender % 2].sendto(data, ("127.0.0.1", self.port))
        except OSError:
            return
        while self.dp.drain_tunnel() > 0:
            pass

    def flush(self):
        """Empty every queue: nothing piles up between inputs."""
        for s in [*self.pods.values(), *self.senders]:
            try:
                while True:
                    s.recv(70000)
            except OSError:
                pass
        self.dp.capture_read(1 << 20)
        self.dp.fdb_expire(64)
        self.dp.counters()
        self.dp.fdb_entries()
        self.dp.peer_list()
