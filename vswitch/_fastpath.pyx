# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The data plane: ports, FDB and the per-frame pipeline, in C.

The control plane owns file descriptors and calls `drain(port_id)` when the
event loop reports one readable; that call reads up to `batch` frames into a
preallocated buffer and switches each of them without creating a Python
object. Everything else here (adding ports, reading counters, dumping the
FDB) is control-path code and may use Python objects freely.
"""

from libc.errno cimport errno, EAGAIN, EINTR, EIO
from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from posix.unistd cimport read, write

include "_frame.pxi"
include "_fdb.pxi"
include "_offload.pxi"

# Names of the drop reasons, in the order of their enum in _fastpath.pxd.
DROP_NAMES = ("runt", "oversize", "bad_source", "loop", "no_route", "bad_vnet_hdr",
              "needs_segmentation", "port_down", "queue_full", "write_error")
assert len(DROP_NAMES) == N_DROP_REASONS


cdef inline uint64_t monotonic_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec


cdef class Datapath:
    """A switch: ports (file descriptors carrying Ethernet frames), one FDB
    shared by all networks (keyed by network and MAC), and counters."""

    cdef port_t *ports
    cdef uint32_t port_limit      # highest port id in use + 1
    cdef fdb_t fdb
    cdef unsigned char *buf
    cdef uint64_t drops[N_DROP_REASONS]
    cdef uint64_t unicast         # frames delivered to one learned port
    cdef uint64_t flooded         # frames sent to every other port of their network
    cdef readonly int batch

    def __cinit__(self, uint64_t fdb_max_entries=65536, double aging_time=300.0,
                  int batch=64):
        if fdb_max_entries < 1 or aging_time <= 0 or batch < 1:
            raise ValueError("fdb_max_entries, aging_time and batch must be positive")
        self.ports = <port_t *>malloc(MAX_PORTS * sizeof(port_t))
        self.buf = <unsigned char *>malloc(FRAME_BUF + FRAME_HEADROOM)
        if self.ports == NULL or self.buf == NULL or \
                fdb_init(&self.fdb, fdb_max_entries, <uint64_t>(aging_time * 1e9)) < 0:
            raise MemoryError()
        cdef int i
        for i in range(MAX_PORTS):
            memset(&self.ports[i], 0, sizeof(port_t))
            self.ports[i].fd = -1
        memset(self.drops, 0, sizeof(self.drops))
        self.port_limit = 0
        self.unicast = self.flooded = 0
        self.batch = batch

    def __dealloc__(self):
        fdb_destroy(&self.fdb)
        free(self.ports)
        free(self.buf)

    # ---------------------------------------------------------------- ports

    def add_port(self, int fd, int network, int mtu, bint vnet_hdr=False):
        """Attach a non-blocking fd to `network` (1..4095); returns the port id.
        vnet_hdr: frames on the fd are preceded by a virtio_net_hdr."""
        if not 0 < network < MAX_NETWORKS:
            raise ValueError(f"network id must be 1..{MAX_NETWORKS - 1}")
        if not 68 <= mtu <= 65535:
            raise ValueError("mtu must be 68..65535")
        cdef uint32_t i
        for i in range(MAX_PORTS):
            if self.ports[i].fd < 0:
                memset(&self.ports[i], 0, sizeof(port_t))
                self.ports[i].fd = fd
                self.ports[i].network = network
                self.ports[i].mtu = mtu
                self.ports[i].vnet_hdr = vnet_hdr
                if i >= self.port_limit:
                    self.port_limit = i + 1
                return i
        raise OverflowError(f"all {MAX_PORTS} ports are in use")

    def remove_port(self, uint32_t port_id):
        """Detach a port (the caller closes its fd) and forget its FDB entries."""
        self._port(port_id)
        fdb_sweep(&self.fdb, SWEEP_PORT, 0, port_id, 0)
        self.ports[port_id].fd = -1
        while self.port_limit > 0 and self.ports[self.port_limit - 1].fd < 0:
            self.port_limit -= 1

    def port_counters(self, uint32_t port_id):
        cdef port_t *p = self._port(port_id)
        return {"rx_packets": p.rx_packets, "rx_bytes": p.rx_bytes,
                "rx_dropped": p.rx_dropped, "tx_packets": p.tx_packets,
                "tx_bytes": p.tx_bytes, "tx_dropped": p.tx_dropped}

    cdef port_t *_port(self, uint32_t port_id) except NULL:
        if port_id >= MAX_PORTS or self.ports[port_id].fd < 0:
            raise KeyError(f"no port {port_id}")
        return &self.ports[port_id]

    # ------------------------------------------------------------------ FDB

    @property
    def aging_time(self):
        return self.fdb.aging_ns / 1e9

    @aging_time.setter
    def aging_time(self, double seconds):
        if seconds <= 0:
            raise ValueError("aging_time must be positive")
        self.fdb.aging_ns = <uint64_t>(seconds * 1e9)

    def fdb_flush(self, int network=0):
        """Forget learned MACs of one network (0: all); returns how many."""
        return fdb_sweep(&self.fdb, SWEEP_ALL, network, 0, 0)

    def fdb_expire(self):
        """Delete entries older than the aging time; returns how many."""
        cdef uint64_t n = fdb_sweep(&self.fdb, SWEEP_EXPIRED, 0, 0, monotonic_ns())
        self.fdb.expired += n
        return n

    def fdb_entries(self, int network=0):
        """[(network, mac, port_id, age_seconds)] of live entries."""
        cdef uint64_t i, now = monotonic_ns()
        cdef fdb_entry_t *e
        out = []
        for i in range(self.fdb.mask + 1):
            e = &self.fdb.slots[i]
            if e.key == 0 or now - e.seen_ns > self.fdb.aging_ns:
                continue
            if network and (e.key >> 48) != <uint64_t>network:
                continue
            out.append((e.key >> 48, mac_to_str(e.key & 0xFFFFFFFFFFFF),
                        e.port, (now - e.seen_ns) / 1e9))
        return out

    # ------------------------------------------------------------- counters

    def counters(self):
        """Switch-wide counters: decisions, drops by reason, FDB."""
        return {
            "unicast": self.unicast,
            "flooded": self.flooded,
            "drops": {DROP_NAMES[i]: self.drops[i] for i in range(N_DROP_REASONS)},
            "fdb": {"entries": self.fdb.count, "max_entries": self.fdb.max_entries,
                    "learned": self.fdb.learned, "moves": self.fdb.moves,
                    "full": self.fdb.full, "expired": self.fdb.expired},
        }

    # ----------------------------------------------------------- frame path

    cpdef int drain(self, uint32_t port_id) except? -2:
        """Read and switch up to `batch` frames from a readable port.

        Returns the number of frames read, or -errno when the fd failed
        (the device is gone); the caller then stops watching it.
        """
        if port_id >= self.port_limit or self.ports[port_id].fd < 0:
            return 0
        cdef port_t *inp = &self.ports[port_id]
        # The frame always starts at `frame` and its virtio_net_hdr sits just
        # before it, so that any egress can write either without a copy.
        cdef unsigned char *frame = self.buf + FRAME_HEADROOM
        cdef unsigned char *hdr = frame - VNET_HLEN
        cdef uint64_t now = monotonic_ns()
        cdef ssize_t n
        cdef int count = 0
        with nogil:
            while count < self.batch:
                if inp.vnet_hdr:
                    n = read(inp.fd, hdr, FRAME_BUF + VNET_HLEN)
                else:
                    n = read(inp.fd, frame, FRAME_BUF)
                if n < 0:
                    if errno == EINTR:
                        continue
                    if errno == EAGAIN:
                        break
                    return -errno
                count += 1          # an empty datagram is a (runt) frame too
                if inp.vnet_hdr:
                    n -= VNET_HLEN
                else:
                    memset(hdr, 0, VNET_HLEN)
                self._switch(port_id, inp, hdr, frame, n, now)
        return count

    cdef inline void _drop(self, port_t *inp, int reason) noexcept nogil:
        self.drops[reason] += 1
        inp.rx_dropped += 1

    cdef inline void _switch(self, uint32_t in_id, port_t *inp, unsigned char *hdr,
                             unsigned char *frame, ssize_t n, uint64_t now) noexcept nogil:
        """Learn, look up, deliver: the pipeline for one frame."""
        inp.rx_packets += 1
        cdef ssize_t l2 = eth_header_len(frame, n)
        if l2 < 0:
            inp.rx_bytes += max(n, 0)
            self._drop(inp, DROP_RUNT)
            return
        inp.rx_bytes += n
        if not vnet_hdr_valid(hdr, n):
            self._drop(inp, DROP_BAD_VNET_HDR)
            return
        cdef bint oversize
        if vnet_is_gso(hdr):
            # A superframe is longer than the MTU by design; its segments
            # (gso_size bytes of payload each) are what must fit.
            oversize = le16(hdr + 4) > inp.mtu
        else:
            oversize = n - l2 > inp.mtu
        if oversize:
            self._drop(inp, DROP_OVERSIZE)
            return
        if is_multicast(frame + 6):
            self._drop(inp, DROP_BAD_SOURCE)
            return
        cdef uint16_t net = inp.network
        fdb_learn(&self.fdb, net, mac48(frame + 6), in_id, now)
        cdef int64_t out
        if not is_multicast(frame):
            out = fdb_lookup(&self.fdb, net, mac48(frame), now)
            if out == in_id:
                self._drop(inp, DROP_LOOP)
                return
            if out >= 0:
                self.unicast += 1
                self._send(&self.ports[out], hdr, frame, n)
                return
        self._flood(in_id, inp, hdr, frame, n)

    cdef inline void _flood(self, uint32_t in_id, port_t *inp, unsigned char *hdr,
                            unsigned char *frame, ssize_t n) noexcept nogil:
        cdef uint32_t i
        cdef bint sent = False
        for i in range(self.port_limit):
            if i != in_id and self.ports[i].fd >= 0 and self.ports[i].network == inp.network:
                self._send(&self.ports[i], hdr, frame, n)
                sent = True
        if sent:
            self.flooded += 1
        else:
            self._drop(inp, DROP_NO_ROUTE)

    cdef inline void _send(self, port_t *out, unsigned char *hdr, unsigned char *frame,
                           ssize_t n) noexcept nogil:
        cdef ssize_t w, want = n
        if out.vnet_hdr:
            want = n + VNET_HLEN
            w = write(out.fd, hdr, want)
        elif vnet_is_gso(hdr):
            out.tx_dropped += 1
            self.drops[DROP_NEEDS_SEGMENTATION] += 1
            return
        else:
            if hdr[0] & VNET_F_NEEDS_CSUM:
                complete_checksum(hdr, frame, n)    # in place, once: later copies reuse it
            w = write(out.fd, frame, n)
        if w == want:
            out.tx_packets += 1
            out.tx_bytes += n
            return
        out.tx_dropped += 1
        if w < 0 and errno == EAGAIN:
            self.drops[DROP_QUEUE_FULL] += 1
        elif w < 0 and errno == EIO:
            self.drops[DROP_PORT_DOWN] += 1
        else:
            self.drops[DROP_WRITE_ERROR] += 1
