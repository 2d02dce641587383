# Capture: sessions (points, port, classic BPF filter) and the ring of
# records the control plane drains.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t

cdef enum:                    # capture points (bits of a session's point mask)
    CAP_INGRESS = 1           # a frame read from a pod port
    CAP_EGRESS = 2            # a frame written to a pod port
    CAP_ENCAP = 4             # an outer VXLAN packet sent to a peer
    CAP_DECAP = 8             # an inner frame received from a peer
    CAP_DROP = 16             # a frame dropped, with its reason
    MAX_CAPTURES = 32         # sessions at once (bits of a record's mask)
    CAP_RING_BYTES = 8 << 20  # records waiting for the control plane
    CAP_SCRATCH = 65536 + 512  # one synthesized outer packet
    CAP_WRAP = 0xFFFFFFFF     # a record's cap_len: the rest of the ring is empty
    BPF_MEMWORDS = 16


cdef struct bpf_insn_t:      # struct sock_filter: classic BPF, as libpcap compiles it
    uint16_t code
    uint8_t jt
    uint8_t jf
    uint32_t k


cdef struct cap_session_t:
    uint32_t points           # CAP_* bits
    int64_t port              # a port id (or PEER_BASE + peer), -1 = any
    uint32_t snaplen
    bpf_insn_t *prog          # NULL: every frame matches
    uint32_t prog_len


cdef struct cap_rec_t:       # a record in the capture ring, followed by its bytes
    uint64_t ts_ns            # CLOCK_REALTIME
    uint32_t mask             # the sessions it matched
    uint32_t port
    uint32_t orig_len
    uint32_t cap_len          # CAP_WRAP: the rest of the ring is empty, go to its start
    uint16_t point
    uint16_t reason           # drop reason + 1; 0 = not a drop
    uint32_t detail           # policy drops: POL_EGRESS << 31 | the deciding policy's id


cdef struct capture_t:
    # Shared by all workers: everything past the `active` test is under `lock`
    # (sessions, ring, scratch): capture is for debugging, one lock suffices.
    pthread_mutex_t lock
    cap_session_t sessions[MAX_CAPTURES]
    uint32_t active           # bitmask of sessions; 0: capture costs this test only
    unsigned char *ring
    uint64_t head, tail
    uint64_t dropped          # records lost because the ring was full
    unsigned char *scratch    # where outer packets are built
