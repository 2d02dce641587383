# cython: language_level=3
"""The data plane: ports, FDB and the per-frame pipeline, in C.

The control plane owns file descriptors and hands them to the data plane,
which polls them all through one epoll set: when the event loop reports that
set readable, one call to `poll()` serves every ready port and the VXLAN
socket in turn, reading up to `batch` frames at a time into preallocated
buffers and switching each without creating a Python object.

Each concept keeps its C state and operations in files named after it: the
state in `_<concept>.pxd` (included by _fastpath.pxd), the operations in
`_<concept>.pxi` (included below, in any order). This file holds the
`Datapath` that owns one of each, its control methods (which may use Python
objects freely), and the pipeline, top to bottom: poll, drain, check,
learn, look up, deliver, flush. The only Python importer of this module is
vswitch/datapath.py.

The flush rule: output to peers (queued VXLAN datagrams) and a held GRO
superframe leave at one point, `_flush_output`, at the end of serving each
ready fd (one port's or the tunnel's batch), so nothing waits across fds or
rounds. Earlier flushes only keep order or make room: the tunnel queue when
it is full, the held superframe before a frame from the tunnel is flooded
(or sent to a port frame by frame), and both when the tunnel is
reconfigured.
"""

import ipaddress
import os

from libc.errno cimport errno, EAGAIN, EINTR, EIO
from libc.stdlib cimport calloc, malloc, free
from libc.string cimport memcmp, memcpy, memset
from posix.unistd cimport read, write

include "_capture.pxi"
include "_conntrack.pxi"
include "_counters.pxi"
include "_fdb.pxi"
include "_fragments.pxi"
include "_gateway.pxi"
include "_gro.pxi"
include "_neigh.pxi"
include "_networks.pxi"
include "_offload.pxi"
include "_peers.pxi"
include "_policy.pxi"
include "_ports.pxi"
include "_probes.pxi"
include "_ratelimit.pxi"
include "_security.pxi"
include "_trace.pxi"
include "_tunnel_rx.pxi"
include "_tunnel_tx.pxi"
include "_underlay.pxi"
include "_vxlan.pxi"
include "_worker.pxi"

PORT_PEER_BASE, PORT_TUNNEL, PEER_SLOTS = PEER_BASE, TUNNEL_PORT, MAX_PEERS

# What clients know of the data plane (vswitch/protocol.py) must be what it is.
from vswitch import protocol
assert protocol.CAPTURE_POINTS == {"ingress": CAP_INGRESS, "egress": CAP_EGRESS,
                                   "encap": CAP_ENCAP, "decap": CAP_DECAP, "drop": CAP_DROP}
assert protocol.VXLAN_OUTER_OVERHEAD == OUTER_OVERHEAD
assert protocol.UDP_GRO == UDP_GRO
assert protocol.ETH_HLEN == ETH_HLEN
assert protocol.MAX_NETWORKS == MAX_NETWORKS


def mac_to_str(uint64_t mac):
    return ":".join(f"{(mac >> s) & 0xFF:02x}" for s in range(40, -8, -8))


cdef inline unsigned char *slot_frame(unsigned char *slots, int i) noexcept nogil:
    return slots + <size_t>i * SLOT_SIZE + FRAME_HEADROOM


cdef class Datapath:
    """A switch: ports (file descriptors carrying Ethernet frames), an
    optional VXLAN tunnel to peers, one FDB shared by all networks (keyed by
    network and MAC), and counters."""

    def __cinit__(self, uint64_t fdb_max_entries=65536, double aging_time=300.0,
                  int batch=64, double busy_poll_us=0, uint32_t fdb_max_per_port=0,
                  uint32_t fdb_max_per_peer=0, uint64_t conntrack_max=262144,
                  uint64_t conntrack_max_per_pod=0):
        """fdb_max_per_port / _per_peer: learned entries one port / one peer
        may hold (0: no limit but the table's). conntrack_max: connections
        tracked at once; conntrack_max_per_pod: of them charged to one port
        (0: conntrack_max)."""
        if fdb_max_entries < 1 or aging_time <= 0 or not 1 <= batch <= 1024 or busy_poll_us < 0 \
                or conntrack_max < 1:
            raise ValueError("fdb_max_entries, aging_time and conntrack_max must be positive, "
                             "batch 1..1024, busy_poll_us >= 0")
        seed = int.from_bytes(os.urandom(8), "little")
        self.batch = batch
        if worker_init(&self.w, batch, busy_poll_us) < 0:
            raise OSError(errno, "cannot set up the forwarding thread's state")
        if (ports_init(&self.ports) < 0
                or networks_init(&self.networks) < 0 or peers_init(&self.peers) < 0
                or cap_init(&self.cap) < 0
                or fdb_init(&self.fdb, fdb_max_entries, <uint64_t>(aging_time * 1e9), seed) < 0
                or neigh_init(&self.neigh, int.from_bytes(os.urandom(8), "little")) < 0
                or neigh_init(&self.owners, int.from_bytes(os.urandom(8), "little")) < 0
                or frags_init(&self.frags, int.from_bytes(os.urandom(8), "little")) < 0
                or ct_init(&self.ct, conntrack_max, int.from_bytes(os.urandom(8), "little")) < 0):
            raise MemoryError()
        if fdb_max_per_port:
            self.fdb.max_per_port = fdb_max_per_port
        if fdb_max_per_peer:
            self.fdb.max_per_peer = fdb_max_per_peer
        if conntrack_max_per_pod:
            self.ct.max_per_owner = conntrack_max_per_pod

    def __dealloc__(self):
        cdef uint32_t i
        if self.ports.slots != NULL:
            for i in range(self.ports.limit):
                port_policy_free(self.ports.slots[i].policy)
        ct_free(&self.ct)
        worker_free(&self.w)
        ports_free(&self.ports)
        networks_free(&self.networks)
        peers_free(&self.peers)
        cap_free(&self.cap)
        fdb_destroy(&self.fdb)
        neigh_free(&self.neigh)
        neigh_free(&self.owners)
        frags_free(&self.frags)

    # ------------------------------------------------------------- networks

    def set_network(self, int network, uint32_t vni, int mtu):
        """Declare network id 1..4095 with its VNI and pod MTU."""
        if not 0 < network < MAX_NETWORKS:
            raise ValueError(f"network id must be 1..{MAX_NETWORKS - 1}")
        if not 0 < vni <= 0xFFFFFF or not 68 <= mtu <= 65535:
            raise ValueError("vni must be 1..16777215 and mtu 68..65535")
        self.networks.vni_of[network] = vni
        self.networks.mtu_of[network] = mtu

    def remove_network(self, int network):
        """Forget a network whose ports are gone: its peers' memberships,
        its FDB entries (static ones included) and its neighbours."""
        self._declared(network)
        for ip, nets, *_ in self.peer_list():
            if network in nets:
                self.remove_peer(ip, network)
        fdb_sweep(&self.fdb, SWEEP_NETWORK, network, 0, 0)
        cdef ip_key_t neighbour
        for key in [key_to_int(&self.neigh.slots[i].ip) for i in range(self.neigh.mask + 1)
                    if self.neigh.slots[i].network == <uint64_t>network]:
            neighbour = key_from_int(key)
            neigh_delete(&self.neigh, network, &neighbour)
        self.networks.vni_of[network] = 0
        self.networks.mtu_of[network] = 0

    cdef _declared(self, int network):
        if not network_declared(&self.networks, network):
            raise ValueError(f"network {network} is not declared")

    # ---------------------------------------------------------------- ports

    def add_port(self, int fd, int network, bint vnet_hdr=False, bint router=False):
        """Attach a non-blocking fd to a declared network; returns the port id.
        vnet_hdr: frames on the fd are preceded by a virtio_net_hdr; router:
        the port may send IPv6 Router Advertisements and Redirects (the
        host port; every other port is RA-guarded)."""
        self._declared(network)
        cdef int64_t port_id = ports_add(&self.ports, fd, network, vnet_hdr, router)
        if port_id < 0:
            raise OverflowError(f"all {MAX_PORTS} ports are in use")
        if poller_watch(&self.w.poller, fd, port_id) < 0:
            ports_remove(&self.ports, port_id)
            raise OSError(errno, f"cannot poll fd {fd}")
        return port_id

    def remove_port(self, uint32_t port_id):
        """Detach a port (the caller closes its fd) and forget its FDB entries."""
        cdef port_t *p = self._port(port_id)
        fdb_sweep(&self.fdb, SWEEP_PORT, 0, port_id, 0)
        self._own_addresses(port_id, False)
        ct_forget_owner(&self.ct, port_id)
        if p.policy != NULL:
            self.policed -= 1
        port_policy_free(p.policy)
        p.policy = NULL
        poller_unwatch(&self.w.poller, p.fd)
        ports_remove(&self.ports, port_id)

    def fileno(self):
        """An fd that is readable when any port or the tunnel has frames:
        the event loop watches it and calls poll()."""
        return self.w.poller.epfd

    def set_port_security(self, uint32_t port_id, mac=None, ips=(), ip6s=()):
        """Bind a port to its MAC, IPv4 and IPv6 addresses (integers); frames
        from other sources are dropped as spoofed_source, neighbour
        discovery for other addresses or MACs as nd_spoofed. The MAC is pinned to
        the port in the FDB: frames from anywhere else with it as source
        (another port, a peer) are dropped as mac_pinned. mac=None turns it
        off."""
        cdef port_t *p = self._port(port_id)
        if p.router:
            raise ValueError("a host port is not port-secured (set_host_addresses)")
        if p.secured:
            fdb_delete(&self.fdb, p.network, p.sec_mac)
            self._own_addresses(port_id, False)
            p.secured = False
        if mac is None:
            return
        if len(ips) > MAX_PORT_IPS or len(ip6s) > MAX_PORT_IP6S:
            raise ValueError(f"at most {MAX_PORT_IPS} IPv4 and {MAX_PORT_IP6S} IPv6 addresses "
                             "per port")
        self.pin_mac(port_id, mac)
        p.sec_mac = mac
        p.n_sec_ips = len(ips)
        for i, ip in enumerate(ips):
            p.sec_ips[i] = ip
        p.n_sec_ip6s = len(ip6s)
        for i, ip in enumerate(ip6s):
            p.sec_ip6s[i] = key_from_int(ip)
        p.secured = True
        self._own_addresses(port_id, True)

    def set_host_addresses(self, uint32_t port_id, ips=(), ip6s=()):
        """The node's own addresses on host port port_id (integers): what
        it sends from them is the node's (kubelet's probes), let in whatever
        pods' ingress rules say; what it routes from any other address is
        judged as that address's (a local pod's egress rules included)."""
        cdef port_t *p = self._port(port_id)
        if not p.router:
            raise ValueError(f"port {port_id} is not a host port")
        if len(ips) > MAX_PORT_IPS or len(ip6s) > MAX_PORT_IP6S:
            raise ValueError(f"at most {MAX_PORT_IPS} IPv4 and {MAX_PORT_IP6S} IPv6 addresses")
        p.n_sec_ips, p.n_sec_ip6s = len(ips), len(ip6s)
        for i, ip in enumerate(ips):
            p.sec_ips[i] = ip
        for i, ip in enumerate(ip6s):
            p.sec_ip6s[i] = key_from_int(ip)

    cdef _own_addresses(self, uint32_t port_id, bint own):
        """Record (or forget) a secured port's addresses as its own, for
        telling which pod a packet the node routes comes from."""
        cdef port_t *p = &self.ports.slots[port_id]
        cdef ip_key_t key
        for i in range(p.n_sec_ips + p.n_sec_ip6s):
            key = key_of_ip4(p.sec_ips[i]) if i < p.n_sec_ips else p.sec_ip6s[i - p.n_sec_ips]
            if own:
                if neigh_set(&self.owners, p.network, &key, port_id + 1) < 0:
                    raise MemoryError()
            elif neigh_lookup(&self.owners, p.network, &key) == port_id + 1:
                neigh_delete(&self.owners, p.network, &key)

    def pin_mac(self, uint32_t port_id, uint64_t mac):
        """Pin a MAC to a port (a secured pod's, the host port's): it lives
        there for good, and frames from anywhere else with it as source are
        dropped as mac_pinned. Removing the port unpins it."""
        cdef port_t *p = self._port(port_id)
        cdef int64_t pinned = fdb_pinned_port(&self.fdb, p.network, mac)
        if pinned >= 0 and pinned != port_id:
            raise ValueError(f"MAC {mac_to_str(mac)} is bound to port {pinned} already")
        if fdb_set_static(&self.fdb, p.network, mac, port_id, FDB_PINNED) < 0:
            raise OverflowError("FDB is full")
        p.mac = mac

    def set_port_rates(self, uint32_t port_id, double ingress_bps=0, double ingress_burst=0,
                       double egress_bps=0, double egress_burst=0):
        """Token-bucket limits in bits/s and bits (rate 0: none). Ingress:
        frames the port sends into the switch; egress: frames written to it."""
        cdef port_t *p = self._port(port_id)
        bucket_set(&p.ingress, ingress_bps, ingress_burst, monotonic_ns())
        bucket_set(&p.egress, egress_bps, egress_burst, monotonic_ns())

    def port_counters(self, uint32_t port_id):
        return port_counters(self._port(port_id))

    cdef port_t *_port(self, uint32_t port_id) except NULL:
        cdef port_t *p = port_at(&self.ports, port_id)
        if p == NULL:
            raise KeyError(f"no port {port_id}")
        return p

    # ---------------------------------------------------------------- peers

    def set_tunnel(self, int rx_fd, senders, int udp_port, int underlay_mtu,
                   bint learn_peers=False, vtep=0, uint32_t max_learned_peers=64):
        """Enable VXLAN: rx_fd a non-blocking UDP socket bound to the VTEP
        (UDP_GRO on), senders [(fd, source port)] of non-blocking UDP
        sockets bound to it, all of the family of vtep (its address, as
        peers' are given: an int, IPv4 mapped). learn_peers: a datagram from an unknown source
        makes it a peer of that network (at most max_learned_peers such
        peers; they age, see expire_peers); turning it off forgets them."""
        if not 0 < udp_port < 65536 or not 576 <= underlay_mtu <= 65535:
            raise ValueError("udp_port must be 1..65535 and underlay_mtu 576..65535")
        if not 0 < len(senders) <= MAX_SENDERS:
            raise ValueError(f"1..{MAX_SENDERS} sending sockets")
        self._flush_output(&self.w)
        for i, (fd, sport) in enumerate(senders):
            self.w.tx.fd[i], self.w.tx.sport[i] = fd, sport
        self.w.tx.n_senders = len(senders)
        if rx_fd != self.w.rx.fd:
            if self.w.rx.fd >= 0:
                poller_unwatch(&self.w.poller, self.w.rx.fd)
            if poller_watch(&self.w.poller, rx_fd, TUNNEL_PORT) < 0:
                raise OSError(errno, f"cannot poll fd {rx_fd}")
        self.w.rx.fd = rx_fd
        peers_set_port(&self.peers, udp_port)
        self.w.tx.underlay_mtu, self.w.rx.learn_peers = underlay_mtu, learn_peers
        self.w.rx.vtep, self.peers.max_learned = key_from_int(vtep), max_learned_peers
        self.w.tx.outer_overhead = OUTER_OVERHEAD if key_is_v4(&self.w.rx.vtep) or not vtep \
            else OUTER_OVERHEAD6
        if not learn_peers:
            for ip, _, _, learned in self.peer_list():
                if learned:
                    self.remove_peer(ip)

    def add_peer(self, ip, int network):
        """Flood `network` to the VTEP ip (an int: IPv6, or IPv4 mapped to
        ::ffff:0:0/96; not 0); returns its index."""
        self._declared(network)
        if not ip:
            raise ValueError("peer address 0")
        cdef int64_t idx = peer_join(&self.peers, key_from_int(ip), network, False)
        if idx < 0:
            raise OverflowError("peer table is full")
        return idx

    def remove_peer(self, ip, int network=0):
        """Stop flooding `network` (0: all) to ip; a peer left in no network
        is forgotten with its FDB entries. Returns whether it was known."""
        cdef ip_key_t key = key_from_int(ip)
        cdef int64_t idx = peer_find(&self.peers, &key)
        if idx < 0:
            return False
        if peer_leave(&self.peers, idx, network) == 0:
            fdb_sweep(&self.fdb, SWEEP_PORT, 0, PEER_BASE + idx, 0)
            peer_forget(&self.peers, idx)
        return True

    def peer_ip(self, uint32_t index):
        """The address of peer `index` (as add_peer takes it), 0 if none."""
        return key_to_int(&self.peers.slots[index].ip) if index < MAX_PEERS else 0

    def expire_peers(self, double max_idle):
        """Forget learned peers not heard from for max_idle seconds; returns
        their addresses."""
        cdef uint64_t now = monotonic_ns(), idle = <uint64_t>(max_idle * 1e9)
        cdef peer_t *p
        gone = []
        for i in range(self.peers.limit):
            p = &self.peers.slots[i]
            if not key_is_zero(&p.ip) and p.learned and now - p.last_rx_ns > idle:
                gone.append(key_to_int(&p.ip))
        for ip in gone:
            self.remove_peer(ip)
        return gone

    def peer_list(self, only=0):
        """[(ip, [network ids], counters, learned)] of known peers (only: of
        the peer with that address)."""
        out = []
        cdef uint32_t i
        cdef peer_t *p
        for i in range(self.peers.limit):
            p = &self.peers.slots[i]
            if key_is_zero(&p.ip) or only and key_to_int(&p.ip) != only:
                continue
            out.append((key_to_int(&p.ip), peer_networks(&self.peers, i),
                        {"rx_packets": p.rx_packets, "rx_bytes": p.rx_bytes,
                         "tx_packets": p.tx_packets, "tx_bytes": p.tx_bytes,
                         "tx_dropped": p.tx_dropped}, bool(p.learned)))
        return out

    # ------------------------------------------------------------------ FDB

    @property
    def aging_time(self):
        return self.fdb.aging_ms / 1e3

    @aging_time.setter
    def aging_time(self, double seconds):
        if seconds <= 0:
            raise ValueError("aging_time must be positive")
        self.fdb.aging_ms = <uint32_t>(seconds * 1e3)

    @property
    def busy_poll_us(self):
        return self.w.poller.busy_poll_ns / 1e3

    @busy_poll_us.setter
    def busy_poll_us(self, double us):
        if us < 0:
            raise ValueError("busy_poll_us must be >= 0")
        self.w.poller.busy_poll_ns = <uint64_t>(us * 1000)

    def fdb_add_remote(self, int network, uint64_t mac, peer_ip):
        """A static entry: (network, mac) lives behind the peer peer_ip."""
        self._declared(network)
        cdef ip_key_t key = key_from_int(peer_ip)
        cdef int64_t idx = peer_find(&self.peers, &key)
        if idx < 0:
            raise KeyError("no such peer")
        if fdb_pinned_port(&self.fdb, network, mac) >= 0:
            raise ValueError(f"MAC {mac_to_str(mac)} is a port-secured local port's")
        if fdb_set_static(&self.fdb, network, mac, PEER_BASE + idx, FDB_STATIC) < 0:
            raise OverflowError("FDB is full")

    def fdb_delete(self, int network, uint64_t mac):
        """Delete one learned or static entry (not a port's pinned MAC);
        returns whether it existed."""
        self._declared(network)
        return fdb_pinned_port(&self.fdb, network, mac) < 0 and \
            fdb_delete(&self.fdb, network, mac) == 0

    def fdb_lookup(self, int network, uint64_t mac):
        """Where a live entry sends (network, mac): a port id, PORT_PEER_BASE
        + peer index, or -1."""
        self._declared(network)
        return fdb_lookup(&self.fdb, network, mac, monotonic_ns())

    def fdb_flush(self, int network=0):
        """Forget learned MACs of one network (0: all); returns how many."""
        if network:
            self._declared(network)
        return fdb_sweep(&self.fdb, SWEEP_ALL, network, 0, 0)

    def fdb_expire(self, uint64_t budget=0):
        """Delete learned entries older than the aging time; returns how
        many. budget: slots to look at, going on from the last call (0: the
        whole table at once)."""
        cdef uint64_t n = fdb_sweep(&self.fdb, SWEEP_EXPIRED, 0, 0, monotonic_ns(), budget)
        self.fdb.expired += n
        return n

    def fdb_longest_probe(self):
        """The farthest any entry lies from its home slot (hash flooding shows here)."""
        cdef uint64_t i, longest = 0
        for i in range(self.fdb.mask + 1):
            if self.fdb.slots[i].key:
                longest = max(longest, (i - fdb_slot_of(&self.fdb, self.fdb.slots[i].key))
                              & self.fdb.mask)
        return longest

    def fdb_entries(self, int network=0):
        """[(network, mac, port_id or None, peer ip or None, age, static,
        pinned)] of live entries; peer ips in network byte order."""
        cdef uint64_t i, now = monotonic_ns()
        cdef fdb_entry_t *e
        out = []
        for i in range(self.fdb.mask + 1):
            e = &self.fdb.slots[i]
            if e.key == 0 or fdb_expired(&self.fdb, e, now):
                continue
            if network and (e.key >> 48) != <uint64_t>network:
                continue
            remote = e.port >= PEER_BASE
            out.append((e.key >> 48, mac_to_str(e.key & 0xFFFFFFFFFFFF),
                        None if remote else e.port,
                        key_to_int(&self.peers.slots[e.port - PEER_BASE].ip) if remote else None,
                        0.0 if e.kind != FDB_LEARNED else <uint32_t>(ms32(now) - e.seen_ms) / 1e3,
                        e.kind != FDB_LEARNED, e.kind == FDB_PINNED))
        return out

    # ------------------------------------------------------ neighbour table

    def neigh_set(self, int network, ip, uint64_t mac):
        """(network, ip) has mac: ARP requests (IPv4) and Neighbor
        Solicitations (IPv6) for ip from local ports are answered with it
        (ip as an int, IPv4 mapped: as add_peer takes it)."""
        self._declared(network)
        if not ip or mac == 0:
            raise ValueError("address and MAC must not be 0")
        cdef ip_key_t key = key_from_int(ip)
        if neigh_set(&self.neigh, network, &key, mac) < 0:
            raise MemoryError()

    def neigh_delete(self, int network, ip):
        """Forget (network, ip); returns whether it was known."""
        cdef ip_key_t key = key_from_int(ip)
        return neigh_delete(&self.neigh, network, &key)

    def neigh_lookup(self, int network, ip):
        """The MAC of (network, ip), or 0."""
        cdef ip_key_t key = key_from_int(ip)
        return neigh_lookup(&self.neigh, network, &key)

    @property
    def neigh_count(self):
        return self.neigh.count

    # ------------------------------------------------- policy and conntrack

    def set_port_policy(self, uint32_t port_id, ingress=None, egress=None):
        """Swap in a pod's NetworkPolicy tables, one per direction: None (no
        policy isolates it) or (isolating policy id, [(ranges, l4)]), see
        pol_dir_build. Frames see the old tables or the new, never a mix;
        call policy_changed() once every port has its new tables."""
        cdef port_t *p = self._port(port_id)
        cdef port_policy_t *new = port_policy_build(ingress, egress)
        cdef port_policy_t *old = p.policy
        p.policy = new
        self.policed += (new != NULL) - (old != NULL)
        port_policy_free(old)

    def port_policy_enforced(self, uint32_t port_id):
        return self._port(port_id).policy != NULL

    def policy_changed(self):
        """Policies changed: each tracked connection is checked against the
        new tables on its next packet, and forgotten if no longer allowed."""
        self.ct.generation += 1

    def conntrack_configure(self, uint64_t max_entries, uint64_t max_per_pod=0):
        """A new, empty table for max_entries connections, at most
        max_per_pod (0: max_entries) of them charged to one port."""
        if max_entries < 1:
            raise ValueError("conntrack max_entries must be positive")
        if ct_alloc(&self.ct, max_entries) < 0:
            raise MemoryError()
        self.ct.max_per_owner = max_per_pod or max_entries

    def conntrack_usage(self):
        """{port id (PORT_TUNNEL: the tunnel): connections charged to it}."""
        return {(TUNNEL_PORT if i == MAX_PORTS else i): self.ct.owned[i]
                for i in range(CT_OWNERS) if self.ct.owned[i]}

    def set_service_ranges(self, ranges):
        """[(lo, hi)] of Service addresses (integers, IPv4 mapped): a pod's
        packet to one is judged by its egress rules only as the node sends
        it on, DNATed, to a backend."""
        if len(ranges) > MAX_SERVICE_RANGES:
            raise ValueError(f"at most {MAX_SERVICE_RANGES} Service ranges")
        for i, (lo, hi) in enumerate(ranges):
            if not 0 <= lo <= hi < 1 << 128:
                raise ValueError("a Service range is lo..hi")
            self.services.lo[i], self.services.hi[i] = key_from_int(lo), key_from_int(hi)
        self.services.n = len(ranges)

    def conntrack_entries(self, int64_t port=-1, uint64_t limit=0):
        """Live connections (of `port`: that went in or out there; -1: all),
        each (network, protocol, source, sport, destination, dport, flags,
        seconds left, in port, out port, owner: the port it is charged to) in
        the direction it was opened,
        addresses as 128-bit integers (IPv4 mapped), ports CT_NO_PORT beyond
        the tunnel."""
        cdef uint64_t i
        cdef uint32_t now_ms = ms32(monotonic_ns())
        cdef ct_entry_t *e
        out = []
        for i in range(self.ct.mask + 1):
            e = &self.ct.slots[i]
            if e.key.rest == 0 or not ct_live(e, now_ms):
                continue
            if port >= 0 and e.in_port != port and e.out_port != port:
                continue
            a = (key_to_int(&e.key.a), (e.key.rest >> 16) & 0xFFFF)
            b = (key_to_int(&e.key.b), e.key.rest & 0xFFFF)
            src, dst = (a, b) if e.flags & CT_ORIG_A else (b, a)
            out.append(((e.key.rest >> 40) & 0xFFFF, (e.key.rest >> 32) & 0xFF, src[0], src[1],
                        dst[0], dst[1], e.flags, <int32_t>(e.deadline_ms - now_ms) / 1e3,
                        e.in_port, e.out_port, e.owner))
            if limit and len(out) >= limit:
                break
        return out

    def conntrack_flush(self):
        """Forget every connection; returns how many there were."""
        cdef uint64_t n = self.ct.count
        ct_flush(&self.ct)
        return n

    def conntrack_expire(self, uint64_t budget=0):
        """Sweep expired connections from `budget` slots on (0: all)."""
        return ct_sweep(&self.ct, ms32(monotonic_ns()), budget)

    # ------------------------------------------------------------- counters

    def counters(self):
        """Switch-wide counters: decisions, drops by reason, FDB, tunnel."""
        out = counters_dict(&self.w.totals)
        out["fdb"] = {"entries": self.fdb.count, "max_entries": self.fdb.max_entries,
                      "learned": self.fdb.learned, "moves": self.fdb.moves,
                      "full": self.fdb.full, "limited": self.fdb.limited,
                      "expired": self.fdb.expired,
                      "max_per_port": self.fdb.max_per_port, "max_per_peer": self.fdb.max_per_peer}
        out["tunnel"] = port_counters(&self.w.tunnel)
        out["gro_merged"] = self.w.gro.merged
        out["arp_suppressed"] = self.neigh.answered
        out["nd_suppressed"] = self.neigh.answered6
        out["neighbours"] = self.neigh.count
        out["conntrack"] = {"entries": self.ct.count, "max_entries": self.ct.max_entries,
                            "max_per_pod": self.ct.max_per_owner,
                            "created": self.ct.created, "expired": self.ct.expired,
                            "revoked": self.ct.revoked, "early_dropped": self.ct.early_dropped}
        out["fragments_passed"] = self.frags.passed
        out["gateway_replies"] = self.w.gateway_replies
        return out

    @property
    def gro_merged(self):
        """Segments that went out inside a GRO superframe."""
        return self.w.gro.merged

    # -------------------------------------------------------------- capture

    def capture_add(self, uint32_t points, int64_t port=-1, uint32_t snaplen=65535, program=()):
        """Start a session: frames at `points` (CAP_* bits) on `port` (-1:
        any) that the classic BPF `program` ([(code, jt, jf, k)], empty:
        all) accepts. Returns its id (a bit of the records' masks)."""
        return cap_add(&self.cap, points, port, snaplen, program)

    def capture_remove(self, int session):
        """Stop a session; with none left, capture costs nothing again."""
        cap_remove(&self.cap, session)

    def capture_read(self, int max_records=4096):
        """Take records from the ring: [(ts_ns, mask, port, point, reason
        (None or its name), orig_len, bytes, detail)]."""
        return cap_read(&self.cap, max_records)

    @property
    def cap_dropped(self):
        """Capture records lost because the ring was full."""
        return self.cap.dropped

    # ------------------------------------------------------- trace (_trace.pxi)

    def trace(self, uint32_t port_id, bytes frame):
        """Run a frame from a port through the pipeline, without learning,
        sending, counting or tracking: a list of steps."""
        return trace_frame(self, port_id, frame)

    # ============================================================ the pipeline

    def poll(self):
        """Serve every ready port and the tunnel, round-robin: each ready fd
        gets up to `batch` frames or POLL_QUANTUM_NS per round, so a flooding
        port cannot starve the others. Rounds go on while fds are ready (and,
        with busy polling, until busy_poll_us pass without a frame), for at
        most POLL_BUDGET_NS; then the event loop gets its turn. Returns the
        number of ports whose fd failed (take_failed() names them)."""
        cdef worker_t *w = &self.w
        cdef int i, n, r
        cdef uint32_t key
        cdef uint64_t start = monotonic_ns(), last = start, now
        with nogil:
            while True:
                n = epoll_wait(w.poller.epfd, w.poller.events, POLL_EVENTS, 0)
                for i in range(n):
                    key = w.poller.events[i].data.u32
                    if key == TUNNEL_PORT:
                        r = self._drain_tunnel(&self.w)
                        if r < 0:
                            poller_fail(&w.poller, key, w.rx.fd)
                    elif port_at(&self.ports, key) != NULL:
                        r = self._drain(w, key)
                        if r < 0:
                            poller_fail(&w.poller, key, self.ports.slots[key].fd)
                now = monotonic_ns()
                if n > 0:
                    last = now
                elif now - last >= w.poller.busy_poll_ns:
                    break
                if now - start >= POLL_BUDGET_NS:
                    break
        return w.poller.n_failed

    def take_failed(self):
        """Ids of the ports (PORT_TUNNEL: the tunnel) whose fd failed in
        poll() since the last call; they are no longer polled."""
        out = [self.w.poller.failed[i] for i in range(self.w.poller.n_failed)]
        self.w.poller.n_failed = 0
        return out

    def drain(self, uint32_t port_id):
        """Read and switch up to `batch` frames from one port: the number
        read, or -errno when its fd failed."""
        if port_at(&self.ports, port_id) == NULL:
            return 0
        cdef int r
        with nogil:
            r = self._drain(&self.w, port_id)
        return r

    def drain_tunnel(self):
        """Receive and switch up to `batch` buffers from the tunnel: the
        number received, or -errno."""
        cdef int r
        with nogil:
            r = self._drain_tunnel(&self.w)
        return r

    cdef int _drain(self, worker_t *w, uint32_t port_id) noexcept nogil:
        cdef port_t *inp = &self.ports.slots[port_id]
        # The frame starts at `frame` and its virtio_net_hdr sits just
        # before it, so that any egress can write either without a copy.
        cdef unsigned char *frame
        cdef unsigned char *hdr
        cdef uint64_t now = monotonic_ns()
        cdef ssize_t n
        cdef int count = 0, err = 0
        while count < w.batch:
            frame = slot_frame(w.slots, count)
            hdr = frame - VNET_HLEN
            if inp.vnet_hdr:
                n = read(inp.fd, hdr, FRAME_BUF + VNET_HLEN)
            else:
                n = read(inp.fd, frame, FRAME_BUF)
            if n < 0:
                if errno == EINTR:
                    continue
                if errno != EAGAIN:
                    err = errno
                break
            count += 1          # an empty datagram is a (runt) frame too
            if inp.vnet_hdr:
                n -= VNET_HLEN
            else:
                memset(hdr, 0, VNET_HLEN)
            self._switch(w, port_id, inp, inp.network, hdr, frame, n, now)
            if monotonic_ns() - now >= POLL_QUANTUM_NS:
                break                   # its time is up for this round
        self._flush_output(w)
        return -err if err else count

    cdef int _drain_tunnel(self, worker_t *w) noexcept nogil:
        """Receive up to `batch` VXLAN buffers (one recvmmsg; with UDP_GRO a
        buffer holds several datagrams of one flow, cut every gso_size
        bytes), check the datagrams and switch their inner frames to local
        ports. Returns the number of buffers received or -errno."""
        cdef int i, got
        cdef unsigned char *data
        cdef ssize_t total, seg, off, n
        cdef int64_t peer
        cdef ip_key_t source
        cdef uint64_t now = monotonic_ns()
        got = recvmmsg(w.rx.fd, w.rx.msgs, w.batch, MSG_DONTWAIT, NULL)
        if got < 0:
            return 0 if errno == EAGAIN or errno == EINTR else -errno
        for i in range(got):
            data = <unsigned char *>w.rx.iov[i].iov_base
            total = w.rx.msgs[i].msg_len
            seg = gro_segment_size(&w.rx.msgs[i].msg_hdr)
            if seg <= 0:
                seg = total
            tunnel_rx_rearm(&w.rx, i)
            # Sources that are not peers are refused before anything is parsed.
            source = key_of_sockaddr(&w.rx.addr[i])
            peer = peer_find(&self.peers, &source)
            off = 0
            while True:                 # an empty datagram is one (bad) datagram too
                n = min(seg, total - off)
                peer = self._decap(w, i, peer, data + off, n, now)
                off += n
                if off >= total:
                    break
        self._flush_output(w)
        return got

    cdef void _flush_output(self, worker_t *w) noexcept nogil:
        """The round's one flush point: queued datagrams to the peers, and
        the held GRO superframe to its port (see the module's docstring)."""
        if w.tx.n_msgs:
            self._flush_tunnel(w)
        gro_flush(&w.gro, &self.ports, &w.totals)

    cdef void _flush_tunnel(self, worker_t *w) noexcept nogil:
        tunnel_flush(&w.tx, &self.peers, &w.tunnel, &w.totals, &self.cap, &w.rx.vtep)

    cdef int64_t _decap(self, worker_t *w, int i, int64_t peer, unsigned char *data, ssize_t n,
                        uint64_t now) noexcept nogil:
        """Check one VXLAN datagram of received buffer i (from peer, -1 if
        unknown) and switch its inner frame. Returns the peer (learned)."""
        cdef int64_t vni, member
        cdef uint16_t net
        w.tunnel.rx_packets += 1
        w.tunnel.rx_bytes += n
        if peer < 0 and not w.rx.learn_peers:
            self._drop_datagram(w, i, DROP_UNKNOWN_PEER, data, n)
            return peer
        vni = vxlan_vni(data) if n >= VXLAN_HLEN else -1
        if vni < 0:
            self._drop_datagram(w, i, DROP_BAD_VXLAN, data, n)
            return peer
        net = network_of_vni(&self.networks, vni)
        if net == 0:
            self._drop_datagram(w, i, DROP_UNKNOWN_VNI, data, n)
            return peer
        if peer < 0 or not peer_is_member(&self.peers, peer, net):
            # Configured peers inject only into their own networks; with
            # learn_peers, a new or learned source becomes a member of this one.
            member = -1
            if w.rx.learn_peers and (peer < 0 or self.peers.slots[peer].learned):
                member = peer_join(&self.peers, key_of_sockaddr(&w.rx.addr[i]), net, True)
            if member < 0:                          # not ours to learn, or tables full
                self._drop_datagram(w, i, DROP_UNKNOWN_PEER if peer < 0 else DROP_PEER_NOT_MEMBER,
                                    data, n)
                return peer
            peer = member
        self.peers.slots[peer].last_rx_ns = now
        self.peers.slots[peer].rx_packets += 1
        self.peers.slots[peer].rx_bytes += n
        self._switch(w, PEER_BASE + peer, &w.tunnel, net, w.rx.zero_vhdr, data + VXLAN_HLEN,
                     n - VXLAN_HLEN, now)
        return peer

    cdef int _check(self, const port_t *inp, uint16_t net, const unsigned char *hdr,
                    const unsigned char *frame, ssize_t n) noexcept nogil:
        """The ingress checks, in order: a drop reason, or -1 when the frame
        may be switched. Shared by the pipeline and trace."""
        cdef ssize_t l2 = eth_header_len(frame, n)
        if l2 < 0:
            return DROP_RUNT
        if not vnet_hdr_valid(hdr, n) or \
                (hdr[0] & VNET_F_NEEDS_CSUM and not csum_offload_ok(hdr, frame, n, l2)):
            return DROP_BAD_VNET_HDR
        cdef bint oversize
        if vnet_is_gso(hdr):
            # A superframe is longer than the MTU by design; its segments
            # (gso_size bytes of payload each) are what must fit.
            oversize = le16(hdr + 4) > self.networks.mtu_of[net]
        else:
            oversize = n - l2 > self.networks.mtu_of[net]
        if oversize:
            return DROP_OVERSIZE
        if is_multicast(frame + 6):
            return DROP_BAD_SOURCE
        if inp.secured and spoofed(inp, frame, n, l2):
            return DROP_SPOOFED_SOURCE
        if inp.secured and nd_spoofed(inp, frame, n, l2):
            return DROP_ND_SPOOFED
        if not inp.router and router_message(frame, n, l2):
            return DROP_RA_GUARD
        return -1

    cdef int64_t _destination(self, uint32_t in_id, uint16_t net, const unsigned char *frame,
                              uint64_t now) noexcept nogil:
        """Where a checked frame goes: a port id, PEER_BASE + peer index,
        DEST_FLOOD, or DEST_LOOP (back where it came from: dropped).
        Shared by the pipeline and trace."""
        if is_multicast(frame):
            return DEST_FLOOD
        cdef int64_t out = fdb_lookup(&self.fdb, net, mac48(frame), now)
        # Split horizon: what came from the tunnel never goes back into it.
        if out >= 0 and (out == in_id or (in_id >= PEER_BASE and out >= PEER_BASE)):
            return DEST_LOOP
        return out if out >= 0 else DEST_FLOOD

    cdef void _switch(self, worker_t *w, uint32_t in_id, port_t *inp, uint16_t net, unsigned char *hdr,
                      unsigned char *frame, ssize_t n, uint64_t now) noexcept nogil:
        """Check, learn, look up, deliver: the pipeline for one frame. in_id
        is a port id, or PEER_BASE + peer index for frames from the tunnel."""
        cdef bint from_tunnel = in_id >= PEER_BASE
        if w.trace == NULL:
            if self.cap.active:
                cap_offer(&self.cap, CAP_DECAP if from_tunnel else CAP_INGRESS, in_id, -1,
                          frame, n)
            if not from_tunnel:
                inp.rx_packets += 1
                inp.rx_bytes += max(n, 0)
        cdef int reason = self._check(inp, net, hdr, frame, n)
        if reason < 0 and w.trace != NULL:
            trace_step(w.trace, TRACE_CHECKS, -1, in_id, 0, 0)
        if reason < 0 and inp.ingress.rate > 0 and not self._take(w, &inp.ingress, n, now, -1):
            reason = DROP_RATE_LIMITED
        if reason < 0 and self._learn(w, in_id, net, frame, now) < 0:
            reason = DROP_MAC_PINNED
        if reason >= 0:
            self._drop_frame(w, inp, reason, in_id, frame, n)
            return
        cdef uint64_t known_mac
        if not from_tunnel:
            known_mac = arp_request_target(&self.neigh, net, frame, n)
            if known_mac:               # ARP suppression: answered here, nothing floods
                if w.trace != NULL:
                    trace_step(w.trace, TRACE_ARP, -1, in_id, known_mac, 0)
                    return
                self.neigh.answered += 1
                self._send(w, inp, self.neigh.reply, arp_reply(&self.neigh, frame, known_mac),
                           ARP_FRAME_LEN)
                return
            known_mac = nd_request_target(&self.neigh, net, frame, n)
            if known_mac:               # ... and ND suppression, the same for IPv6
                if w.trace != NULL:
                    trace_step(w.trace, TRACE_ND, -1, in_id, known_mac, 0)
                    return
                self.neigh.answered6 += 1
                self._send(w, inp, self.neigh.reply, na_reply(&self.neigh, frame, known_mac),
                           NA_FRAME_LEN)
                return
        cdef int64_t out = -1
        cdef verdict_t v
        if not inp.router and ct_gateway_count(&self.ct, ct_port(in_id))[0]:
            out = self._gateway_reply(w, in_id, net, frame, n, now)
        if out < 0:
            out = self._destination(in_id, net, frame, now)
            if w.trace != NULL:
                out = trace_destination(w.trace, in_id, frame, out)
        if out == DEST_LOOP:
            self._drop_frame(w, inp, DROP_LOOP, in_id, frame, n)
        elif out == DEST_FLOOD:
            if from_tunnel:
                gro_flush(&w.gro, &self.ports, &w.totals)   # keep order with what is held
            self._flood(w, in_id, net, inp, hdr, frame, n, now)
        elif self._policy(w, in_id, inp, NULL if out >= PEER_BASE else &self.ports.slots[out], net,
                          frame, n, now, True, &v) >= 0:
            self._policy_drop(w, in_id, inp, NULL if out >= PEER_BASE else &self.ports.slots[out],
                              &v, frame, n, True)
        elif out >= PEER_BASE:
            w.totals.unicast += 1
            if inp.router:
                self._gateway_track(w, in_id, CT_NO_PORT, net, frame, n, now)
            self._to_peer(w, out - PEER_BASE, net, hdr, frame, n)
        else:
            w.totals.unicast += 1
            if inp.router and not self.ports.slots[out].router:
                self._gateway_track(w, in_id, out, net, frame, n, now)
            if from_tunnel and self.ports.slots[out].vnet_hdr:
                self._to_gro(w, out, hdr, frame, n)
            else:
                self._send(w, &self.ports.slots[out], hdr, frame, n)

    cdef bint _take(self, worker_t *w, bucket_t *b, ssize_t n, uint64_t now,
                    int64_t port) noexcept nogil:
        """A rate limit's token bucket (ingress: port -1): may n bytes pass?
        A trace looks without taking."""
        if w.trace == NULL:
            return bucket_take(b, n, now)
        cdef bint ok = bucket_would_take(b, n, now)
        trace_step(w.trace, TRACE_RATE, -1 if ok else DROP_RATE_LIMITED, port, 0, 0)
        return ok

    cdef int _learn(self, worker_t *w, uint32_t in_id, uint16_t net, const unsigned char *frame,
                    uint64_t now) noexcept nogil:
        """Learn the frame's source at in_id: -1 if it is pinned elsewhere.
        A trace records what is known of it instead."""
        if w.trace == NULL:
            return fdb_learn(&self.fdb, net, mac48(frame + 6), in_id, now)
        cdef uint64_t src = mac48(frame + 6)
        cdef int64_t pinned = fdb_pinned_port(&self.fdb, net, src)
        trace_step(w.trace, TRACE_LEARN, -1, fdb_lookup(&self.fdb, net, src, now), src, pinned)
        return -1 if pinned >= 0 and pinned != in_id else 0

    cdef int _policy(self, worker_t *w, uint32_t in_id, port_t *inp, port_t *out, uint16_t net,
                     const unsigned char *frame, ssize_t n, uint64_t now, bint commit,
                     verdict_t *v) noexcept nogil:
        """-1 when NetworkPolicy lets a frame from in_id go to out (NULL:
        to a peer), else its drop reason (v says why). commit: track and
        refresh connections (trace does not). Costs two tests unless a pod
        on either end is selected by a policy, or the frame crosses a host
        port while some pod is. Shared by the pipeline and trace."""
        cdef port_t *src = inp if in_id < PEER_BASE else NULL
        v.reason, v.how, v.policy, v.direction = -1, HOW_OPEN, 0, POL_INGRESS
        if (src == NULL or src.policy == NULL) and (out == NULL or out.policy == NULL) and not (
                self.policed and ((src != NULL and src.router) or (out != NULL and out.router))):
            return -1
        cdef flow_t f
        cdef pol_path_t path
        flow_parse(&f, net, frame, n, eth_header_len(frame, n))
        self._end(&path.src, src, &f.src, net)
        self._end(&path.dst, out, &f.dst, net)
        path.in_port = ct_port(in_id)
        path.out_port = out - self.ports.slots if out != NULL else CT_NO_PORT
        # Charged to the pod that opens it (through the node too), else to
        # the one it reaches, else to where it came from.
        path.owner = (path.src.pod - self.ports.slots if path.src.pod != NULL else
                      path.dst.pod - self.ports.slots if path.dst.pod != NULL else path.in_port)
        policy_decide(&self.ct, &self.frags, &path, &f, net, ms32(now),
                      commit and w.trace == NULL, v)
        if w.trace != NULL:
            trace_verdict(w.trace, path.out_port if out != NULL else -1, v)
        return v.reason

    cdef void _end(self, pol_end_t *end, const port_t *p, const ip_key_t *address,
                   uint16_t net) noexcept nogil:
        """One end of a packet's path: a pod's port is the pod, the tunnel
        (NULL) is beyond, and behind a host port is the local pod that holds
        the address, or the node itself, or a Service, or anyone else."""
        cdef uint64_t owner
        end.pod, end.host, end.node, end.service = p, False, False, False
        if p == NULL or not p.router:
            return
        end.host, end.pod = True, NULL
        owner = neigh_lookup(&self.owners, net, address) if not key_is_zero(address) else 0
        if owner:
            end.pod = &self.ports.slots[owner - 1]
        else:
            end.node = owns_address(p, address)
            end.service = is_service(&self.services, address)

    cdef int64_t _gateway_of(self, worker_t *w, uint32_t in_id, uint16_t net, const unsigned char *frame,
                             ssize_t n, uint64_t now) noexcept nogil:
        """The host port a frame from pod port or peer in_id must go back
        through (a reply of a connection that came in through it), or -1
        (_gateway.pxi). Shared by the pipeline and trace."""
        cdef flow_t f
        flow_parse(&f, net, frame, n, eth_header_len(frame, n))
        cdef int64_t gw = gateway_of_reply(&self.ct, &f, net, ct_port(in_id), ms32(now))
        if gw < 0 or port_at(&self.ports, gw) == NULL or not self.ports.slots[gw].router \
                or self.ports.slots[gw].network != net:
            return -1
        return gw

    cdef int64_t _gateway_reply(self, worker_t *w, uint32_t in_id, uint16_t net, unsigned char *frame,
                                ssize_t n, uint64_t now) noexcept nogil:
        """_gateway_of, with the frame's destination MAC made the host port's."""
        cdef int64_t gw = self._gateway_of(w, in_id, net, frame, n, now)
        if gw >= 0:
            put_mac(frame, self.ports.slots[gw].mac)
            w.gateway_replies += 1
            if w.trace != NULL:
                trace_step(w.trace, TRACE_GATEWAY_REPLY, -1, gw, self.ports.slots[gw].mac, 0)
        return gw

    cdef void _gateway_track(self, worker_t *w, uint32_t in_id, uint16_t out, uint16_t net,
                             const unsigned char *frame, ssize_t n, uint64_t now) noexcept nogil:
        """A frame from host port in_id to a pod's port or (CT_NO_PORT) a
        peer: its connection is marked, unless the node itself sent it."""
        cdef flow_t f
        cdef pol_end_t source
        if w.trace != NULL:
            return
        flow_parse(&f, net, frame, n, eth_header_len(frame, n))
        self._end(&source, &self.ports.slots[in_id], &f.src, net)
        if f.kind != FLOW_IP or source.node:
            return
        gateway_track(&self.ct, &f, net, in_id, out, source.pod - self.ports.slots
                      if source.pod != NULL else out if out != CT_NO_PORT else in_id, ms32(now))

    cdef void _policy_drop(self, worker_t *w, uint32_t in_id, port_t *inp, port_t *out, const verdict_t *v,
                           const unsigned char *frame, ssize_t n, bint whole) noexcept nogil:
        """A frame (whole: all of it; else one copy, towards out or the
        peers) that policy refused: counted on the pod whose policy decided."""
        cdef port_t *decider = out if v.direction == POL_INGRESS else inp
        if w.trace != NULL:             # its verdict is the trace's policy step
            return
        if decider != NULL and v.reason == DROP_POLICY_DENIED:
            decider.policy_denied += 1
        w.totals.drops[v.reason] += 1
        if whole:
            inp.rx_dropped += 1
        elif out != NULL:
            out.tx_dropped += 1
        if self.cap.active:
            cap_offer_detail(&self.cap, CAP_DROP, in_id, v.reason,
                             (<uint32_t>v.direction << 31) | v.policy, frame, n)

    cdef void _flood(self, worker_t *w, uint32_t in_id, uint16_t net, port_t *inp, unsigned char *hdr,
                     unsigned char *frame, ssize_t n, uint64_t now) noexcept nogil:
        cdef uint32_t i
        cdef bint sent = False, refused = False
        cdef int to_peers = -2          # policy's verdict on copies to peers, once asked
        cdef verdict_t v
        # A pod's Router Solicitations and MLD reports go to the host port only.
        cdef bint routers_only = not inp.router and for_routers(frame, n)
        for i in range(self.ports.limit):
            if i != in_id and self.ports.slots[i].fd >= 0 and self.ports.slots[i].network == net \
                    and (self.ports.slots[i].router or not routers_only):
                if self._policy(w, in_id, inp, &self.ports.slots[i], net, frame, n, now, True,
                                &v) >= 0:
                    self._policy_drop(w, in_id, inp, &self.ports.slots[i], &v, frame, n, False)
                    refused = True
                    continue
                self._send(w, &self.ports.slots[i], hdr, frame, n)
                sent = True
        if in_id < PEER_BASE and not routers_only:
            # Head-end replication: one copy per peer of the network. Local
            # copies went first: encapsulation may complete the checksum in place.
            for i in range(self.peers.n_members):
                if self.peers.member_net[i] == net:
                    if to_peers == -2:
                        to_peers = self._policy(w, in_id, inp, NULL, net, frame, n, now, True, &v)
                        if to_peers >= 0:
                            self._policy_drop(w, in_id, inp, NULL, &v, frame, n, False)
                            refused = True
                    if to_peers >= 0:
                        break
                    self._to_peer(w, self.peers.member_peer[i], net, hdr, frame, n)
                    sent = True
        if refused and not sent:
            if w.trace == NULL:
                inp.rx_dropped += 1
        elif sent:
            w.totals.flooded += 1
        else:
            self._drop_frame(w, inp, DROP_NO_ROUTE, in_id, frame, n)

    cdef void _send(self, worker_t *w, port_t *out, unsigned char *hdr, unsigned char *frame,
                    ssize_t n) noexcept nogil:
        """Write a frame to a port (rate limit, offload header or not)."""
        cdef ssize_t written, want = n
        cdef uint32_t out_id = out - self.ports.slots
        if out.egress.rate > 0 and not self._take(w, &out.egress, n, monotonic_ns(), out_id):
            self._egress_drop(w, out, out_id, DROP_RATE_LIMITED, frame, n)
            return
        if not out.vnet_hdr and vnet_is_gso(hdr):
            self._egress_drop(w, out, out_id, DROP_NEEDS_SEGMENTATION, frame, n)
            return
        if w.trace != NULL:
            trace_step(w.trace, TRACE_SEND, -1, out_id, 0, 0)
            return
        cdef iovec parts[2]
        if out.vnet_hdr:
            want = n + VNET_HLEN
            if hdr + VNET_HLEN == frame:
                written = write(out.fd, hdr, want)
            else:                                   # a decapsulated frame: header apart
                parts[0].iov_base, parts[0].iov_len = hdr, VNET_HLEN
                parts[1].iov_base, parts[1].iov_len = frame, n
                written = writev(out.fd, parts, 2)
        else:
            if hdr[0] & VNET_F_NEEDS_CSUM:
                complete_checksum(hdr, frame, n)    # in place, once: later copies reuse it
            written = write(out.fd, frame, n)
        if written != want:
            self._egress_drop(w, out, out_id, write_error_reason(written), frame, n)
            return
        out.tx_packets += 1
        out.tx_bytes += n
        if self.cap.active:
            cap_offer(&self.cap, CAP_EGRESS, out_id, -1, frame, n)

    cdef void _egress_drop(self, worker_t *w, port_t *out, uint32_t out_id, int reason,
                           const unsigned char *frame, ssize_t n) noexcept nogil:
        """A copy towards a port that was not written."""
        if w.trace != NULL:
            trace_step(w.trace, TRACE_DROP, reason, out_id, 0, 0)
            return
        out.tx_dropped += 1
        w.totals.drops[reason] += 1
        if self.cap.active:
            cap_offer(&self.cap, CAP_DROP, out_id, reason, frame, n)

    cdef void _to_gro(self, worker_t *w, uint32_t out, unsigned char *hdr, unsigned char *frame,
                      ssize_t n) noexcept nogil:
        """Deliver a decapsulated frame to an offload port through GRO."""
        cdef ssize_t hlen = tcp_gro_header_len(frame, n)
        # Limited ports (and a trace) take it frame by frame.
        if hlen < 0 or w.trace != NULL or self.ports.slots[out].egress.rate > 0:
            gro_flush(&w.gro, &self.ports, &w.totals)
            self._send(w, &self.ports.slots[out], hdr, frame, n)
            return
        if self.cap.active:                     # each segment, as it goes into the superframe
            cap_offer(&self.cap, CAP_EGRESS, out, -1, frame, n)
        gro_add(&w.gro, &self.ports, &w.totals, out, frame, n, hlen)

    cdef void _to_peer(self, worker_t *w, uint32_t peer, uint16_t net, unsigned char *hdr,
                       unsigned char *frame, ssize_t n) noexcept nogil:
        """Queue the frame, VXLAN-encapsulated, for the peer (cut into
        segments first if it is a TCP superframe); sent at the flush."""
        cdef ssize_t l2 = 0, hlen = 0, off, size, gso_size = 0
        cdef uint32_t i = 0, k, vni = self.networks.vni_of[net]
        cdef bint gso = vnet_is_gso(hdr)
        cdef int reason = -1
        if gso:
            l2 = eth_header_len(frame, n)
            hlen = tso_header_len(hdr, frame, n, l2)
            gso_size = le16(hdr + 4)
            if hlen < 0 or hlen > SEG_HDR_MAX:
                reason = DROP_NEEDS_SEGMENTATION
            elif hlen + gso_size + w.tx.outer_overhead > w.tx.underlay_mtu:
                reason = DROP_TOO_BIG
        elif n + w.tx.outer_overhead > w.tx.underlay_mtu:
            reason = DROP_TOO_BIG
        if reason >= 0:
            self._peer_drop(w, peer, reason, frame, n)
            return
        if w.trace != NULL:
            trace_step(w.trace, TRACE_ENCAP, -1, PEER_BASE + peer, 0,
                       w.tx.sport[tunnel_sender(&w.tx, frame, n)] if w.tx.n_senders else -1)
            return
        if gso:
            off = hlen
            while off < n:
                size = min(gso_size, n - off)
                self._room_to_queue(w)
                k = tunnel_queue(&w.tx, peer, vni, frame, NULL, hlen, frame + off, size)
                tso_segment_headers(<unsigned char *>w.tx.iov[3 * k + 1].iov_base,
                                    hdr, frame, l2, hlen, i, frame + off, size, off + size >= n)
                off += size
                i += 1
            return
        if hdr[0] & VNET_F_NEEDS_CSUM:
            complete_checksum(hdr, frame, n)
        self._room_to_queue(w)
        tunnel_queue(&w.tx, peer, vni, frame, frame, n, NULL, 0)

    cdef void _room_to_queue(self, worker_t *w) noexcept nogil:
        if w.tx.n_pending == MAX_PENDING:
            self._flush_tunnel(w)

    cdef void _peer_drop(self, worker_t *w, uint32_t peer, int reason, const unsigned char *frame,
                         ssize_t n) noexcept nogil:
        if w.trace != NULL:
            trace_step(w.trace, TRACE_DROP, reason, PEER_BASE + peer, 0, 0)
            return
        tunnel_drop(&self.peers, &w.tunnel, &w.totals, &self.cap, peer, reason, frame, n)

    cdef void _drop_frame(self, worker_t *w, port_t *inp, int reason, uint32_t in_id,
                          const unsigned char *frame, ssize_t n) noexcept nogil:
        if w.trace != NULL:             # the frame itself, not a copy: value 1
            trace_step(w.trace, TRACE_DROP, reason, in_id, 0, 1)
            return
        count_drop(&w.totals, inp, reason)
        if self.cap.active:
            cap_offer(&self.cap, CAP_DROP, in_id, reason, frame, n)

    cdef void _drop_datagram(self, worker_t *w, int i, int reason, unsigned char *payload,
                             ssize_t n) noexcept nogil:
        """A tunnel-level drop of received datagram i (its UDP payload)."""
        count_drop(&w.totals, &w.tunnel, reason)
        if self.cap.active:
            capture_received_drop(&self.cap, &w.rx, self.peers.udp_port, i, reason, payload, n)
