# cython: language_level=3
"""The data plane: ports, FDB and the per-frame pipeline, in C.

The control plane owns file descriptors and hands them to the data plane,
which polls them all through one epoll set: when the event loop reports that
set readable, one call to `poll()` serves every ready port and the VXLAN
socket in turn, reading up to `batch` frames at a time into preallocated
buffers and switching each without creating a Python object. Everything else
here (adding ports, reading counters, dumping the FDB) is control-path code
and may use Python objects freely.
"""

import os

from libc.errno cimport errno, EAGAIN, EINTR, EIO
from libc.stdint cimport int64_t
from libc.stdlib cimport calloc, malloc, free
from libc.string cimport memset
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC, CLOCK_REALTIME
from posix.unistd cimport read, write

cdef extern from "<sys/uio.h>":
    struct iovec:
        void *iov_base
        size_t iov_len
    ssize_t writev(int fd, const iovec *iov, int iovcnt) nogil

cdef extern from "<netinet/in.h>":
    struct in_addr:
        uint32_t s_addr
    struct sockaddr_in:
        uint16_t sin_family
        uint16_t sin_port
        in_addr sin_addr
    int AF_INET
    uint16_t htons(uint16_t v) nogil

cdef extern from "<sys/socket.h>":
    struct msghdr:
        void *msg_name
        unsigned int msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    cmsghdr *CMSG_FIRSTHDR(msghdr *m) nogil
    cmsghdr *CMSG_NXTHDR(msghdr *m, cmsghdr *c) nogil
    unsigned char *CMSG_DATA(cmsghdr *c) nogil
    size_t CMSG_LEN(size_t n) nogil
    int MSG_DONTWAIT
    int sendmmsg(int fd, mmsghdr *msgs, unsigned int n, int flags) nogil
    int recvmmsg(int fd, mmsghdr *msgs, unsigned int n, int flags, timespec *timeout) nogil

cdef extern from "<sys/epoll.h>":
    ctypedef union epoll_data_t:
        uint32_t u32
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int EPOLLIN, EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CLOEXEC
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event) nogil
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout) nogil

cdef extern from "<unistd.h>":
    int close(int fd)

include "_frame.pxi"
include "_fdb.pxi"
include "_offload.pxi"
include "_vxlan.pxi"
include "_security.pxi"
include "_ratelimit.pxi"
include "_capture.pxi"

# Names of the drop reasons, in the order of their enum in _fastpath.pxd.
DROP_NAMES = ("runt", "oversize", "bad_source", "spoofed_source", "ra_guard", "mac_pinned",
              "rate_limited", "loop", "no_route", "bad_vnet_hdr", "bad_vxlan", "unknown_vni",
              "unknown_peer", "peer_not_member", "needs_segmentation", "too_big", "port_down",
              "queue_full", "write_error")
assert len(DROP_NAMES) == N_DROP_REASONS
MAX_NETWORK_IDS = MAX_NETWORKS
PORT_PEER_BASE, PORT_TUNNEL, PEER_SLOTS = PEER_BASE, TUNNEL_PORT, MAX_PEERS


cdef inline uint64_t monotonic_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec


cdef enum:
    SLOT_SIZE = FRAME_HEADROOM + FRAME_BUF   # one frame buffer of a batch
    POLL_EVENTS = 256                        # ready fds taken from epoll at once
    POLL_BUDGET_NS = 2000000                 # then back to the event loop (control plane)
    POLL_QUANTUM_NS = 50000                  # a port's time per round, at most (and `batch` frames)
    DEST_FLOOD = -1                          # _destination: every other port and peer
    DEST_LOOP = -2                           # _destination: back where it came from


cdef inline unsigned char *slot_frame(unsigned char *slots, int i) noexcept nogil:
    return slots + <size_t>i * SLOT_SIZE + FRAME_HEADROOM


cdef class Datapath:
    """A switch: ports (file descriptors carrying Ethernet frames), an
    optional VXLAN tunnel to peers, one FDB shared by all networks (keyed by
    network and MAC), and counters."""

    cdef port_t *ports
    cdef uint32_t port_limit      # highest port id in use + 1
    cdef fdb_t fdb
    # One buffer per frame of a batch: frames queued for the tunnel stay put
    # until the batch's sendmmsg.
    cdef unsigned char *slots
    cdef uint64_t drops[N_DROP_REASONS]
    cdef uint64_t unicast         # frames delivered to one learned port or peer
    cdef uint64_t flooded         # frames sent to every other port/peer of their network
    cdef readonly int batch
    cdef int epfd                 # every port's fd and the tunnel's: poll() serves them
    cdef epoll_event events[POLL_EVENTS]
    cdef uint64_t busy_poll_ns    # keep polling this long after the last frame
    cdef uint32_t *failed         # ports whose fd failed in poll(), for the control plane
    cdef uint32_t n_failed
    # Networks: VNI and MTU per data-plane network id.
    cdef uint32_t *vni_of
    cdef uint16_t *mtu_of
    # Overlay: peers, which networks flood to which peers, the tunnel fds.
    cdef peer_t *peers
    cdef sockaddr_in *peer_addr
    cdef uint32_t peer_limit
    cdef uint16_t *member_net
    cdef uint16_t *member_peer
    cdef uint32_t n_members
    cdef uint8_t *member_bits     # [peer][network] bitmap: checked for every datagram received
    cdef uint32_t n_learned_peers
    cdef uint32_t max_learned_peers
    cdef int tunnel_rx_fd         # UDP socket bound to the VTEP address and port (UDP_GRO)
    cdef int tx_fd[MAX_SENDERS]   # UDP sockets bound to the VTEP address, one per source
    cdef uint16_t tx_sport[MAX_SENDERS]   # port; a flow's hash picks one
    cdef uint32_t n_tx
    cdef uint16_t udp_port
    cdef uint16_t underlay_mtu
    cdef bint learn_peers
    cdef port_t tunnel            # the tunnel's own rx/tx counters
    # Datagrams queued for the tunnel: each is 3 iovecs (VXLAN header, headers,
    # payload); consecutive ones of the same peer and socket are grouped into
    # messages that the kernel cuts back into datagrams (UDP_SEGMENT).
    cdef iovec *pending_iov
    cdef unsigned char *pending_vxlan
    cdef unsigned char *pending_seg
    cdef uint32_t *pending_peer
    cdef uint32_t *pending_len
    cdef uint32_t n_pending
    cdef mmsghdr *tx_mmsg
    cdef tx_msg_t *tx_msgs
    cdef unsigned char *tx_ctrl
    cdef uint32_t n_msgs
    cdef unsigned char *rx_ctrl
    cdef unsigned char zero_vhdr[VNET_HLEN]   # the offload header of decapsulated frames
    cdef mmsghdr *rx_msgs
    cdef iovec *rx_iov
    cdef sockaddr_in *rx_addr
    # GRO on decap: consecutive TCP segments of one flow from one recvmmsg
    # batch, held as iovecs into the batch's buffers (no copy) and written
    # to the pod's TAP as one superframe.
    cdef iovec gro_iov[GRO_MAX_IOV + 2]   # [virtio_net_hdr, first frame, payloads...]
    cdef unsigned char gro_vhdr[VNET_HLEN]
    cdef int gro_n                        # iovecs in use; 0 = nothing held
    cdef uint32_t gro_out
    cdef ssize_t gro_total, gro_hlen
    cdef uint16_t gro_mss
    cdef uint32_t gro_next_seq
    cdef readonly uint64_t gro_merged     # segments that went out inside a superframe
    # Capture: sessions, the bitmask of active ones (0: no capture cost but
    # this test), the ring of records, a buffer to build outer packets in.
    cdef cap_session_t cap_sessions[MAX_CAPTURES]
    cdef uint32_t cap_active
    cdef unsigned char *cap_ring
    cdef uint64_t cap_head, cap_tail
    cdef readonly uint64_t cap_dropped    # records lost because the ring was full
    cdef unsigned char *cap_scratch
    cdef uint32_t vtep_ip                 # network byte order, for captured outer headers

    def __cinit__(self, uint64_t fdb_max_entries=65536, double aging_time=300.0,
                  int batch=64, double busy_poll_us=0, uint32_t fdb_max_per_port=0,
                  uint32_t fdb_max_per_peer=0):
        """fdb_max_per_port / _per_peer: learned entries one port / one peer
        may hold (0: no limit but the table's)."""
        if fdb_max_entries < 1 or aging_time <= 0 or not 1 <= batch <= 1024 or busy_poll_us < 0:
            raise ValueError("fdb_max_entries and aging_time must be positive, batch 1..1024, "
                             "busy_poll_us >= 0")
        seed = int.from_bytes(os.urandom(8), "little")
        self.batch = batch
        self.busy_poll_ns = <uint64_t>(busy_poll_us * 1000)
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, "epoll_create1 failed")
        self.failed = <uint32_t *>calloc(MAX_PORTS + 1, sizeof(uint32_t))
        self.n_failed = 0
        self.ports = <port_t *>calloc(MAX_PORTS, sizeof(port_t))
        self.slots = <unsigned char *>malloc(<size_t>batch * SLOT_SIZE)
        self.vni_of = <uint32_t *>calloc(MAX_NETWORKS, sizeof(uint32_t))
        self.mtu_of = <uint16_t *>calloc(MAX_NETWORKS, sizeof(uint16_t))
        self.peers = <peer_t *>calloc(MAX_PEERS, sizeof(peer_t))
        self.peer_addr = <sockaddr_in *>calloc(MAX_PEERS, sizeof(sockaddr_in))
        self.member_net = <uint16_t *>calloc(MAX_MEMBERS, sizeof(uint16_t))
        self.member_peer = <uint16_t *>calloc(MAX_MEMBERS, sizeof(uint16_t))
        self.member_bits = <uint8_t *>calloc(MAX_PEERS, MEMBER_BYTES)
        self.pending_iov = <iovec *>calloc(3 * MAX_PENDING, sizeof(iovec))
        self.pending_vxlan = <unsigned char *>calloc(MAX_PENDING, VXLAN_HLEN)
        self.pending_seg = <unsigned char *>calloc(MAX_PENDING, SEG_HDR_MAX)
        self.pending_peer = <uint32_t *>calloc(MAX_PENDING, sizeof(uint32_t))
        self.pending_len = <uint32_t *>calloc(MAX_PENDING, sizeof(uint32_t))
        self.tx_mmsg = <mmsghdr *>calloc(MAX_PENDING, sizeof(mmsghdr))
        self.tx_msgs = <tx_msg_t *>calloc(MAX_PENDING, sizeof(tx_msg_t))
        self.tx_ctrl = <unsigned char *>calloc(MAX_PENDING, CMSG_BUF)
        self.rx_ctrl = <unsigned char *>calloc(batch, CMSG_BUF)
        self.rx_msgs = <mmsghdr *>calloc(batch, sizeof(mmsghdr))
        self.rx_iov = <iovec *>calloc(batch, sizeof(iovec))
        self.rx_addr = <sockaddr_in *>calloc(batch, sizeof(sockaddr_in))
        self.cap_ring = <unsigned char *>malloc(CAP_RING_BYTES)
        self.cap_scratch = <unsigned char *>malloc(CAP_SCRATCH)
        if not self.cap_ring or not self.cap_scratch or not (self.ports and self.slots and self.vni_of and self.mtu_of and self.peers
                and self.peer_addr and self.member_net and self.member_peer and self.member_bits
                and self.pending_len
                and self.pending_iov and self.pending_vxlan and self.pending_seg and self.pending_peer
                and self.failed and self.tx_mmsg and self.tx_msgs and self.tx_ctrl and self.rx_ctrl and self.rx_msgs and self.rx_iov and self.rx_addr) or \
                fdb_init(&self.fdb, fdb_max_entries, <uint64_t>(aging_time * 1e9), seed) < 0:
            raise MemoryError()
        if fdb_max_per_port:
            self.fdb.max_per_port = fdb_max_per_port
        if fdb_max_per_peer:
            self.fdb.max_per_peer = fdb_max_per_peer
        cdef int i
        for i in range(MAX_PORTS):
            self.ports[i].fd = -1
        memset(self.drops, 0, sizeof(self.drops))
        memset(&self.tunnel, 0, sizeof(port_t))
        self.tunnel.fd = -1
        self.tunnel_rx_fd = -1
        self.port_limit = self.peer_limit = self.n_members = self.n_pending = self.n_msgs = 0
        self.n_learned_peers = self.max_learned_peers = 0
        self.n_tx = 0
        memset(self.zero_vhdr, 0, VNET_HLEN)
        self.gro_n = 0
        self.gro_merged = 0
        memset(self.cap_sessions, 0, sizeof(self.cap_sessions))
        self.cap_active = 0
        self.cap_head = self.cap_tail = self.cap_dropped = 0
        self.vtep_ip = 0
        self.unicast = self.flooded = 0
        for i in range(batch):
            # VXLAN lands just before the frame: the inner frame then starts
            # where every other path expects it.
            self.rx_iov[i].iov_base = slot_frame(self.slots, i) - VXLAN_HLEN
            self.rx_iov[i].iov_len = FRAME_BUF + VXLAN_HLEN
            self.rx_msgs[i].msg_hdr.msg_iov = &self.rx_iov[i]
            self.rx_msgs[i].msg_hdr.msg_iovlen = 1
            self.rx_msgs[i].msg_hdr.msg_name = &self.rx_addr[i]
            self.rx_msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
            self.rx_msgs[i].msg_hdr.msg_control = self.rx_ctrl + i * CMSG_BUF
            self.rx_msgs[i].msg_hdr.msg_controllen = CMSG_BUF

    def __dealloc__(self):
        if self.epfd >= 0:
            close(self.epfd)
        free(self.failed)
        fdb_destroy(&self.fdb)
        free(self.ports); free(self.slots); free(self.vni_of); free(self.mtu_of)
        free(self.peers); free(self.peer_addr); free(self.member_net); free(self.member_peer)
        free(self.member_bits)
        free(self.pending_iov); free(self.pending_vxlan); free(self.pending_seg)
        free(self.pending_peer); free(self.pending_len); free(self.tx_mmsg); free(self.tx_msgs)
        free(self.tx_ctrl); free(self.rx_ctrl); free(self.rx_msgs); free(self.rx_iov); free(self.rx_addr)
        free(self.cap_ring); free(self.cap_scratch)
        for i in range(MAX_CAPTURES):
            free(self.cap_sessions[i].prog)

    # ------------------------------------------------------------- networks

    def set_network(self, int network, uint32_t vni, int mtu):
        """Declare network id 1..4095 with its VNI and pod MTU."""
        if not 0 < network < MAX_NETWORKS:
            raise ValueError(f"network id must be 1..{MAX_NETWORKS - 1}")
        if not 0 < vni <= 0xFFFFFF or not 68 <= mtu <= 65535:
            raise ValueError("vni must be 1..16777215 and mtu 68..65535")
        self.vni_of[network] = vni
        self.mtu_of[network] = mtu

    def remove_network(self, int network):
        """Forget a network whose ports are gone: its peers' memberships and
        its FDB entries, static ones included."""
        self._declared(network)
        for ip, nets, *_ in self.peer_list():
            if network in nets:
                self.remove_peer(ip, network)
        fdb_sweep(&self.fdb, SWEEP_NETWORK, network, 0, 0)
        self.vni_of[network] = 0
        self.mtu_of[network] = 0

    cdef inline uint16_t _network_of_vni(self, uint32_t vni) noexcept nogil:
        # Linear: a node has few networks. VNI 0 is never a network's (0
        # marks an undeclared id in vni_of).
        cdef uint16_t net
        if vni == 0:
            return 0
        for net in range(1, MAX_NETWORKS):
            if self.vni_of[net] == vni:
                return net
        return 0

    # ---------------------------------------------------------------- ports

    cdef _declared(self, int network):
        if not 0 < network < MAX_NETWORKS or self.vni_of[network] == 0:
            raise ValueError(f"network {network} is not declared")

    def add_port(self, int fd, int network, bint vnet_hdr=False, bint router=False):
        """Attach a non-blocking fd to a declared network; returns the port id.
        vnet_hdr: frames on the fd are preceded by a virtio_net_hdr; router:
        the port may send IPv6 Router Advertisements and Redirects (the
        host port; every other port is RA-guarded)."""
        self._declared(network)
        cdef uint32_t i
        for i in range(MAX_PORTS):
            if self.ports[i].fd < 0:
                self._watch(fd, i)
                memset(&self.ports[i], 0, sizeof(port_t))
                self.ports[i].fd = fd
                self.ports[i].network = network
                self.ports[i].vnet_hdr = vnet_hdr
                self.ports[i].router = router
                if i >= self.port_limit:
                    self.port_limit = i + 1
                return i
        raise OverflowError(f"all {MAX_PORTS} ports are in use")

    def remove_port(self, uint32_t port_id):
        """Detach a port (the caller closes its fd) and forget its FDB entries."""
        self._port(port_id)
        fdb_sweep(&self.fdb, SWEEP_PORT, 0, port_id, 0)
        self._unwatch(self.ports[port_id].fd)
        self.ports[port_id].fd = -1
        while self.port_limit > 0 and self.ports[self.port_limit - 1].fd < 0:
            self.port_limit -= 1

    cdef _watch(self, int fd, uint32_t key):
        cdef epoll_event ev
        ev.events = EPOLLIN
        ev.data.u32 = key
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
            raise OSError(errno, f"cannot poll fd {fd}")

    cdef void _unwatch(self, int fd) noexcept nogil:
        cdef epoll_event ev
        epoll_ctl(self.epfd, EPOLL_CTL_DEL, fd, &ev)     # fails only if already gone

    def fileno(self):
        """An fd that is readable when any port or the tunnel has frames:
        the event loop watches it and calls poll()."""
        return self.epfd

    def set_port_security(self, uint32_t port_id, mac=None, ips=()):
        """Bind a port to its MAC and IPv4 addresses (integers); frames from
        other sources are dropped as spoofed_source. The MAC is pinned to
        the port in the FDB: frames from anywhere else with it as source
        (another port, a peer) are dropped as mac_pinned. mac=None turns it
        off."""
        cdef port_t *p = self._port(port_id)
        if p.secured:
            fdb_delete(&self.fdb, p.network, p.sec_mac)
            p.secured = False
        if mac is None:
            return
        if len(ips) > MAX_PORT_IPS:
            raise ValueError(f"at most {MAX_PORT_IPS} addresses per port")
        self.pin_mac(port_id, mac)
        p.sec_mac = mac
        p.n_sec_ips = len(ips)
        for i, ip in enumerate(ips):
            p.sec_ips[i] = ip
        p.secured = True

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

    def set_port_rates(self, uint32_t port_id, double ingress_bps=0, double ingress_burst=0,
                       double egress_bps=0, double egress_burst=0):
        """Token-bucket limits in bits/s and bits (rate 0: none). Ingress:
        frames the port sends into the switch; egress: frames written to it."""
        cdef port_t *p = self._port(port_id)
        bucket_set(&p.ingress, ingress_bps, ingress_burst, monotonic_ns())
        bucket_set(&p.egress, egress_bps, egress_burst, monotonic_ns())

    def port_counters(self, uint32_t port_id):
        return _counters(self._port(port_id))

    cdef port_t *_port(self, uint32_t port_id) except NULL:
        if port_id >= MAX_PORTS or self.ports[port_id].fd < 0:
            raise KeyError(f"no port {port_id}")
        return &self.ports[port_id]

    # ---------------------------------------------------------------- peers

    def set_tunnel(self, int rx_fd, senders, int udp_port, int underlay_mtu,
                   bint learn_peers=False, uint32_t vtep_ip=0, uint32_t max_learned_peers=64):
        """Enable VXLAN: rx_fd a non-blocking UDP socket bound to the VTEP
        (UDP_GRO on), senders [(fd, source port)] of non-blocking UDP
        sockets bound to it. learn_peers: a datagram from an unknown source
        makes it a peer of that network (at most max_learned_peers such
        peers; they age, see expire_peers); turning it off forgets them."""
        if not 0 < udp_port < 65536 or not 576 <= underlay_mtu <= 65535:
            raise ValueError("udp_port must be 1..65535 and underlay_mtu 576..65535")
        if not 0 < len(senders) <= MAX_SENDERS:
            raise ValueError(f"1..{MAX_SENDERS} sending sockets")
        self._flush_tunnel()
        for i, (fd, sport) in enumerate(senders):
            self.tx_fd[i], self.tx_sport[i] = fd, sport
        self.n_tx = len(senders)
        if rx_fd != self.tunnel_rx_fd:
            if self.tunnel_rx_fd >= 0:
                self._unwatch(self.tunnel_rx_fd)
            self._watch(rx_fd, TUNNEL_PORT)
        self.tunnel_rx_fd = rx_fd
        for i in range(MAX_PEERS):
            self.peer_addr[i].sin_port = htons(udp_port)
        self.udp_port, self.underlay_mtu, self.learn_peers = udp_port, underlay_mtu, learn_peers
        self.vtep_ip, self.max_learned_peers = vtep_ip, max_learned_peers
        if not learn_peers:
            for ip, _, _, learned in self.peer_list():
                if learned:
                    self.remove_peer(ip)

    cdef inline int64_t _find_peer(self, uint32_t ip) noexcept nogil:
        # Linear: peers are nodes of one cluster, and this runs once per batch entry.
        cdef uint32_t i
        for i in range(self.peer_limit):
            if self.peers[i].ip == ip:
                return i
        return -1

    cdef inline bint _is_member(self, uint32_t peer, uint16_t network) noexcept nogil:
        return self.member_bits[peer * MEMBER_BYTES + (network >> 3)] & (1 << (network & 7))

    cdef inline void _set_member(self, uint32_t peer, uint16_t network, bint member) noexcept nogil:
        cdef uint8_t *byte = &self.member_bits[peer * MEMBER_BYTES + (network >> 3)]
        byte[0] = (byte[0] | (1 << (network & 7))) if member else (byte[0] & ~(1 << (network & 7)))

    cdef int64_t _add_member(self, uint32_t ip, uint16_t network, bint learned=False) noexcept nogil:
        """Peer index of ip, created if new (learned: by learn_peers, within
        max_learned_peers), now flooded to for network; -1 if full."""
        cdef int64_t idx = self._find_peer(ip)
        cdef uint32_t i
        if ip == 0:                     # 0 marks a free slot
            return -1
        if idx < 0 and learned and self.n_learned_peers >= self.max_learned_peers:
            return -1
        if idx < 0:
            for i in range(MAX_PEERS):
                if self.peers[i].ip == 0:
                    idx = i
                    break
            if idx < 0:
                return -1
            memset(&self.peers[idx], 0, sizeof(peer_t))
            memset(self.member_bits + idx * MEMBER_BYTES, 0, MEMBER_BYTES)
            self.peers[idx].ip = ip
            self.peers[idx].learned = learned
            self.n_learned_peers += learned
            self.peer_addr[idx].sin_family = AF_INET
            self.peer_addr[idx].sin_addr.s_addr = ip
            self.peer_addr[idx].sin_port = htons(self.udp_port)
            if idx >= self.peer_limit:
                self.peer_limit = idx + 1
        elif not learned and self.peers[idx].learned:
            self.peers[idx].learned = False         # configured now: no longer ages
            self.n_learned_peers -= 1
        if self._is_member(idx, network):
            return idx
        if self.n_members == MAX_MEMBERS:
            return -1
        self.member_net[self.n_members] = network
        self.member_peer[self.n_members] = idx
        self.n_members += 1
        self._set_member(idx, network, True)
        return idx

    def add_peer(self, uint32_t ip, int network):
        """Flood `network` to the VTEP ip (network byte order, not 0); returns its index."""
        self._declared(network)
        if ip == 0:
            raise ValueError("peer address 0.0.0.0")
        cdef int64_t idx = self._add_member(ip, network)
        if idx < 0:
            raise OverflowError("peer table is full")
        return idx

    def remove_peer(self, uint32_t ip, int network=0):
        """Stop flooding `network` (0: all) to ip; a peer left in no network
        is forgotten with its FDB entries. Returns whether it was known."""
        cdef int64_t idx = self._find_peer(ip)
        if idx < 0:
            return False
        cdef uint32_t i = 0, left = 0
        while i < self.n_members:
            if self.member_peer[i] == idx and (network == 0 or self.member_net[i] == network):
                self._set_member(idx, self.member_net[i], False)
                self.n_members -= 1
                self.member_net[i] = self.member_net[self.n_members]
                self.member_peer[i] = self.member_peer[self.n_members]
                continue
            if self.member_peer[i] == idx:
                left += 1
            i += 1
        if left == 0:
            fdb_sweep(&self.fdb, SWEEP_PORT, 0, PEER_BASE + idx, 0)
            self.n_learned_peers -= self.peers[idx].learned
            self.peers[idx].ip = 0
            while self.peer_limit > 0 and self.peers[self.peer_limit - 1].ip == 0:
                self.peer_limit -= 1
        return True

    def peer_ip(self, uint32_t index):
        """The address of peer `index` (network byte order), 0 if none."""
        return self.peers[index].ip if index < MAX_PEERS else 0

    def expire_peers(self, double max_idle):
        """Forget learned peers not heard from for max_idle seconds; returns
        their addresses."""
        cdef uint64_t now = monotonic_ns(), idle = <uint64_t>(max_idle * 1e9)
        gone = [self.peers[i].ip for i in range(self.peer_limit)
                if self.peers[i].ip and self.peers[i].learned
                and now - self.peers[i].last_rx_ns > idle]
        for ip in gone:
            self.remove_peer(ip)
        return gone

    def peer_list(self):
        """[(ip, [network ids], counters, learned)] of known peers."""
        out = []
        cdef uint32_t i, m
        for i in range(self.peer_limit):
            if self.peers[i].ip == 0:
                continue
            nets = sorted(self.member_net[m] for m in range(self.n_members)
                          if self.member_peer[m] == i)
            p = &self.peers[i]
            out.append((p.ip, nets, {"rx_packets": p.rx_packets, "rx_bytes": p.rx_bytes,
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
        return self.busy_poll_ns / 1e3

    @busy_poll_us.setter
    def busy_poll_us(self, double us):
        if us < 0:
            raise ValueError("busy_poll_us must be >= 0")
        self.busy_poll_ns = <uint64_t>(us * 1000)

    def fdb_add_remote(self, int network, uint64_t mac, uint32_t peer_ip):
        """A static entry: (network, mac) lives behind the peer peer_ip."""
        self._declared(network)
        cdef int64_t idx = self._find_peer(peer_ip)
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
                        self.peers[e.port - PEER_BASE].ip if remote else None,
                        0.0 if e.kind != FDB_LEARNED else <uint32_t>(ms32(now) - e.seen_ms) / 1e3,
                        e.kind != FDB_LEARNED, e.kind == FDB_PINNED))
        return out

    # ------------------------------------------------------------- counters

    def counters(self):
        """Switch-wide counters: decisions, drops by reason, FDB, tunnel."""
        return {
            "unicast": self.unicast,
            "flooded": self.flooded,
            "drops": {DROP_NAMES[i]: self.drops[i] for i in range(N_DROP_REASONS)},
            "fdb": {"entries": self.fdb.count, "max_entries": self.fdb.max_entries,
                    "learned": self.fdb.learned, "moves": self.fdb.moves,
                    "full": self.fdb.full, "limited": self.fdb.limited,
                    "expired": self.fdb.expired,
                    "max_per_port": self.fdb.max_per_port, "max_per_peer": self.fdb.max_per_peer},
            "tunnel": _counters(&self.tunnel),
            "gro_merged": self.gro_merged,
        }

    # -------------------------------------------------------------- capture

    def capture_add(self, uint32_t points, int64_t port=-1, uint32_t snaplen=65535, program=()):
        """Start a session: frames at `points` (CAP_* bits) on `port` (-1:
        any) that the classic BPF `program` ([(code, jt, jf, k)], empty:
        all) accepts. Returns its id (a bit of the records' masks)."""
        cdef int i
        cdef uint32_t j, n = len(program)
        for i in range(MAX_CAPTURES):
            if not self.cap_active & (1u << i):
                break
        else:
            raise OverflowError(f"{MAX_CAPTURES} captures are running already")
        prog = <bpf_insn_t *>calloc(n or 1, sizeof(bpf_insn_t)) if n else NULL
        if n and prog == NULL:
            raise MemoryError()
        for j in range(n):
            code, jt, jf, k = program[j]
            if (code & 0x07) == 0x05 and ((code & 0xF0 == 0 and j + 1 + k > n) or
                                          j + 1 + max(jt, jf) > n):
                free(prog)
                raise ValueError(f"BPF instruction {j} jumps out of the program")
            prog[j].code, prog[j].jt, prog[j].jf, prog[j].k = code, jt, jf, k
        free(self.cap_sessions[i].prog)
        self.cap_sessions[i].points, self.cap_sessions[i].port = points, port
        self.cap_sessions[i].snaplen, self.cap_sessions[i].prog = snaplen, prog
        self.cap_sessions[i].prog_len = n
        self.cap_active |= 1u << i
        return i

    def capture_remove(self, int session):
        """Stop a session; with none left, capture costs nothing again."""
        if 0 <= session < MAX_CAPTURES:
            self.cap_active &= ~(1u << session)
        if self.cap_active == 0:
            self.cap_tail = self.cap_head       # nobody will read what is left

    def capture_read(self, int max_records=4096):
        """Take records from the ring: [(ts_ns, mask, port, point, reason
        (None or its name), orig_len, bytes)]."""
        out = []
        cdef uint64_t pos, room
        cdef cap_rec_t *rec
        while self.cap_tail < self.cap_head and len(out) < max_records:
            pos = self.cap_tail % CAP_RING_BYTES
            room = CAP_RING_BYTES - pos
            rec = <cap_rec_t *>(self.cap_ring + pos)
            if room < sizeof(cap_rec_t) or rec.cap_len == CAP_WRAP:
                self.cap_tail += room
                continue
            data = (self.cap_ring + pos + sizeof(cap_rec_t))[:rec.cap_len]
            out.append((rec.ts_ns, rec.mask, rec.port, rec.point,
                        DROP_NAMES[rec.reason - 1] if rec.reason else None, rec.orig_len, data))
            self.cap_tail += _align8(sizeof(cap_rec_t) + rec.cap_len)
        return out

    cdef void _cap(self, uint32_t point, uint32_t port, int reason, const unsigned char *data,
                   ssize_t n) noexcept nogil:
        """Offer a frame to the active sessions (the caller tested cap_active)."""
        cdef uint32_t i, mask = 0, snap = 0, want
        cdef cap_session_t *s
        if n <= 0:
            return
        for i in range(MAX_CAPTURES):
            if not self.cap_active & (1u << i):
                continue
            s = &self.cap_sessions[i]
            if not s.points & point or (s.port >= 0 and s.port != port):
                continue
            want = s.snaplen
            if s.prog_len:
                want = min(want, bpf_run(s.prog, s.prog_len, data, n, n))
                if want == 0:
                    continue
            mask |= 1u << i
            snap = max(snap, min(<uint32_t>n, want))
        if mask and not ring_put(self.cap_ring, &self.cap_head, self.cap_tail, mask, point, port,
                                 reason + 1 if reason >= 0 else 0, data, n, snap):
            self.cap_dropped += 1

    cdef void _cap_datagram(self, uint32_t point, uint32_t port, int reason, uint32_t src,
                            uint32_t dst, const unsigned char *udp, const iovec *parts,
                            int n_parts) noexcept nogil:
        cdef ssize_t n = outer_packet(self.cap_scratch, src, dst, udp, parts, n_parts)
        if n > 0:
            self._cap(point, port, reason, self.cap_scratch, n)

    # ----------------------------------------------------------- frame path

    def poll(self):
        """Serve every ready port and the tunnel, round-robin: each ready fd
        gets up to `batch` frames or POLL_QUANTUM_NS per round, so a flooding
        port cannot starve the others. Rounds go on while fds are ready (and,
        with busy polling, until busy_poll_us pass without a frame), for at
        most POLL_BUDGET_NS; then the event loop gets its turn. Returns the
        number of ports whose fd failed (take_failed() names them)."""
        cdef int i, n, r
        cdef uint32_t key
        cdef uint64_t start = monotonic_ns(), last = start, now
        with nogil:
            while True:
                n = epoll_wait(self.epfd, self.events, POLL_EVENTS, 0)
                for i in range(n):
                    key = self.events[i].data.u32
                    if key == TUNNEL_PORT:
                        r = self._drain_tunnel()
                        if r < 0:
                            self._fail(key, self.tunnel_rx_fd)
                    elif key < self.port_limit and self.ports[key].fd >= 0:
                        r = self._drain(key)
                        if r < 0:
                            self._fail(key, self.ports[key].fd)
                now = monotonic_ns()
                if n > 0:
                    last = now
                elif now - last >= self.busy_poll_ns:
                    break
                if now - start >= POLL_BUDGET_NS:
                    break
        return self.n_failed

    cdef void _fail(self, uint32_t key, int fd) noexcept nogil:
        self._unwatch(fd)
        if self.n_failed <= MAX_PORTS:
            self.failed[self.n_failed] = key
            self.n_failed += 1

    def take_failed(self):
        """Ids of the ports (PORT_TUNNEL: the tunnel) whose fd failed in
        poll() since the last call; they are no longer polled."""
        out = [self.failed[i] for i in range(self.n_failed)]
        self.n_failed = 0
        return out

    def drain(self, uint32_t port_id):
        """Read and switch up to `batch` frames from one port: the number
        read, or -errno when its fd failed."""
        if port_id >= self.port_limit or self.ports[port_id].fd < 0:
            return 0
        cdef int r
        with nogil:
            r = self._drain(port_id)
        return r

    cdef int _drain(self, uint32_t port_id) noexcept nogil:
        cdef port_t *inp = &self.ports[port_id]
        # The frame starts at `frame` and its virtio_net_hdr sits just
        # before it, so that any egress can write either without a copy.
        cdef unsigned char *frame
        cdef unsigned char *hdr
        cdef uint64_t now = monotonic_ns()
        cdef ssize_t n
        cdef int count = 0, err = 0
        while count < self.batch:
            frame = slot_frame(self.slots, count)
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
            self._switch(port_id, inp, inp.network, hdr, frame, n, now)
            if monotonic_ns() - now >= POLL_QUANTUM_NS:
                break                   # its time is up for this round
        self._flush_tunnel()
        return -err if err else count

    def drain_tunnel(self):
        """Receive and switch up to `batch` buffers from the tunnel: the
        number received, or -errno."""
        cdef int r
        with nogil:
            r = self._drain_tunnel()
        return r

    cdef int _drain_tunnel(self) noexcept nogil:
        """Receive up to `batch` VXLAN buffers (one recvmmsg; with UDP_GRO a
        buffer holds several datagrams of one flow, cut every gso_size
        bytes), check the datagrams and switch their inner frames to local
        ports. Returns the number of buffers received or -errno."""
        cdef int i, got
        cdef unsigned char *data
        cdef ssize_t total, seg, off, n
        cdef int64_t peer
        cdef uint64_t now = monotonic_ns()
        got = recvmmsg(self.tunnel_rx_fd, self.rx_msgs, self.batch, MSG_DONTWAIT, NULL)
        if got < 0:
            return 0 if errno == EAGAIN or errno == EINTR else -errno
        for i in range(got):
            data = <unsigned char *>self.rx_iov[i].iov_base
            total = self.rx_msgs[i].msg_len
            seg = gro_segment_size(&self.rx_msgs[i].msg_hdr)
            if seg <= 0:
                seg = total
            self.rx_msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
            self.rx_msgs[i].msg_hdr.msg_controllen = CMSG_BUF
            # Sources that are not peers are refused before anything is parsed.
            peer = self._find_peer(self.rx_addr[i].sin_addr.s_addr)
            off = 0
            while True:                 # an empty datagram is one (bad) datagram too
                n = min(seg, total - off)
                peer = self._decap(i, peer, data + off, n, now)
                off += n
                if off >= total:
                    break
        self._gro_flush()
        return got

    cdef int64_t _decap(self, int i, int64_t peer, unsigned char *data, ssize_t n,
                        uint64_t now) noexcept nogil:
        """Check one VXLAN datagram of received buffer i (from peer, -1 if
        unknown) and switch its inner frame. Returns the peer (learned)."""
        cdef int64_t vni, member
        cdef uint16_t net
        self.tunnel.rx_packets += 1
        self.tunnel.rx_bytes += n
        if peer < 0 and not self.learn_peers:
            self._drop_datagram(i, DROP_UNKNOWN_PEER, data, n)
            return peer
        vni = vxlan_vni(data) if n >= VXLAN_HLEN else -1
        if vni < 0:
            self._drop_datagram(i, DROP_BAD_VXLAN, data, n)
            return peer
        net = self._network_of_vni(vni)
        if net == 0:
            self._drop_datagram(i, DROP_UNKNOWN_VNI, data, n)
            return peer
        if peer < 0 or not self._is_member(peer, net):
            # Configured peers inject only into their own networks; with
            # learn_peers, a new or learned source becomes a member of this one.
            member = -1
            if self.learn_peers and (peer < 0 or self.peers[peer].learned):
                member = self._add_member(self.rx_addr[i].sin_addr.s_addr, net, True)
            if member < 0:                          # not ours to learn, or tables full
                self._drop_datagram(i, DROP_UNKNOWN_PEER if peer < 0 else DROP_PEER_NOT_MEMBER,
                                    data, n)
                return peer
            peer = member
        self.peers[peer].last_rx_ns = now
        self.peers[peer].rx_packets += 1
        self.peers[peer].rx_bytes += n
        self._switch(PEER_BASE + peer, &self.tunnel, net, self.zero_vhdr, data + VXLAN_HLEN,
                     n - VXLAN_HLEN, now)
        return peer

    cdef inline void _drop(self, port_t *inp, int reason) noexcept nogil:
        self.drops[reason] += 1
        inp.rx_dropped += 1

    cdef inline void _drop_frame(self, port_t *inp, int reason, uint32_t in_id,
                                 const unsigned char *frame, ssize_t n) noexcept nogil:
        self._drop(inp, reason)
        if self.cap_active:
            self._cap(CAP_DROP, in_id, reason, frame, n)

    cdef void _drop_datagram(self, int i, int reason, unsigned char *payload,
                             ssize_t n) noexcept nogil:
        """A tunnel-level drop of received datagram i (its UDP payload)."""
        self._drop(&self.tunnel, reason)
        if not self.cap_active:
            return
        cdef unsigned char udp[UDP_HLEN]
        cdef iovec part
        memcpy(udp, &self.rx_addr[i].sin_port, 2)
        udp[2], udp[3] = self.udp_port >> 8, self.udp_port & 0xFF
        udp[4], udp[5], udp[6], udp[7] = ((n + UDP_HLEN) >> 8) & 0xFF, (n + UDP_HLEN) & 0xFF, 0, 0
        part.iov_base, part.iov_len = payload, n
        self._cap_datagram(CAP_DROP, TUNNEL_PORT, reason, self.rx_addr[i].sin_addr.s_addr,
                           self.vtep_ip, udp, &part, 1)

    cdef inline int _check(self, const port_t *inp, uint16_t net, const unsigned char *hdr,
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
            oversize = le16(hdr + 4) > self.mtu_of[net]
        else:
            oversize = n - l2 > self.mtu_of[net]
        if oversize:
            return DROP_OVERSIZE
        if is_multicast(frame + 6):
            return DROP_BAD_SOURCE
        if inp.secured and spoofed(inp, frame, n, l2):
            return DROP_SPOOFED_SOURCE
        if not inp.router and router_message(frame, n, l2):
            return DROP_RA_GUARD
        return -1

    cdef inline int64_t _destination(self, uint32_t in_id, uint16_t net,
                                     const unsigned char *frame, uint64_t now) noexcept nogil:
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

    cdef inline void _switch(self, uint32_t in_id, port_t *inp, uint16_t net,
                             unsigned char *hdr, unsigned char *frame, ssize_t n,
                             uint64_t now) noexcept nogil:
        """Check, learn, look up, deliver: the pipeline for one frame. in_id
        is a port id, or PEER_BASE + peer index for frames from the tunnel."""
        cdef bint from_tunnel = in_id >= PEER_BASE
        if self.cap_active:
            self._cap(CAP_DECAP if from_tunnel else CAP_INGRESS, in_id, -1, frame, n)
        if not from_tunnel:
            inp.rx_packets += 1
            inp.rx_bytes += max(n, 0)
        cdef int reason = self._check(inp, net, hdr, frame, n)
        if reason < 0 and inp.ingress.rate > 0 and not bucket_take(&inp.ingress, n, now):
            reason = DROP_RATE_LIMITED
        if reason < 0 and fdb_learn(&self.fdb, net, mac48(frame + 6), in_id, now) < 0:
            reason = DROP_MAC_PINNED
        if reason >= 0:
            self._drop_frame(inp, reason, in_id, frame, n)
            return
        cdef int64_t out = self._destination(in_id, net, frame, now)
        if out == DEST_LOOP:
            self._drop_frame(inp, DROP_LOOP, in_id, frame, n)
        elif out == DEST_FLOOD:
            if from_tunnel:
                self._gro_flush()           # keep order with what is held
            self._flood(in_id, net, inp, hdr, frame, n)
        elif out >= PEER_BASE:
            self.unicast += 1
            self._to_peer(out - PEER_BASE, net, hdr, frame, n)
        else:
            self.unicast += 1
            if from_tunnel and self.ports[out].vnet_hdr:
                self._gro(out, hdr, frame, n)
            else:
                self._send(&self.ports[out], hdr, frame, n)

    def pipeline_cost(self, uint32_t port_id, bytes frames, int frame_len, int rounds=1):
        """The fast path's per-frame work without its syscalls: the pipeline's
        own checks, learning and lookup over every frame_len-byte frame of
        `frames`, `rounds` times. Returns (nanoseconds, checksum of the
        decisions, so that the work cannot be skipped). Learns as the
        pipeline does; sends and counts nothing."""
        cdef port_t *inp = self._port(port_id)
        cdef uint16_t net = inp.network
        cdef const unsigned char *buf = frames
        cdef ssize_t count = len(frames) // frame_len, i
        cdef const unsigned char *f
        cdef unsigned char hdr[VNET_HLEN]
        memset(hdr, 0, VNET_HLEN)
        cdef uint64_t start, now
        cdef int64_t decisions = 0
        cdef int r
        with nogil:
            start = monotonic_ns()
            for r in range(rounds):
                now = monotonic_ns()
                for i in range(count):
                    f = buf + i * frame_len
                    if self._check(inp, net, hdr, f, frame_len) < 0:
                        fdb_learn(&self.fdb, net, mac48(f + 6), port_id, now)
                        decisions += self._destination(port_id, net, f, now)
            now = monotonic_ns()
        return now - start, decisions

    def encap_cost(self, int network, bytes frames, int frame_len, int rounds=1):
        """VXLAN encapsulation of every frame_len-byte frame of `frames` as
        the pipeline queues it for a peer (header, flow hash picking the
        source port, the datagram's iovecs, grouping into messages), without
        sending, `rounds` times: nanoseconds."""
        cdef const unsigned char *buf = frames
        cdef ssize_t count = len(frames) // frame_len, i
        cdef uint32_t saved = self.n_tx
        cdef uint64_t start, end
        cdef int r
        self._flush_tunnel()
        self.n_tx = saved or 1
        with nogil:
            start = monotonic_ns()
            for r in range(rounds):
                for i in range(count):
                    if self.n_pending == MAX_PENDING:
                        self.n_pending = self.n_msgs = 0        # dropped unsent
                    self._queue(0, network, buf + i * frame_len, <unsigned char *>buf + i * frame_len,
                                frame_len, NULL, 0)
            end = monotonic_ns()
        self.n_pending = self.n_msgs = 0
        self.n_tx = saved
        return end - start

    def decap_cost(self, uint32_t peer_ip, bytes datagrams, int length, int rounds=1):
        """The tunnel ingress checks of every length-byte VXLAN datagram of
        `datagrams` (peer lookup, header, VNI to network), without switching
        the inner frame, `rounds` times: (nanoseconds, frames accepted)."""
        cdef const unsigned char *buf = datagrams
        cdef ssize_t count = len(datagrams) // length, i
        cdef uint64_t start, end, accepted = 0
        cdef int64_t vni
        cdef int r
        with nogil:
            start = monotonic_ns()
            for r in range(rounds):
                for i in range(count):
                    if self._find_peer(peer_ip) < 0:
                        continue
                    vni = vxlan_vni(buf + i * length)
                    if vni >= 0 and self._network_of_vni(vni) != 0:
                        accepted += 1
            end = monotonic_ns()
        return end - start, accepted

    def segment_cost(self, bytes superframe, int rounds=1):
        """Cutting one TCP superframe (virtio_net_hdr + frame) into segments
        as the tunnel path does (headers per segment, full TCP checksums;
        the payload is referenced, not copied), `rounds` times:
        (nanoseconds, segments per superframe)."""
        cdef const unsigned char *hdr = superframe
        cdef const unsigned char *frame = hdr + VNET_HLEN
        cdef ssize_t n = len(superframe) - VNET_HLEN, l2, hlen, off, size, gso_size
        cdef unsigned char seg[SEG_HDR_MAX]
        cdef uint32_t index = 0
        cdef uint64_t start, end
        cdef int r
        if n <= 0 or not vnet_is_gso(hdr):
            raise ValueError("not a superframe")
        l2 = eth_header_len(frame, n)
        hlen = tso_header_len(hdr, frame, n, l2)
        gso_size = le16(hdr + 4)
        if hlen < 0 or hlen > SEG_HDR_MAX or gso_size == 0:
            raise ValueError("not a TCP superframe")
        with nogil:
            start = monotonic_ns()
            for r in range(rounds):
                off, index = hlen, 0
                while off < n:
                    size = min(gso_size, n - off)
                    tso_segment_headers(seg, hdr, frame, l2, hlen, index, frame + off, size,
                                        off + size >= n)
                    off += size
                    index += 1
            end = monotonic_ns()
        return end - start, index

    def trace(self, uint32_t port_id, bytes frame):
        """Run a frame from a port through the pipeline's own checks and
        lookup, without learning, sending or counting: a list of steps."""
        cdef port_t *inp = self._port(port_id)
        cdef uint16_t net = inp.network
        cdef unsigned char hdr[VNET_HLEN]
        memset(hdr, 0, VNET_HLEN)
        cdef const unsigned char *f = frame
        cdef ssize_t n = len(frame)
        steps = [{"step": "ingress", "port": port_id, "network": net, "length": n,
                  "port_security": bool(inp.secured)}]
        cdef int reason = self._check(inp, net, hdr, f, n)
        if reason >= 0:
            return steps + [{"step": "drop", "reason": DROP_NAMES[reason]}]
        steps.append({"step": "checks", "verdict": "pass"})
        cdef int64_t known = fdb_lookup(&self.fdb, net, mac48(f + 6), monotonic_ns())
        cdef int64_t pinned = fdb_pinned_port(&self.fdb, net, mac48(f + 6))
        if pinned >= 0 and pinned != port_id:
            return steps + [{"step": "learn", "mac": mac_to_str(mac48(f + 6)), "pinned_to": pinned},
                            {"step": "drop", "reason": "mac_pinned"}]
        steps.append({"step": "learn", "mac": mac_to_str(mac48(f + 6)),
                      "known_at": None if known < 0 else known, "moves": known >= 0 and known != port_id})
        cdef int64_t out = self._destination(port_id, net, f, monotonic_ns())
        dst = mac_to_str(mac48(f))
        if out == DEST_LOOP:
            return steps + [{"step": "fdb", "mac": dst, "result": "learned on the ingress port"},
                            {"step": "drop", "reason": "loop"}]
        if out == DEST_FLOOD:
            steps.append({"step": "fdb", "mac": dst,
                          "result": "multicast" if is_multicast(f) else "unknown"})
            ports = [i for i in range(self.port_limit) if i != port_id and
                     self.ports[i].fd >= 0 and self.ports[i].network == net]
            peers = sorted({self.member_peer[m] for m in range(self.n_members)
                            if self.member_net[m] == net})
            if not ports and not peers:
                return steps + [{"step": "drop", "reason": "no_route"}]
            output = {"step": "flood", "ports": ports, "peers": [PEER_BASE + p for p in peers]}
        else:
            steps.append({"step": "fdb", "mac": dst, "result": "learned", "port": out})
            output = {"step": "output", "ports": [out] if out < PEER_BASE else [],
                      "peers": [out] if out >= PEER_BASE else []}
        steps.append(output)
        for dest in output["peers"]:       # (not steps[-1]: wraparound is off here)
            sport = self.tx_sport[self._sender(f, n)] if self.n_tx else None
            too_big = n + OUTER_OVERHEAD > self.underlay_mtu
            steps.append({"step": "encap", "peer": dest, "vni": self.vni_of[net],
                          "udp_src_port": sport, "udp_dst_port": self.udp_port,
                          "outer_length": n + OUTER_OVERHEAD,
                          "verdict": "drop: too_big" if too_big else "send"})
        return steps

    cdef inline void _flood(self, uint32_t in_id, uint16_t net, port_t *inp,
                            unsigned char *hdr, unsigned char *frame, ssize_t n) noexcept nogil:
        cdef uint32_t i
        cdef bint sent = False
        for i in range(self.port_limit):
            if i != in_id and self.ports[i].fd >= 0 and self.ports[i].network == net:
                self._send(&self.ports[i], hdr, frame, n)
                sent = True
        if in_id < PEER_BASE:
            # Head-end replication: one copy per peer of the network. Local
            # copies went first: encapsulation may complete the checksum in place.
            for i in range(self.n_members):
                if self.member_net[i] == net:
                    self._to_peer(self.member_peer[i], net, hdr, frame, n)
                    sent = True
        if sent:
            self.flooded += 1
        else:
            self._drop_frame(inp, DROP_NO_ROUTE, in_id, frame, n)

    cdef void _gro(self, uint32_t out, unsigned char *hdr, unsigned char *frame,
                   ssize_t n) noexcept nogil:
        """Deliver a decapsulated frame to an offload port, merging it into
        the held superframe when it continues it."""
        cdef ssize_t hlen = tcp4_gro_header_len(frame, n), payload
        if hlen < 0 or self.ports[out].egress.rate > 0:      # limited ports: frame by frame
            self._gro_flush()
            self._send(&self.ports[out], hdr, frame, n)
            return
        payload = n - hlen
        if self.cap_active:                     # each segment, as it goes into the superframe
            self._cap(CAP_EGRESS, out, -1, frame, n)
        cdef uint32_t seq = be32(frame + 38)
        cdef unsigned char *first
        if self.gro_n and (out != self.gro_out or self.gro_n == GRO_MAX_IOV + 2
                           or hlen != self.gro_hlen or seq != self.gro_next_seq
                           or payload > self.gro_mss or self.gro_total + payload > 65535
                           or not gro_same_flow(<unsigned char *>self.gro_iov[1].iov_base,
                                                frame, hlen)):
            self._gro_flush()
        if self.gro_n == 0:
            self.gro_out, self.gro_hlen, self.gro_mss = out, hlen, payload
            self.gro_total = n
            self.gro_iov[0].iov_base = self.gro_vhdr
            self.gro_iov[0].iov_len = VNET_HLEN
            self.gro_iov[1].iov_base = frame
            self.gro_iov[1].iov_len = n
            self.gro_n = 2
        else:
            first = <unsigned char *>self.gro_iov[1].iov_base
            self.gro_iov[self.gro_n].iov_base = frame + hlen
            self.gro_iov[self.gro_n].iov_len = payload
            self.gro_n += 1
            self.gro_total += payload
            first[48] = frame[48]               # the latest window
            first[49] = frame[49]
            first[47] |= frame[47] & 0x08       # PSH
        self.gro_next_seq = seq + payload
        if payload < self.gro_mss or frame[47] & 0x08:
            self._gro_flush()                   # a short or pushed segment ends the train

    cdef void _gro_flush(self) noexcept nogil:
        if self.gro_n == 0:
            return
        cdef port_t *out = &self.ports[self.gro_out]
        cdef int segments = self.gro_n - 1
        if segments == 1:
            memset(self.gro_vhdr, 0, VNET_HLEN)     # a plain frame, checksums complete
        else:
            gro_finish(self.gro_vhdr, <unsigned char *>self.gro_iov[1].iov_base,
                       self.gro_total, self.gro_hlen, self.gro_mss)
        cdef ssize_t w = writev(out.fd, self.gro_iov, self.gro_n)
        self.gro_n = 0
        if w == self.gro_total + VNET_HLEN:
            out.tx_packets += 1
            out.tx_bytes += self.gro_total
            if segments > 1:
                self.gro_merged += segments
            return
        out.tx_dropped += 1
        self.drops[_write_error_reason(w)] += 1

    cdef inline void _send(self, port_t *out, unsigned char *hdr, unsigned char *frame,
                           ssize_t n) noexcept nogil:
        cdef ssize_t w, want = n
        if out.egress.rate > 0 and not bucket_take(&out.egress, n, monotonic_ns()):
            out.tx_dropped += 1
            self.drops[DROP_RATE_LIMITED] += 1
            if self.cap_active:
                self._cap(CAP_DROP, out - self.ports, DROP_RATE_LIMITED, frame, n)
            return
        cdef iovec parts[2]
        if out.vnet_hdr:
            want = n + VNET_HLEN
            if hdr + VNET_HLEN == frame:
                w = write(out.fd, hdr, want)
            else:                                   # a decapsulated frame: header apart
                parts[0].iov_base, parts[0].iov_len = hdr, VNET_HLEN
                parts[1].iov_base, parts[1].iov_len = frame, n
                w = writev(out.fd, parts, 2)
        elif vnet_is_gso(hdr):
            out.tx_dropped += 1
            self.drops[DROP_NEEDS_SEGMENTATION] += 1
            if self.cap_active:
                self._cap(CAP_DROP, out - self.ports, DROP_NEEDS_SEGMENTATION, frame, n)
            return
        else:
            if hdr[0] & VNET_F_NEEDS_CSUM:
                complete_checksum(hdr, frame, n)    # in place, once: later copies reuse it
            w = write(out.fd, frame, n)
        cdef int reason = -1
        if w == want:
            out.tx_packets += 1
            out.tx_bytes += n
        else:
            reason = _write_error_reason(w)
            out.tx_dropped += 1
            self.drops[reason] += 1
        if self.cap_active:
            self._cap(CAP_EGRESS if reason < 0 else CAP_DROP, out - self.ports, reason, frame, n)

    cdef inline void _to_peer(self, uint32_t peer, uint16_t net, unsigned char *hdr,
                              unsigned char *frame, ssize_t n) noexcept nogil:
        """Queue the frame, VXLAN-encapsulated, for the peer (cut into
        segments first if it is a TCP superframe); sent by _flush_tunnel."""
        cdef ssize_t l2, hlen, off, size, gso_size
        cdef uint32_t i = 0, k
        if vnet_is_gso(hdr):
            l2 = eth_header_len(frame, n)
            hlen = tso_header_len(hdr, frame, n, l2)
            gso_size = le16(hdr + 4)
            if hlen < 0 or hlen > SEG_HDR_MAX:
                self._peer_drop(peer, DROP_NEEDS_SEGMENTATION, frame, n)
            elif hlen + gso_size + OUTER_OVERHEAD > self.underlay_mtu:
                self._peer_drop(peer, DROP_TOO_BIG, frame, n)
            else:
                off = hlen
                while off < n:
                    size = min(gso_size, n - off)
                    k = self._queue(peer, net, frame, NULL, hlen, frame + off, size)
                    tso_segment_headers(<unsigned char *>self.pending_iov[3 * k + 1].iov_base,
                                        hdr, frame, l2, hlen, i, frame + off, size, off + size >= n)
                    off += size
                    i += 1
            return
        if n + OUTER_OVERHEAD > self.underlay_mtu:
            self._peer_drop(peer, DROP_TOO_BIG, frame, n)
            return
        if hdr[0] & VNET_F_NEEDS_CSUM:
            complete_checksum(hdr, frame, n)
        self._queue(peer, net, frame, frame, n, NULL, 0)

    cdef inline void _peer_drop(self, uint32_t peer, int reason,
                                const unsigned char *frame=NULL, ssize_t n=0) noexcept nogil:
        self.peers[peer].tx_dropped += 1
        self.tunnel.tx_dropped += 1
        self.drops[reason] += 1
        if self.cap_active and frame != NULL:
            self._cap(CAP_DROP, PEER_BASE + peer, reason, frame, n)

    cdef inline uint32_t _queue(self, uint32_t peer, uint16_t net, const unsigned char *flow,
                                unsigned char *head, ssize_t head_len, unsigned char *payload,
                                ssize_t size) noexcept nogil:
        """Queue one datagram: VXLAN header, head, payload (may be empty).
        flow: the frame whose flow picks the sending socket (source port).
        head NULL: the datagram's own segment-header slot, which the caller
        fills (before the flush that sends it). Returns the datagram's index.
        It joins the last message when that goes to the same peer from the
        same socket and it is no longer than that message's datagrams."""
        if self.n_pending == MAX_PENDING:
            self._flush_tunnel()
        cdef uint32_t k = self.n_pending
        cdef uint32_t length = VXLAN_HLEN + head_len + size
        cdef uint16_t sock = self._sender(flow, head_len + size)
        cdef tx_msg_t *m
        if head == NULL:
            head = self.pending_seg + k * SEG_HDR_MAX
        self.n_pending += 1
        vxlan_header(self.pending_vxlan + k * VXLAN_HLEN, self.vni_of[net])
        self.pending_iov[3 * k].iov_base = self.pending_vxlan + k * VXLAN_HLEN
        self.pending_iov[3 * k].iov_len = VXLAN_HLEN
        self.pending_iov[3 * k + 1].iov_base = head
        self.pending_iov[3 * k + 1].iov_len = head_len
        self.pending_iov[3 * k + 2].iov_base = payload
        self.pending_iov[3 * k + 2].iov_len = size
        self.pending_peer[k] = peer
        self.pending_len[k] = length
        m = &self.tx_msgs[self.n_msgs - 1] if self.n_msgs else NULL
        if (m != NULL and not m.sealed and m.peer == peer and m.sock == sock
                and length <= m.seg_len and m.count < UDP_GSO_MAX_SEGS
                and m.total + length <= UDP_GSO_MAX_BYTES):
            m.count += 1
            m.total += length
            m.sealed = length < m.seg_len
            return k
        m = &self.tx_msgs[self.n_msgs]
        self.n_msgs += 1
        m.first, m.count, m.seg_len, m.total = k, 1, length, length
        m.sock, m.peer, m.sealed = sock, peer, False
        return k

    cdef inline uint16_t _sender(self, const unsigned char *frame, ssize_t n) noexcept nogil:
        """The sending socket (source port) of a frame's flow; multiply and
        shift rather than a division."""
        return (<uint64_t>flow_hash(frame, n) * self.n_tx) >> 32

    cdef void _flush_tunnel(self) noexcept nogil:
        """Send the queued VXLAN datagrams: one sendmmsg per run of messages
        from the same socket, each message of several datagrams one UDP GSO
        buffer."""
        cdef uint32_t i, j, k
        cdef int r
        cdef tx_msg_t *m
        cdef msghdr *h
        cdef cmsghdr *c
        cdef unsigned char udp[UDP_HLEN]
        for i in range(self.n_msgs):
            m = &self.tx_msgs[i]
            h = &self.tx_mmsg[i].msg_hdr
            h.msg_name = &self.peer_addr[m.peer]
            h.msg_namelen = sizeof(sockaddr_in)
            h.msg_iov = &self.pending_iov[3 * m.first]
            h.msg_iovlen = 3 * m.count
            h.msg_flags = 0
            if m.count > 1:
                h.msg_control = self.tx_ctrl + i * CMSG_BUF
                h.msg_controllen = CMSG_BUF
                c = CMSG_FIRSTHDR(h)
                c.cmsg_level, c.cmsg_type, c.cmsg_len = SOL_UDP, UDP_SEGMENT, CMSG_LEN(2)
                (<uint16_t *>CMSG_DATA(c))[0] = m.seg_len
                h.msg_controllen = CMSG_LEN(2)
            else:
                h.msg_control, h.msg_controllen = NULL, 0
            if self.cap_active:
                for k in range(m.first, m.first + m.count):
                    udp_header(udp, self.tx_sport[m.sock], self.udp_port, self.pending_len[k])
                    self._cap_datagram(CAP_ENCAP, PEER_BASE + m.peer, -1, self.vtep_ip,
                                       self.peer_addr[m.peer].sin_addr.s_addr, udp,
                                       &self.pending_iov[3 * k], 3)
        i = 0
        while i < self.n_msgs:
            j = i + 1
            while j < self.n_msgs and self.tx_msgs[j].sock == self.tx_msgs[i].sock:
                j += 1
            r = sendmmsg(self.tx_fd[self.tx_msgs[i].sock], &self.tx_mmsg[i], j - i, MSG_DONTWAIT)
            if r < 0:
                if errno == EINTR:
                    continue
                self._msg_done(&self.tx_msgs[i], _write_error_reason(-1))
                i += 1                      # that one failed: counted, go on
                continue
            for k in range(i, i + r):
                self._msg_done(&self.tx_msgs[k], -1)
            i += r
        self.n_pending = self.n_msgs = 0

    cdef inline void _msg_done(self, tx_msg_t *m, int reason) noexcept nogil:
        """Count a message's datagrams as sent (reason -1) or dropped. Bytes
        are UDP payload (VXLAN header + frame), as on receipt."""
        cdef uint32_t k
        cdef peer_t *p = &self.peers[m.peer]
        for k in range(m.first, m.first + m.count):
            if reason >= 0:
                self._peer_drop(m.peer, reason)
                continue
            p.tx_packets += 1
            p.tx_bytes += self.pending_len[k]
            self.tunnel.tx_packets += 1
            self.tunnel.tx_bytes += self.pending_len[k]


cdef inline ssize_t gro_segment_size(msghdr *h) noexcept nogil:
    """The UDP_GRO segment size of a received buffer, or 0 if it is one datagram."""
    cdef cmsghdr *c = CMSG_FIRSTHDR(h)
    while c != NULL:
        if c.cmsg_level == SOL_UDP and c.cmsg_type == UDP_GRO:
            return (<int *>CMSG_DATA(c))[0]
        c = CMSG_NXTHDR(h, c)
    return 0


cdef inline int _write_error_reason(ssize_t w) noexcept nogil:
    if w < 0 and errno == EAGAIN:
        return DROP_QUEUE_FULL
    if w < 0 and errno == EIO:
        return DROP_PORT_DOWN
    return DROP_WRITE_ERROR


cdef dict _counters(port_t *p):
    return {"rx_packets": p.rx_packets, "rx_bytes": p.rx_bytes, "rx_dropped": p.rx_dropped,
            "tx_packets": p.tx_packets, "tx_bytes": p.tx_bytes, "tx_dropped": p.tx_dropped}
