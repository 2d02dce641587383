# Tunnel receiving (see _tunnel_rx.pxd): the recvmmsg set-up over the
# batch's frame buffers and what a received buffer says about itself. The
# datagram checks are the pipeline's (Datapath._decap).


cdef int tunnel_rx_init(tunnel_rx_t *t, unsigned char *slots, int batch) noexcept nogil:
    t.fd = -1
    t.learn_peers = False
    t.vtep.hi = t.vtep.lo = 0
    memset(t.zero_vhdr, 0, VNET_HLEN)
    t.ctrl = <unsigned char *>calloc(batch, CMSG_BUF)
    t.msgs = <mmsghdr *>calloc(batch, sizeof(mmsghdr))
    t.iov = <iovec *>calloc(batch, sizeof(iovec))
    t.addr = <sockaddr_in6 *>calloc(batch, sizeof(sockaddr_in6))
    if t.ctrl == NULL or t.msgs == NULL or t.iov == NULL or t.addr == NULL:
        return -1
    cdef int i
    for i in range(batch):
        # VXLAN lands just before the frame: the inner frame then starts
        # where every other path expects it.
        t.iov[i].iov_base = slot_frame(slots, i) - VXLAN_HLEN
        t.iov[i].iov_len = FRAME_BUF + VXLAN_HLEN
        t.msgs[i].msg_hdr.msg_iov = &t.iov[i]
        t.msgs[i].msg_hdr.msg_iovlen = 1
        t.msgs[i].msg_hdr.msg_name = &t.addr[i]
        t.msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in6)
        t.msgs[i].msg_hdr.msg_control = t.ctrl + i * CMSG_BUF
        t.msgs[i].msg_hdr.msg_controllen = CMSG_BUF
    return 0


cdef void tunnel_rx_free(tunnel_rx_t *t) noexcept nogil:
    free(t.ctrl)
    free(t.msgs)
    free(t.iov)
    free(t.addr)
    t.ctrl = NULL
    t.msgs = NULL
    t.iov = NULL
    t.addr = NULL


cdef inline void tunnel_rx_rearm(tunnel_rx_t *t, int i) noexcept nogil:
    """Make buffer i ready for the next recvmmsg (the kernel shrank its lengths)."""
    t.msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in6)
    t.msgs[i].msg_hdr.msg_controllen = CMSG_BUF


cdef inline ssize_t gro_segment_size(msghdr *h) noexcept nogil:
    """The UDP_GRO segment size of a received buffer, or 0 if it is one datagram."""
    cdef cmsghdr *c = CMSG_FIRSTHDR(h)
    while c != NULL:
        if c.cmsg_level == SOL_UDP and c.cmsg_type == UDP_GRO:
            return (<int *>CMSG_DATA(c))[0]
        c = CMSG_NXTHDR(h, c)
    return 0


cdef void capture_received_drop(capture_t *cap, const tunnel_rx_t *t, uint16_t udp_port,
                                int i, int reason, unsigned char *payload,
                                ssize_t n) noexcept nogil:
    """Offer a dropped datagram of buffer i (its UDP payload) to capture,
    as the outer packet it arrived in."""
    cdef unsigned char udp[UDP_HLEN]
    cdef iovec part
    memcpy(udp, &t.addr[i].sin6_port, 2)             # (where sin_port is, too)
    udp[2], udp[3] = udp_port >> 8, udp_port & 0xFF
    udp[4], udp[5], udp[6], udp[7] = ((n + UDP_HLEN) >> 8) & 0xFF, (n + UDP_HLEN) & 0xFF, 0, 0
    part.iov_base, part.iov_len = payload, n
    cdef ip_key_t src = key_of_sockaddr(&t.addr[i])
    cap_offer_datagram(cap, CAP_DROP, TUNNEL_PORT, reason, &src, &t.vtep, udp, &part, 1)
