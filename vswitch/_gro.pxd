# GRO on decapsulation: consecutive TCP segments of one flow from one
# recvmmsg batch, held as iovecs into the batch's buffers (no copy) and
# written to the pod's TAP as one superframe.

from libc.stdint cimport uint16_t, uint32_t, uint64_t

cdef enum:
    GRO_MAX_IOV = 48          # segments merged into one superframe, at most


cdef struct gro_t:
    iovec iov[GRO_MAX_IOV + 2]   # [virtio_net_hdr, first frame, payloads...]
    unsigned char vhdr[VNET_HLEN]
    int n                     # iovecs in use; 0 = nothing held
    uint32_t out              # the port it goes to
    ssize_t total, hlen
    uint16_t mss
    uint32_t next_seq
    uint64_t merged           # segments that went out inside a superframe
