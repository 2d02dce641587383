# The tunnel's sending side: VXLAN datagrams queued for peers during a
# round and sent at its flush, grouped into UDP GSO messages.

from libc.stdint cimport uint16_t, uint32_t

cdef enum:
    MAX_PENDING = 1024        # VXLAN datagrams queued for one sendmmsg
    MAX_SENDERS = 64          # the tunnel's sending sockets (outer source ports)
    SEG_HDR_MAX = 256         # room for one segment's copy of a superframe's headers


cdef struct tx_msg_t:         # one sendmmsg entry: queued datagrams sent as one (UDP GSO)
    uint32_t first            # its first datagram
    uint32_t count            # its datagrams, all seg_len long but the last
    uint32_t seg_len
    uint32_t total            # bytes
    uint16_t sock             # index of the sending socket
    uint16_t peer
    bint sealed               # a shorter datagram ended it


cdef struct tunnel_tx_t:
    int fd[MAX_SENDERS]       # UDP sockets bound to the VTEP address, one per source
    uint16_t sport[MAX_SENDERS]   # port; a flow's hash picks one
    uint32_t n_senders
    uint16_t underlay_mtu
    uint16_t outer_overhead   # what encapsulation adds around a frame (set_tunnel)
    # Each queued datagram is 3 iovecs (VXLAN header, headers, payload);
    # consecutive ones of the same peer and socket are grouped into messages
    # that the kernel cuts back into datagrams (UDP_SEGMENT).
    iovec *iov
    unsigned char *vxlan      # their VXLAN headers
    unsigned char *seg        # their segment-header slots (SEG_HDR_MAX each)
    uint32_t *peer
    uint32_t *length
    uint32_t n_pending
    mmsghdr *mmsg
    tx_msg_t *msgs
    unsigned char *ctrl
    uint32_t n_msgs
