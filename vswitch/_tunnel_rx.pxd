# The tunnel's receive side: one recvmmsg into the batch's frame buffers
# (UDP GRO: a buffer may hold several datagrams of one flow).

from libc.stdint cimport uint32_t


cdef struct tunnel_rx_t:
    int fd                    # UDP socket bound to the VTEP address and port (UDP_GRO); -1: none
    bint learn_peers
    ip_key_t vtep             # this node's VTEP (captured outer headers)
    mmsghdr *msgs             # one per frame buffer of a batch
    iovec *iov
    sockaddr_in6 *addr        # each buffer's source (either family)
    unsigned char *ctrl
    unsigned char zero_vhdr[VNET_HLEN]   # the offload header of decapsulated frames
