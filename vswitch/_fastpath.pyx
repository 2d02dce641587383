# cython: language_level=3
"""The data plane: ports, FDB and the per-frame pipeline, in C.

The control plane owns file descriptors and hands them to the data plane,
whose forwarding threads (one per worker, `start()`) each poll their own
epoll set (their queue of every port, their tunnel socket) without the GIL:
a round serves every ready fd in turn, reading up to `batch` frames at a
time into preallocated buffers and switching each without creating a Python
object. With no thread started, `poll()` runs the first worker's round on
the caller's thread (rigs, benches).

Each concept keeps its C state and operations in files named after it: the
state in `_<concept>.pxd` (included by _fastpath.pxd), the operations in
`_<concept>.pxi` (included below, in any order), and its control methods,
which may use Python objects freely, in `_<concept>_control.pxi`: one class
each in a chain from `_Shared` (the tables every forwarding thread shares)
to `Datapath`. This file holds `Datapath` itself: set-up, counters, the
tunnel's settings, and the pipeline, top to bottom: poll, drain, check,
learn, look up, deliver, flush. The pipeline takes the shared tables
(`self`) and one forwarding thread's own state (`w`, a worker_t,
_worker.pxd). The only Python importer of this module is
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
import threading

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
assert protocol.MAX_WORKERS == MAX_WORKERS


def mac_to_str(uint64_t mac):
    return ":".join(f"{(mac >> s) & 0xFF:02x}" for s in range(40, -8, -8))


cdef inline unsigned char *slot_frame(unsigned char *slots, int i) noexcept nogil:
    return slots + <size_t>i * SLOT_SIZE + FRAME_HEADROOM


cdef class _Shared:
    """The tables every forwarding thread shares, and each thread's own
    state (_fastpath.pxd); the control methods are added by the chain of
    classes between this and Datapath, one concept each (_*_control.pxi)."""

    cdef _declared(self, int network):
        if not network_declared(&self.networks, network):
            raise ValueError(f"network {network} is not declared")

    cdef port_t *_port(self, uint32_t port_id) except NULL:
        cdef port_t *p = port_at(&self.ports, port_id)
        if p == NULL:
            raise KeyError(f"no port {port_id}")
        return p

    # ------------------------------------------------ quiescence (reclaim)
    # What the control plane unlinks from a shared table may still be in a
    # worker's hands until that worker finishes its round: it is kept here
    # with every worker's epoch, and freed once each worker has moved on (or
    # waits in epoll_wait, holding nothing). The control plane never waits
    # for that: reclaim() runs on its timer, and after each retirement.

    cdef _retire(self, int kind, values):
        """Keep `values` (of one kind) until no worker can hold them: one
        snapshot of the epochs and one reclaim for however many."""
        full_fence()                # the unlinking first, then the epochs it is kept against
        epochs = tuple(load_u64(&self.workers[k].epoch) for k in range(self.n_workers))
        self._retired += [(epochs, kind, value) for value in values]
        self.reclaim()

    def reclaim(self):
        """Free what no worker can hold any more; returns how many are left."""
        full_fence()
        cdef int k
        passed = [not self._threads or not load_acquire_int(&self.workers[k].online)
                  for k in range(self.n_workers)]
        epochs = [load_u64(&self.workers[k].epoch) for k in range(self.n_workers)]
        left = []
        for item in self._retired:
            if all(passed[k] or epochs[k] != item[0][k] for k in range(self.n_workers)):
                self._free_retired(item[1], item[2])
            else:
                left.append(item)
        self._retired = left
        return len(left)

    def _free_retired(self, int kind, uintptr_t value):
        cdef port_t *p
        cdef int k
        if kind == RETIRE_FREE:
            free(<void *>value)
        elif kind == RETIRE_POLICY:
            port_policy_free(<port_policy_t *>value)
        elif kind == RETIRE_PORT:
            # What a worker learned or committed for it after remove_port's
            # sweeps (it was switching one of its frames) goes now: its id
            # will be another pod's.
            if self.fdb.owned[value]:
                fdb_sweep(&self.fdb, SWEEP_PORT, 0, value, 0)
            pthread_mutex_lock(&self.ct.lock)
            ct_forget_owner(&self.ct, value)
            pthread_mutex_unlock(&self.ct.lock)
            p = &self.ports.slots[value]
            port_policy_free(p.policy)
            p.policy = NULL
            for k in range(p.n_queues):
                close(p.fds[k])
            for k in range(self.n_workers):
                memset(&self.workers[k].stats[value], 0, sizeof(port_stats_t))
            p.retiring = False
        elif kind == RETIRE_PEER:
            if self.fdb.owned[PEER_BASE + value]:       # (as for a port)
                fdb_sweep(&self.fdb, SWEEP_PORT, 0, PEER_BASE + value, 0)
            for k in range(self.n_workers):
                memset(&self.workers[k].peer_stats[value], 0, sizeof(peer_stats_t))
            pthread_mutex_lock(&self.peers.lock)
            self.peers.slots[value].retiring = False
            pthread_mutex_unlock(&self.peers.lock)

    cdef _neigh_set(self, neigh_t *t, uint16_t network, const ip_key_t *ip, uint64_t mac):
        cdef neigh_entry_t *old
        if neigh_set(t, network, ip, mac, &old) < 0:
            raise MemoryError()
        if old != NULL:
            self._retire(RETIRE_FREE, (<uintptr_t>old,))

    # ------------------------------------------------ counters, summed
    cdef dict _port_counters(self, uint32_t row):
        """A port's counters (row TUNNEL_STATS: the tunnel's), summed over the workers."""
        cdef port_stats_t sum
        cdef port_stats_t *s
        cdef int k
        memset(&sum, 0, sizeof(sum))
        for k in range(self.n_workers):
            s = &self.workers[k].stats[row]
            sum.rx_packets += s.rx_packets
            sum.rx_bytes += s.rx_bytes
            sum.rx_dropped += s.rx_dropped
            sum.tx_packets += s.tx_packets
            sum.tx_bytes += s.tx_bytes
            sum.tx_dropped += s.tx_dropped
            sum.policy_denied += s.policy_denied
        return port_counters(&sum)

    cdef dict _peer_counters(self, uint32_t peer):
        cdef peer_stats_t *s
        cdef int k
        out = dict.fromkeys(("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "tx_dropped"), 0)
        for k in range(self.n_workers):
            s = &self.workers[k].peer_stats[peer]
            out["rx_packets"] += s.rx_packets
            out["rx_bytes"] += s.rx_bytes
            out["tx_packets"] += s.tx_packets
            out["tx_bytes"] += s.tx_bytes
            out["tx_dropped"] += s.tx_dropped
        return out


include "_ports_control.pxi"
include "_peers_control.pxi"
include "_networks_control.pxi"
include "_fdb_control.pxi"
include "_neigh_control.pxi"
include "_policy_control.pxi"
include "_capture_control.pxi"


cdef class Datapath(_CaptureControl):
    """A switch: ports (file descriptors carrying Ethernet frames), an
    optional VXLAN tunnel to peers, one FDB shared by all networks (keyed by
    network and MAC), and counters."""

    def __cinit__(self, *, int workers, uint64_t fdb_max_entries, double aging_time, int batch,
                  double busy_poll_us, uint32_t fdb_max_per_port, uint32_t fdb_max_per_peer,
                  uint64_t conntrack_max, uint64_t conntrack_max_per_pod):
        """Every setting given (the defaults are the config's: Config,
        datapath.new_datapath). workers: forwarding threads (start() starts
        them). fdb_max_per_port / _per_peer: learned entries one port / one
        peer may hold (0: no limit but the table's). conntrack_max:
        connections tracked at once; conntrack_max_per_pod: of them charged
        to one port (0: conntrack_max)."""
        if fdb_max_entries < 1 or aging_time <= 0 or not 1 <= batch <= 1024 or busy_poll_us < 0 \
                or conntrack_max < 1 or not 1 <= workers <= MAX_WORKERS:
            raise ValueError("fdb_max_entries, aging_time and conntrack_max must be positive, "
                             f"batch 1..1024, busy_poll_us >= 0, workers 1..{MAX_WORKERS}")
        seed = int.from_bytes(os.urandom(8), "little")
        self.batch = batch
        self._threads, self._retired = [], []
        self.notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        self.workers = <worker_t *>calloc(workers, sizeof(worker_t))
        if self.workers == NULL or self.notify_fd < 0:
            raise MemoryError()
        self.n_workers, self.w = workers, self.workers
        for k in range(workers):
            if worker_init(&self.workers[k], k, batch, busy_poll_us) < 0:
                raise OSError(errno, "cannot set up a forwarding thread's state")
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
        # (no worker thread runs: each holds a reference to self)
        cdef uint32_t i
        cdef int k
        for _, kind, value in self._retired or ():
            self._free_retired(kind, value)
        if self.ports.slots != NULL:
            for i in range(self.ports.limit):
                if self.ports.slots[i].fd >= 0:
                    port_policy_free(self.ports.slots[i].policy)
                    for k in range(self.ports.slots[i].n_queues):
                        close(self.ports.slots[i].fds[k])
        ct_free(&self.ct)
        if self.workers != NULL:
            for k in range(self.n_workers):
                worker_free(&self.workers[k])
            free(self.workers)
        if self.notify_fd >= 0:
            close(self.notify_fd)
        ports_free(&self.ports)
        networks_free(&self.networks)
        peers_free(&self.peers)
        cap_free(&self.cap)
        fdb_destroy(&self.fdb)
        neigh_free(&self.neigh)
        neigh_free(&self.owners)
        frags_free(&self.frags)

    # ------------------------------------------------------------- counters
    def counters(self):
        """Switch-wide counters: decisions, drops by reason, FDB, tunnel
        (each worker's share, summed)."""
        cdef counters_t totals
        cdef worker_t *w
        cdef int k, r
        memset(&totals, 0, sizeof(totals))
        gro_merged = gateway_replies = arp = nd = 0
        for k in range(self.n_workers):
            w = &self.workers[k]
            totals.unicast += w.totals.unicast
            totals.flooded += w.totals.flooded
            for r in range(N_DROP_REASONS):
                totals.drops[r] += w.totals.drops[r]
            gro_merged += w.gro.merged
            gateway_replies += w.gateway_replies
            arp += w.arp_answered
            nd += w.nd_answered
        out = counters_dict(&totals)
        out["fdb"] = {"entries": self.fdb.count, "max_entries": self.fdb.max_entries,
                      "learned": self.fdb.learned, "moves": self.fdb.moves,
                      "full": self.fdb.full, "limited": self.fdb.limited,
                      "expired": self.fdb.expired, "busy": self.fdb.busy,
                      "max_per_port": self.fdb.max_per_port, "max_per_peer": self.fdb.max_per_peer}
        out["tunnel"] = self._port_counters(TUNNEL_STATS)
        out["gro_merged"] = gro_merged
        out["arp_suppressed"] = arp
        out["nd_suppressed"] = nd
        out["neighbours"] = self.neigh.count
        out["conntrack"] = {"entries": self.ct.count, "max_entries": self.ct.max_entries,
                            "max_per_pod": self.ct.max_per_owner,
                            "created": self.ct.created, "expired": self.ct.expired,
                            "revoked": self.ct.revoked, "early_dropped": self.ct.early_dropped}
        out["fragments_passed"] = self.frags.passed
        out["gateway_replies"] = gateway_replies
        return out

    def worker_counters(self):
        """Per worker: frames it switched and its share of the decisions
        (how the load spreads over the threads)."""
        return [{"frames": self.workers[k].frames, "unicast": self.workers[k].totals.unicast,
                 "flooded": self.workers[k].totals.flooded} for k in range(self.n_workers)]

    @property
    def gro_merged(self):
        """Segments that went out inside a GRO superframe."""
        return sum(self.workers[k].gro.merged for k in range(self.n_workers))

    # ---------------------------------------------------------------- tunnel

    def set_tunnel(self, rx_fds, senders, int udp_port, int underlay_mtu,
                   int outer_overhead, bint learn_peers, vtep, uint32_t max_learned_peers):
        """Enable VXLAN: rx_fds non-blocking UDP sockets bound to the VTEP
        (UDP_GRO on; SO_REUSEPORT, one per worker: worker k receives on the
        k-th; an int: one socket, worker 0's), senders per worker [[(fd,
        source port)]] of non-blocking UDP sockets bound to it (a flat list:
        one pool for all), all of the family of vtep (its address, as peers'
        are given: an int, IPv4 mapped); outer_overhead: what the
        encapsulation puts around a frame on that family (vswitch/encap.py,
        which the MTU checks use). learn_peers: a datagram from an unknown
        source makes it a peer of that network (at most max_learned_peers
        such peers; they age, see expire_peers); turning it off forgets
        them. Once workers run, only the settings may change, not the sockets."""
        if not 0 < udp_port < 65536 or not 576 <= underlay_mtu <= 65535 \
                or not 0 < outer_overhead < underlay_mtu:
            raise ValueError("udp_port must be 1..65535, underlay_mtu 576..65535 and "
                             "outer_overhead less")
        rx_fds = [rx_fds] if isinstance(rx_fds, int) else list(rx_fds)
        pools = [senders] if senders and isinstance(senders[0], tuple) else list(senders)
        if not 0 < len(rx_fds) <= self.n_workers or not pools \
                or not all(0 < len(pool) <= MAX_SENDERS for pool in pools):
            raise ValueError(f"1..{self.n_workers} receiving sockets and pools of "
                             f"1..{MAX_SENDERS} sending sockets")
        cdef worker_t *w
        cdef int k
        for k in range(self.n_workers):
            w = &self.workers[k]
            pool = pools[k % len(pools)]
            rx_fd = rx_fds[k] if k < len(rx_fds) else -1
            same = rx_fd == w.rx.fd and [(w.tx.fd[i], w.tx.sport[i]) for i in
                                         range(w.tx.n_senders)] == list(pool)
            if self._threads and not same:
                raise ValueError("the tunnel's sockets cannot change while workers run")
            if not same:
                self._flush_output(w)
                for i, (fd, sport) in enumerate(pool):
                    w.tx.fd[i], w.tx.sport[i] = fd, sport
                w.tx.n_senders = len(pool)
                if rx_fd != w.rx.fd:
                    if w.rx.fd >= 0:
                        poller_unwatch(&w.poller, w.rx.fd)
                    if rx_fd >= 0 and poller_watch(&w.poller, rx_fd, TUNNEL_PORT) < 0:
                        raise OSError(errno, f"cannot poll fd {rx_fd}")
                w.rx.fd = rx_fd
            w.tx.underlay_mtu, w.rx.learn_peers = underlay_mtu, learn_peers
            w.rx.vtep = key_from_int(vtep)
            w.tx.outer_overhead = outer_overhead
        pthread_mutex_lock(&self.peers.lock)
        peers_set_port(&self.peers, udp_port)
        self.peers.max_learned = max_learned_peers
        pthread_mutex_unlock(&self.peers.lock)
        if not learn_peers:
            for ip, _, _, learned in self.peer_list():
                if learned:
                    self.remove_peer(ip)

    # ------------------------------------------------------- trace (_trace.pxi)

    def trace(self, uint32_t port_id, bytes frame):
        """Run a frame from a port through the pipeline, without learning,
        sending, counting or tracking: a list of steps."""
        return trace_frame(self, port_id, frame)

    # ============================================================ the pipeline

    @property
    def busy_poll_us(self):
        return self.w.poller.busy_poll_ns / 1e3

    @busy_poll_us.setter
    def busy_poll_us(self, double us):
        if us < 0:
            raise ValueError("busy_poll_us must be >= 0")
        for k in range(self.n_workers):
            store_u64(&self.workers[k].poller.busy_poll_ns, <uint64_t>(us * 1000))

    # ----------------------------------------------------- forwarding threads

    def start(self):
        """Start the forwarding threads, one per worker, each serving its
        epoll set without the GIL until stop(). The control plane goes on
        on the caller's thread: it learns of failed fds through
        failures_fd(), and calls reclaim() now and then."""
        if self._threads:
            return
        for k in range(self.n_workers):
            t = threading.Thread(target=self._run, args=(k,), name=f"vswitch-worker-{k}",
                                 daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self):
        """Stop the forwarding threads (each finishes its round) and wait for them."""
        cdef uint64_t one = 1
        for k in range(len(self._threads)):
            write(self.workers[k].stop_fd, &one, sizeof(one))
        for t in self._threads:
            t.join()
        self._threads = []
        for k in range(self.n_workers):
            read(self.workers[k].stop_fd, &one, sizeof(one))
        self.reclaim()

    @property
    def running(self):
        return bool(self._threads)

    def _run(self, int k):
        name = f"vswitch-w{k}".encode()       # what top -H and /proc/*/task/*/comm show
        pthread_setname_np(pthread_self(), name)
        with nogil:
            self._serve(&self.workers[k])

    def failures_fd(self):
        """An fd that is readable when a worker stopped polling a failed fd
        (take_failed() names them)."""
        return self.notify_fd

    cdef void _serve(self, worker_t *w) noexcept nogil:
        """A forwarding thread: serve the ready fds, round after round,
        sleeping in epoll_wait when busy_poll_us pass without a frame, until
        the stop eventfd is readable."""
        cdef int n
        cdef uint64_t last = monotonic_ns(), now
        store_release_int(&w.online, 1)
        full_fence()
        while True:
            n = epoll_wait(w.poller.epfd, w.poller.events, POLL_EVENTS, 0)
            if n == 0 and monotonic_ns() - last >= load_u64(&w.poller.busy_poll_ns):
                store_release_int(&w.online, 0)     # holds nothing while it waits
                n = epoll_wait(w.poller.epfd, w.poller.events, POLL_EVENTS, -1)
                store_release_int(&w.online, 1)
                full_fence()
            if n > 0 and self._serve_ready(w, n) < 0:
                break
            now = monotonic_ns()
            if n > 0:
                last = now
            # A quiescent point; the fence orders it before the next round's
            # reads (what the control plane unlinked before it saw this epoch
            # move is not read any more).
            store_release_u64(&w.epoch, w.epoch + 1)
            full_fence()
        store_release_int(&w.online, 0)

    cdef int _serve_ready(self, worker_t *w, int n) noexcept nogil:
        """Serve the n ready fds of w's last epoll_wait; -1: told to stop."""
        cdef int i, r
        cdef uint32_t key
        cdef uint64_t one = 1
        for i in range(n):
            key = w.poller.events[i].data.u32
            if key == STOP_KEY:
                return -1
            if key == TUNNEL_PORT:
                r = self._drain_tunnel(w)
                if r < 0:
                    poller_fail(&w.poller, key, w.rx.fd)
                    write(self.notify_fd, &one, sizeof(one))
            elif port_at(&self.ports, key) != NULL:
                r = self._drain(w, key)
                if r < 0:
                    poller_fail(&w.poller, key, self.ports.slots[key].fds[w.index])
                    write(self.notify_fd, &one, sizeof(one))
        return 0

    def poll(self):
        """With no thread started (rigs, benches): serve every ready fd of
        the first worker on the caller's thread, round-robin: each ready fd
        gets up to `batch` frames or POLL_QUANTUM_NS per round, so a flooding
        port cannot starve the others. Rounds go on while fds are ready (and,
        with busy polling, until busy_poll_us pass without a frame), for at
        most POLL_BUDGET_NS. Returns the number of ports whose fd failed
        (take_failed() names them)."""
        if self._threads:
            raise RuntimeError("the workers are running: they poll")
        cdef worker_t *w = self.w
        cdef int n
        cdef uint64_t start = monotonic_ns(), last = start, now
        with nogil:
            while True:
                n = epoll_wait(w.poller.epfd, w.poller.events, POLL_EVENTS, 0)
                self._serve_ready(w, n)
                now = monotonic_ns()
                if n > 0:
                    last = now
                elif now - last >= w.poller.busy_poll_ns:
                    break
                if now - start >= POLL_BUDGET_NS:
                    break
        return w.poller.n_failed

    def take_failed(self):
        """Ids of the ports (PORT_TUNNEL: the tunnel) whose fd failed since
        the last call; no worker polls them any more."""
        cdef uint64_t count
        read(self.notify_fd, &count, sizeof(count))
        out = []
        cdef poller_t *p
        for k in range(self.n_workers):
            p = &self.workers[k].poller
            with nogil:
                pthread_mutex_lock(&p.failed_lock)
            out += [p.failed[i] for i in range(p.n_failed)]
            p.n_failed = 0
            pthread_mutex_unlock(&p.failed_lock)
        return sorted(set(out))

    def drain(self, uint32_t port_id):
        """Read and switch up to `batch` frames from one port (on the first
        worker, with no thread started): the number read, or -errno when
        its fd failed."""
        if port_at(&self.ports, port_id) == NULL:
            return 0
        cdef int r
        with nogil:
            r = self._drain(self.w, port_id)
        return r

    def drain_tunnel(self):
        """Receive and switch up to `batch` buffers from the tunnel: the
        number received, or -errno."""
        cdef int r
        with nogil:
            r = self._drain_tunnel(self.w)
        return r

    cdef int _drain(self, worker_t *w, uint32_t port_id) noexcept nogil:
        cdef port_t *inp = &self.ports.slots[port_id]
        cdef int fd = inp.fds[w.index]
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
                n = read(fd, hdr, FRAME_BUF + VNET_HLEN)
            else:
                n = read(fd, frame, FRAME_BUF)
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
            w.frames += 1
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
        gro_flush(w, &self.ports)

    cdef void _flush_tunnel(self, worker_t *w) noexcept nogil:
        tunnel_flush(w, &self.peers, &self.cap)

    cdef int64_t _decap(self, worker_t *w, int i, int64_t peer, unsigned char *data, ssize_t n,
                        uint64_t now) noexcept nogil:
        """Check one VXLAN datagram of received buffer i (from peer, -1 if
        unknown) and switch its inner frame. Returns the peer (learned)."""
        cdef int64_t vni, member
        cdef uint16_t net
        w.frames += 1
        w.stats[TUNNEL_STATS].rx_packets += 1
        w.stats[TUNNEL_STATS].rx_bytes += n
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
            if w.rx.learn_peers and (peer < 0 or self.peers.slots[peer].learned) \
                    and pthread_mutex_trylock(&self.peers.lock) == 0:    # busy: learned later
                member = peer_join(&self.peers, key_of_sockaddr(&w.rx.addr[i]), net, True)
                pthread_mutex_unlock(&self.peers.lock)
            if member < 0:                          # not ours to learn, or tables full
                self._drop_datagram(w, i, DROP_UNKNOWN_PEER if peer < 0 else DROP_PEER_NOT_MEMBER,
                                    data, n)
                return peer
            peer = member
        if now - load_u64(&self.peers.slots[peer].last_rx_ns) > 1000000:   # (a line few write)
            store_u64(&self.peers.slots[peer].last_rx_ns, now)
        w.peer_stats[peer].rx_packets += 1
        w.peer_stats[peer].rx_bytes += n
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
        cdef int reason
        cdef unsigned seq
        while True:                 # the port's addresses as one whole (ports.seq)
            seq = seq_read_begin(&self.ports.seq)
            reason = -1
            if inp.secured and spoofed(inp, frame, n, l2):
                reason = DROP_SPOOFED_SOURCE
            elif inp.secured and nd_spoofed(inp, frame, n, l2):
                reason = DROP_ND_SPOOFED
            if not seq_read_retry(&self.ports.seq, seq):
                break
        if reason < 0 and not inp.router and router_message(frame, n, l2):
            return DROP_RA_GUARD
        return reason

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
                w.stats[in_id].rx_packets += 1
                w.stats[in_id].rx_bytes += max(n, 0)
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
                w.arp_answered += 1
                self._send(w, inp, w.reply, arp_reply(w.reply, frame, known_mac), ARP_FRAME_LEN)
                return
            known_mac = nd_request_target(&self.neigh, net, frame, n)
            if known_mac:               # ... and ND suppression, the same for IPv6
                if w.trace != NULL:
                    trace_step(w.trace, TRACE_ND, -1, in_id, known_mac, 0)
                    return
                w.nd_answered += 1
                self._send(w, inp, w.reply, na_reply(w.reply, frame, known_mac), NA_FRAME_LEN)
                return
        cdef int64_t out = -1
        cdef verdict_t v
        if not inp.router and load_u32(ct_gateway_count(&self.ct, ct_port(in_id))):
            out = self._gateway_reply(w, in_id, net, frame, n, now)
        if out < 0:
            out = self._destination(in_id, net, frame, now)
            if w.trace != NULL:
                out = trace_destination(w.trace, in_id, frame, out)
        if out == DEST_LOOP:
            self._drop_frame(w, inp, DROP_LOOP, in_id, frame, n)
        elif out == DEST_FLOOD:
            if from_tunnel:
                gro_flush(w, &self.ports)       # keep order with what is held
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
        pthread_mutex_lock(&self.ct.lock)
        policy_decide(&self.ct, &self.frags, &path, &f, net, ms32(now),
                      commit and w.trace == NULL, v)
        pthread_mutex_unlock(&self.ct.lock)
        if w.trace != NULL:
            trace_verdict(w.trace, path.out_port if out != NULL else -1, v)
        return v.reason

    cdef void _end(self, pol_end_t *end, const port_t *p, const ip_key_t *address,
                   uint16_t net) noexcept nogil:
        """One end of a packet's path: a pod's port is the pod, the tunnel
        (NULL) is beyond, and behind a host port is the local pod that holds
        the address, or the node itself, or a Service, or anyone else."""
        cdef uint64_t owner
        cdef unsigned seq
        end.pod, end.host, end.node, end.service = p, False, False, False
        if p != NULL and p.router:
            end.host, end.pod = True, NULL
            owner = neigh_lookup(&self.owners, net, address) if not key_is_zero(address) else 0
            if owner:
                end.pod = &self.ports.slots[owner - 1]
            else:
                while True:
                    seq = seq_read_begin(&self.ports.seq)
                    end.node = owns_address(p, address)
                    if not seq_read_retry(&self.ports.seq, seq):
                        break
                end.service = is_service(&self.services, address)
        # Its tables, read once: the control plane swaps them whole.
        end.policy = <const port_policy_t *>load_acquire_ptr(<void **>&end.pod.policy) \
            if end.pod != NULL else NULL

    cdef int64_t _gateway_of(self, worker_t *w, uint32_t in_id, uint16_t net, const unsigned char *frame,
                             ssize_t n, uint64_t now) noexcept nogil:
        """The host port a frame from pod port or peer in_id must go back
        through (a reply of a connection that came in through it), or -1
        (_gateway.pxi). Shared by the pipeline and trace."""
        cdef flow_t f
        flow_parse(&f, net, frame, n, eth_header_len(frame, n))
        pthread_mutex_lock(&self.ct.lock)
        cdef int64_t gw = gateway_of_reply(&self.ct, &f, net, ct_port(in_id), ms32(now))
        pthread_mutex_unlock(&self.ct.lock)
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
        pthread_mutex_lock(&self.ct.lock)
        gateway_track(&self.ct, &f, net, in_id, out, source.pod - self.ports.slots
                      if source.pod != NULL else out if out != CT_NO_PORT else in_id, ms32(now))
        pthread_mutex_unlock(&self.ct.lock)

    cdef void _policy_drop(self, worker_t *w, uint32_t in_id, port_t *inp, port_t *out, const verdict_t *v,
                           const unsigned char *frame, ssize_t n, bint whole) noexcept nogil:
        """A frame (whole: all of it; else one copy, towards out or the
        peers) that policy refused: counted on the pod whose policy decided."""
        cdef port_t *decider = out if v.direction == POL_INGRESS else inp
        if w.trace != NULL:             # its verdict is the trace's policy step
            return
        if decider != NULL and decider != &w.tunnel and v.reason == DROP_POLICY_DENIED:
            w.stats[decider - self.ports.slots].policy_denied += 1
        w.totals.drops[v.reason] += 1
        if whole:
            stats_of(w, in_id).rx_dropped += 1
        elif out != NULL:
            w.stats[out - self.ports.slots].tx_dropped += 1
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
        for i in range(load_u32(&self.ports.limit)):
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
            for i in range(load_u32(&self.peers.n_members)):
                # (the member's bit too: the list may be changing under us)
                if self.peers.member_net[i] == net and \
                        peer_is_member(&self.peers, self.peers.member_peer[i], net):
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
                stats_of(w, in_id).rx_dropped += 1
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
        cdef int fd = out.fds[w.index]      # the worker's queue: the pod's replies come back to it
        if out.vnet_hdr:
            want = n + VNET_HLEN
            if hdr + VNET_HLEN == frame:
                written = write(fd, hdr, want)
            else:                                   # a decapsulated frame: header apart
                parts[0].iov_base, parts[0].iov_len = hdr, VNET_HLEN
                parts[1].iov_base, parts[1].iov_len = frame, n
                written = writev(fd, parts, 2)
        else:
            if hdr[0] & VNET_F_NEEDS_CSUM:
                complete_checksum(hdr, frame, n)    # in place, once: later copies reuse it
            written = write(fd, frame, n)
        if written != want:
            self._egress_drop(w, out, out_id, write_error_reason(written), frame, n)
            return
        w.stats[out_id].tx_packets += 1
        w.stats[out_id].tx_bytes += n
        if self.cap.active:
            cap_offer(&self.cap, CAP_EGRESS, out_id, -1, frame, n)

    cdef void _egress_drop(self, worker_t *w, port_t *out, uint32_t out_id, int reason,
                           const unsigned char *frame, ssize_t n) noexcept nogil:
        """A copy towards a port that was not written."""
        if w.trace != NULL:
            trace_step(w.trace, TRACE_DROP, reason, out_id, 0, 0)
            return
        w.stats[out_id].tx_dropped += 1
        w.totals.drops[reason] += 1
        if self.cap.active:
            cap_offer(&self.cap, CAP_DROP, out_id, reason, frame, n)

    cdef void _to_gro(self, worker_t *w, uint32_t out, unsigned char *hdr, unsigned char *frame,
                      ssize_t n) noexcept nogil:
        """Deliver a decapsulated frame to an offload port through GRO."""
        cdef ssize_t hlen = tcp_gro_header_len(frame, n)
        # Limited ports (and a trace) take it frame by frame.
        if hlen < 0 or w.trace != NULL or self.ports.slots[out].egress.rate > 0:
            gro_flush(w, &self.ports)
            self._send(w, &self.ports.slots[out], hdr, frame, n)
            return
        if self.cap.active:                     # each segment, as it goes into the superframe
            cap_offer(&self.cap, CAP_EGRESS, out, -1, frame, n)
        gro_add(w, &self.ports, out, frame, n, hlen)

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
        tunnel_drop(w, &self.cap, peer, reason, frame, n)

    cdef void _drop_frame(self, worker_t *w, port_t *inp, int reason, uint32_t in_id,
                          const unsigned char *frame, ssize_t n) noexcept nogil:
        if w.trace != NULL:             # the frame itself, not a copy: value 1
            trace_step(w.trace, TRACE_DROP, reason, in_id, 0, 1)
            return
        count_drop(w, in_id, reason)
        if self.cap.active:
            cap_offer(&self.cap, CAP_DROP, in_id, reason, frame, n)

    cdef void _drop_datagram(self, worker_t *w, int i, int reason, unsigned char *payload,
                             ssize_t n) noexcept nogil:
        """A tunnel-level drop of received datagram i (its UDP payload)."""
        count_drop(w, PEER_BASE, reason)
        if self.cap.active:
            capture_received_drop(&self.cap, &w.rx, self.peers.udp_port, i, reason, payload, n)
