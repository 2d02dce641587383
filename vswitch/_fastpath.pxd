# The data plane's C state, one concept per file (each declares its structs
# and constants; its operations are in the .pxi of the same name), and the
# Datapath that holds one of each. Everything here is plain C: the per-frame
# path touches only these structs and never a Python object.

cimport cython
from libc.stdint cimport uint16_t, uint32_t, uint64_t, int64_t

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


cdef class _Shared:
    # Shared by every forwarding thread (one today). Written by the control
    # plane through the methods of _fastpath.pyx and the *_control.pxi files;
    # the pipeline writes only the FDB (learning), conntrack and fragments
    # (policy commits), the per-port and per-peer counters, token buckets
    # and the capture ring. With one thread nothing else runs beside it: the
    # event loop calls poll(), and the control plane runs between polls.
    cdef readonly int batch
    cdef ports_t ports
    cdef networks_t networks
    cdef fdb_t fdb
    cdef neigh_t neigh            # pod addresses the cluster knows: ARP answered here
    cdef neigh_t owners           # local secured pods' addresses -> their port id + 1
    cdef ct_t ct                  # connections NetworkPolicy allowed
    cdef frags_t frags            # first fragments policy allowed
    cdef services_t services      # Service addresses: egress is judged after the node's DNAT
    cdef uint32_t policed         # ports a policy selects (host ports look up sources only then)
    cdef peers_t peers
    cdef capture_t cap
    # Owned by the one forwarding thread (_worker.pxd): the pipeline takes it
    # as `w` beside `self`.
    cdef worker_t w

    cdef _declared(self, int network)
    cdef port_t *_port(self, uint32_t port_id) except NULL


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
