# The data plane's C state, one concept per file (each declares its structs
# and constants; its operations are in the .pxi of the same name), and the
# Datapath that holds one of each. Everything here is plain C: the per-frame
# path touches only these structs and never a Python object.

cimport cython
from libc.stdint cimport uint16_t, uint32_t, uint64_t, int64_t, uintptr_t

include "_sync.pxd"
include "_syscalls.pxd"
include "_frame.pxd"
include "_offload.pxd"
include "_vxlan.pxd"
include "_underlay.pxd"
include "_counters.pxd"
include "_ports.pxd"
include "_conntrack.pxd"
include "_policy.pxd"
include "_fragments.pxd"
include "_networks.pxd"
include "_peers.pxd"
include "_fdb.pxd"
include "_neigh.pxd"
include "_tunnel_tx.pxd"
include "_tunnel_rx.pxd"
include "_gro.pxd"
include "_capture.pxd"
include "_trace.pxd"
include "_worker.pxd"


cdef enum:
    SLOT_SIZE = FRAME_HEADROOM + FRAME_BUF   # one frame buffer of a batch
    DEST_FLOOD = -1           # Datapath._destination: every other port and peer
    DEST_LOOP = -2            # Datapath._destination: back where it came from


cdef enum:                    # what Datapath._retire keeps until no worker can hold it
    RETIRE_FREE = 0           # memory to free() (a grown table's old slots)
    RETIRE_POLICY = 1         # a port's replaced NetworkPolicy tables
    RETIRE_PORT = 2           # a removed port's slot: its fds, counters and tables
    RETIRE_PEER = 3           # a forgotten peer's slot and counters


cdef class _Shared:
    # Shared by every forwarding thread: each table's .pxd says who writes
    # it and how readers stay safe. In short: the control plane (the event
    # loop's thread, through the methods of _fastpath.pyx and the
    # *_control.pxi files) is the only writer of ports, networks, services,
    # neighbours and owners; workers write the FDB (learning), conntrack and
    # fragments (policy commits), peers (learn_peers), token buckets and the
    # capture ring, each under that table's lock or atomically, and their
    # counters in their own worker_t. Readers on the frame path take no lock
    # but conntrack's. What a writer unlinks is freed (or its slot reused)
    # only after every worker passed a quiescent point (_retire, reclaim).
    cdef readonly int batch
    cdef ports_t ports
    cdef networks_t networks      # one word per network id: written and read atomically
    cdef fdb_t fdb
    cdef neigh_t neigh            # pod addresses the cluster knows: ARP answered here
    cdef neigh_t owners           # local secured pods' addresses -> their port id + 1
    cdef ct_t ct                  # connections NetworkPolicy allowed
    cdef frags_t frags            # first fragments policy allowed (under ct.lock)
    cdef services_t services      # Service addresses: egress is judged after the node's DNAT
    cdef uint32_t policed         # ports a policy selects (host ports look up sources only then)
    cdef peers_t peers
    cdef capture_t cap
    # The forwarding threads' own state (_worker.pxd), one each; the pipeline
    # takes one as `w` beside `self`. w is workers[0], which poll() and
    # drain() run on the caller's thread when no thread is started (rigs).
    cdef worker_t *workers
    cdef readonly int n_workers
    cdef worker_t *w
    cdef int notify_fd            # eventfd: readable when a worker saw an fd fail
    cdef list _threads            # started worker threads (empty: none)
    cdef list _retired            # [(epochs when retired, RETIRE_*, value)]

    cdef _declared(self, int network)
    cdef port_t *_port(self, uint32_t port_id) except NULL
    cdef _retire(self, int kind, values)
    cdef _neigh_set(self, neigh_t *t, uint16_t network, const ip_key_t *ip, uint64_t mac)
    cdef dict _port_counters(self, uint32_t row)
    cdef dict _peer_counters(self, uint32_t peer)


# The control methods, one concept per class (_<concept>_control.pxi), each
# built on the one before: Datapath is them all, plus the pipeline.
cdef class _PortsControl(_Shared):
    cdef _own_addresses(self, uint32_t port_id, bint own)
cdef class _PeersControl(_PortsControl):
    pass
cdef class _NetworksControl(_PeersControl):
    pass
cdef class _FdbControl(_NetworksControl):
    pass
cdef class _NeighControl(_FdbControl):
    pass
cdef class _PolicyControl(_NeighControl):
    pass
cdef class _CaptureControl(_PolicyControl):
    pass


@cython.final
cdef class Datapath(_CaptureControl):
    cdef void _serve(self, worker_t *w) noexcept nogil
    cdef int _serve_ready(self, worker_t *w, int n) noexcept nogil
    cdef int _drain(self, worker_t *w, uint32_t port_id) noexcept nogil
    cdef int _drain_tunnel(self, worker_t *w) noexcept nogil
    cdef void _flush_output(self, worker_t *w) noexcept nogil
    cdef void _flush_tunnel(self, worker_t *w) noexcept nogil
    cdef int64_t _decap(self, worker_t *w, int i, int64_t peer, unsigned char *data, ssize_t n,
                        uint64_t now) noexcept nogil
    cdef int _check(self, const port_t *inp, uint16_t net, const unsigned char *hdr,
                    const unsigned char *frame, ssize_t n) noexcept nogil
    cdef int64_t _destination(self, uint32_t in_id, uint16_t net, const unsigned char *frame,
                              uint64_t now) noexcept nogil
    cdef void _switch(self, worker_t *w, uint32_t in_id, port_t *inp, uint16_t net, unsigned char *hdr,
                      unsigned char *frame, ssize_t n, uint64_t now) noexcept nogil
    cdef bint _take(self, worker_t *w, bucket_t *b, ssize_t n, uint64_t now,
                    int64_t port) noexcept nogil
    cdef int _learn(self, worker_t *w, uint32_t in_id, uint16_t net, const unsigned char *frame,
                    uint64_t now) noexcept nogil
    cdef int _policy(self, worker_t *w, uint32_t in_id, port_t *inp, port_t *out, uint16_t net,
                     const unsigned char *frame, ssize_t n, uint64_t now, bint commit,
                     verdict_t *v) noexcept nogil
    cdef void _end(self, pol_end_t *end, const port_t *p, const ip_key_t *address,
                   uint16_t net) noexcept nogil
    cdef int64_t _gateway_of(self, worker_t *w, uint32_t in_id, uint16_t net, const unsigned char *frame,
                             ssize_t n, uint64_t now) noexcept nogil
    cdef int64_t _gateway_reply(self, worker_t *w, uint32_t in_id, uint16_t net, unsigned char *frame,
                                ssize_t n, uint64_t now) noexcept nogil
    cdef void _gateway_track(self, worker_t *w, uint32_t in_id, uint16_t out, uint16_t net,
                             const unsigned char *frame, ssize_t n, uint64_t now) noexcept nogil
    cdef void _policy_drop(self, worker_t *w, uint32_t in_id, port_t *inp, port_t *out, const verdict_t *v,
                           const unsigned char *frame, ssize_t n, bint whole) noexcept nogil
    cdef void _flood(self, worker_t *w, uint32_t in_id, uint16_t net, port_t *inp, unsigned char *hdr,
                     unsigned char *frame, ssize_t n, uint64_t now) noexcept nogil
    cdef void _send(self, worker_t *w, port_t *out, unsigned char *hdr, unsigned char *frame,
                    ssize_t n) noexcept nogil
    cdef void _to_gro(self, worker_t *w, uint32_t out, unsigned char *hdr, unsigned char *frame,
                      ssize_t n) noexcept nogil
    cdef void _to_peer(self, worker_t *w, uint32_t peer, uint16_t net, unsigned char *hdr,
                       unsigned char *frame, ssize_t n) noexcept nogil
    cdef void _room_to_queue(self, worker_t *w) noexcept nogil
    cdef void _peer_drop(self, worker_t *w, uint32_t peer, int reason, const unsigned char *frame,
                         ssize_t n) noexcept nogil
    cdef void _egress_drop(self, worker_t *w, port_t *out, uint32_t out_id, int reason,
                           const unsigned char *frame, ssize_t n) noexcept nogil
    cdef void _drop_frame(self, worker_t *w, port_t *inp, int reason, uint32_t in_id,
                          const unsigned char *frame, ssize_t n) noexcept nogil
    cdef void _drop_datagram(self, worker_t *w, int i, int reason, unsigned char *payload,
                             ssize_t n) noexcept nogil
