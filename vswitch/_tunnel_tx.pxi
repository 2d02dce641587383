# Tunnel sending (see _tunnel_tx.pxd): frames for peers are queued as VXLAN
# datagrams during a round and sent at its flush, one sendmmsg per run of
# messages from the same socket, each message of several datagrams one UDP
# GSO buffer that the kernel cuts back into datagrams.


cdef int tunnel_tx_init(tunnel_tx_t *t) noexcept nogil:
    t.iov = <iovec *>calloc(3 * MAX_PENDING, sizeof(iovec))
    t.vxlan = <unsigned char *>calloc(MAX_PENDING, VXLAN_HLEN)
    t.seg = <unsigned char *>calloc(MAX_PENDING, SEG_HDR_MAX)
    t.peer = <uint32_t *>calloc(MAX_PENDING, sizeof(uint32_t))
    t.length = <uint32_t *>calloc(MAX_PENDING, sizeof(uint32_t))
    t.mmsg = <mmsghdr *>calloc(MAX_PENDING, sizeof(mmsghdr))
    t.msgs = <tx_msg_t *>calloc(MAX_PENDING, sizeof(tx_msg_t))
    t.ctrl = <unsigned char *>calloc(MAX_PENDING, CMSG_BUF)
    t.n_senders = t.n_pending = t.n_msgs = 0
    t.underlay_mtu = 0
    t.outer_overhead = 0
    if t.iov == NULL or t.vxlan == NULL or t.seg == NULL or t.peer == NULL \
            or t.length == NULL or t.mmsg == NULL or t.msgs == NULL or t.ctrl == NULL:
        return -1
    return 0


cdef void tunnel_tx_free(tunnel_tx_t *t) noexcept nogil:
    free(t.iov)
    free(t.vxlan)
    free(t.seg)
    free(t.peer)
    free(t.length)
    free(t.mmsg)
    free(t.msgs)
    free(t.ctrl)
    t.iov = NULL
    t.vxlan = t.seg = t.ctrl = NULL
    t.peer = t.length = NULL
    t.mmsg = NULL
    t.msgs = NULL


cdef inline uint16_t tunnel_sender(const tunnel_tx_t *t, const unsigned char *frame,
                                   ssize_t n) noexcept nogil:
    """The sending socket (source port) of a frame's flow; multiply and
    shift rather than a division."""
    return (<uint64_t>flow_hash(frame, n) * t.n_senders) >> 32


cdef inline uint32_t tunnel_queue(tunnel_tx_t *t, uint32_t peer, uint32_t vni,
                                  const unsigned char *flow, unsigned char *head,
                                  ssize_t head_len, unsigned char *payload,
                                  ssize_t size) noexcept nogil:
    """Queue one datagram (the caller made room: n_pending < MAX_PENDING):
    VXLAN header, head, payload (may be empty). flow: the frame whose flow
    picks the sending socket (source port). head NULL: the datagram's own
    segment-header slot, which the caller fills before the flush. Returns
    the datagram's index. It joins the last message when that goes to the
    same peer from the same socket and it is no longer than that message's
    datagrams."""
    cdef uint32_t k = t.n_pending
    cdef uint32_t length = VXLAN_HLEN + head_len + size
    cdef uint16_t sock = tunnel_sender(t, flow, head_len + size)
    cdef tx_msg_t *m
    if head == NULL:
        head = t.seg + k * SEG_HDR_MAX
    t.n_pending += 1
    vxlan_header(t.vxlan + k * VXLAN_HLEN, vni)
    t.iov[3 * k].iov_base = t.vxlan + k * VXLAN_HLEN
    t.iov[3 * k].iov_len = VXLAN_HLEN
    t.iov[3 * k + 1].iov_base = head
    t.iov[3 * k + 1].iov_len = head_len
    t.iov[3 * k + 2].iov_base = payload
    t.iov[3 * k + 2].iov_len = size
    t.peer[k] = peer
    t.length[k] = length
    m = &t.msgs[t.n_msgs - 1] if t.n_msgs else NULL
    if (m != NULL and not m.sealed and m.peer == peer and m.sock == sock
            and length <= m.seg_len and m.count < UDP_GSO_MAX_SEGS
            and m.total + length <= UDP_GSO_MAX_BYTES):
        m.count += 1
        m.total += length
        m.sealed = length < m.seg_len
        return k
    m = &t.msgs[t.n_msgs]
    t.n_msgs += 1
    m.first, m.count, m.seg_len, m.total = k, 1, length, length
    m.sock, m.peer, m.sealed = sock, peer, False
    return k


cdef inline void tunnel_drop(worker_t *w, capture_t *cap, uint32_t peer, int reason,
                             const unsigned char *frame, ssize_t n) noexcept nogil:
    """A copy for a peer that was not sent (frame NULL: not captured)."""
    w.peer_stats[peer].tx_dropped += 1
    w.stats[TUNNEL_STATS].tx_dropped += 1
    w.totals.drops[reason] += 1
    if cap.active and frame != NULL:
        cap_offer(cap, CAP_DROP, PEER_BASE + peer, reason, frame, n)


cdef void _tunnel_done(worker_t *w, capture_t *cap, tx_msg_t *m, int reason) noexcept nogil:
    """Count a message's datagrams as sent (reason -1) or dropped. Bytes
    are UDP payload (VXLAN header + frame), as on receipt."""
    cdef uint32_t k
    cdef peer_stats_t *p = &w.peer_stats[m.peer]
    cdef port_stats_t *tunnel = &w.stats[TUNNEL_STATS]
    for k in range(m.first, m.first + m.count):
        if reason >= 0:
            tunnel_drop(w, cap, m.peer, reason, NULL, 0)
            continue
        p.tx_packets += 1
        p.tx_bytes += w.tx.length[k]
        tunnel.tx_packets += 1
        tunnel.tx_bytes += w.tx.length[k]


cdef void tunnel_flush(worker_t *w, peers_t *peers, capture_t *cap) noexcept nogil:
    """Send the worker's queued datagrams."""
    cdef tunnel_tx_t *t = &w.tx
    cdef uint32_t i, j, k
    cdef int r
    cdef tx_msg_t *m
    cdef msghdr *h
    cdef cmsghdr *cm
    cdef unsigned char udp[UDP_HLEN]
    for i in range(t.n_msgs):
        m = &t.msgs[i]
        h = &t.mmsg[i].msg_hdr
        h.msg_name = &peers.addr[m.peer]
        h.msg_namelen = peers.addr_len[m.peer]
        h.msg_iov = &t.iov[3 * m.first]
        h.msg_iovlen = 3 * m.count
        h.msg_flags = 0
        if m.count > 1:
            h.msg_control = t.ctrl + i * CMSG_BUF
            h.msg_controllen = CMSG_BUF
            cm = CMSG_FIRSTHDR(h)
            cm.cmsg_level, cm.cmsg_type, cm.cmsg_len = SOL_UDP, UDP_SEGMENT, CMSG_LEN(2)
            (<uint16_t *>CMSG_DATA(cm))[0] = m.seg_len
            h.msg_controllen = CMSG_LEN(2)
        else:
            h.msg_control, h.msg_controllen = NULL, 0
        if cap.active:
            for k in range(m.first, m.first + m.count):
                udp_header(udp, t.sport[m.sock], peers.udp_port, t.length[k])
                cap_offer_datagram(cap, CAP_ENCAP, PEER_BASE + m.peer, -1, &w.rx.vtep,
                                   &peers.slots[m.peer].ip, udp, &t.iov[3 * k], 3)
    i = 0
    while i < t.n_msgs:
        j = i + 1
        while j < t.n_msgs and t.msgs[j].sock == t.msgs[i].sock:
            j += 1
        r = sendmmsg(t.fd[t.msgs[i].sock], &t.mmsg[i], j - i, MSG_DONTWAIT)
        if r < 0:
            if errno == EINTR:
                continue
            _tunnel_done(w, cap, &t.msgs[i], write_error_reason(-1))
            i += 1                      # that one failed: counted, go on
            continue
        for k in range(i, i + r):
            _tunnel_done(w, cap, &t.msgs[k], -1)
        i += r
    t.n_pending = t.n_msgs = 0
