# GRO on decapsulation (see _gro.pxd): which frames may merge, holding a
# train of segments, and writing it to the pod's TAP as one superframe.
# TCP over IPv4 (no options) or IPv6 (no extension headers), untagged: the
# TCP header starts at GRO_L4_V4 or GRO_L4_V6.

cdef enum:
    GRO_L4_V4 = 34            # Ethernet 14 + IPv4 20
    GRO_L4_V6 = 54            # Ethernet 14 + IPv6 40


cdef inline void gro_init(gro_t *g) noexcept nogil:
    g.n = 0
    g.merged = 0


cdef inline ssize_t gro_l4(const unsigned char *frame) noexcept nogil:
    """Where the TCP header of a mergeable frame starts (by its EtherType)."""
    return GRO_L4_V4 if frame[12] == 0x08 else GRO_L4_V6


cdef inline ssize_t tcp_gro_header_len(const unsigned char *frame, ssize_t n) noexcept nogil:
    """Header length of a frame GRO may merge (untagged IPv4 without
    options or fragmentation, or IPv6 without extension headers; TCP with
    only ACK or ACK+PSH, a payload, and the checksums right), or -1."""
    cdef const unsigned char *ip = frame + 14
    cdef ssize_t l4
    cdef uint64_t pseudo
    if n >= GRO_L4_V4 + 21 and frame[12] == 0x08 and frame[13] == 0x00:
        if ip[0] != 0x45 or ip[9] != 6 or (ip[6] & 0x3F) or ip[7] or be16(ip + 2) != n - 14 \
                or csum_fold(csum_add(0, ip, 20)) != 0:
            return -1
        l4, pseudo = GRO_L4_V4, csum_add(6 + n - GRO_L4_V4, ip + 12, 8)
    elif n >= GRO_L4_V6 + 21 and frame[12] == 0x86 and frame[13] == 0xDD:
        if ip[0] >> 4 != 6 or ip[6] != 6 or be16(ip + 4) != n - GRO_L4_V6:
            return -1
        l4, pseudo = GRO_L4_V6, csum_add(6 + n - GRO_L4_V6, ip + 8, 32)
    else:
        return -1
    cdef const unsigned char *tcp = frame + l4
    cdef ssize_t hlen = l4 + (tcp[12] >> 4) * 4
    if (tcp[12] >> 4) < 5 or hlen >= n or (tcp[13] & ~0x18) or not (tcp[13] & 0x10):
        return -1
    if csum_fold(csum_add(pseudo, tcp, n - l4)) != 0:
        return -1
    return hlen


cdef inline bint gro_same_flow(const unsigned char *a, const unsigned char *b,
                               ssize_t hlen) noexcept nogil:
    """Same Ethernet header, IP TOS/TTL (traffic class, flow label, hop
    limit), addresses, ports, ack, header length and options: b may
    continue a."""
    cdef ssize_t l4 = gro_l4(a)
    if memcmp(a, b, 14) != 0:
        return False
    if l4 == GRO_L4_V4:
        if a[15] != b[15] or a[22] != b[22] or memcmp(a + 26, b + 26, 12) != 0:
            return False
    elif memcmp(a + 14, b + 14, 4) != 0 or a[21] != b[21] or memcmp(a + 22, b + 22, 36) != 0:
        return False
    return memcmp(a + l4 + 8, b + l4 + 8, 5) == 0 and \
        memcmp(a + l4 + 20, b + l4 + 20, hlen - l4 - 20) == 0


cdef void gro_finish(unsigned char *vhdr, unsigned char *first, ssize_t total, ssize_t hlen,
                     uint16_t mss) noexcept nogil:
    """Turn the first segment's headers into a superframe's (IP length and
    checksum, TCP pseudo-header sum for CHECKSUM_PARTIAL) and write the
    virtio_net_hdr that tells the pod's kernel what it gets."""
    cdef ssize_t l4 = gro_l4(first)
    if l4 == GRO_L4_V4:
        put16(first + 16, <uint16_t>(total - 14))
        ip4_set_checksum(first + 14, 20)
        put16(first + l4 + 16, ~csum_fold(csum_add(6 + total - l4, first + 26, 8)))
        vhdr[1] = VNET_GSO_TCPV4
    else:
        put16(first + 18, <uint16_t>(total - l4))
        put16(first + l4 + 16, ~csum_fold(csum_add(6 + total - l4, first + 22, 32)))
        vhdr[1] = VNET_GSO_TCPV6
    vhdr[0] = VNET_F_NEEDS_CSUM
    vhdr[2] = hlen & 0xFF
    vhdr[3] = hlen >> 8
    vhdr[4] = mss & 0xFF
    vhdr[5] = mss >> 8
    vhdr[6] = <unsigned char>l4
    vhdr[7] = 0
    vhdr[8] = 16
    vhdr[9] = 0


cdef void gro_flush(worker_t *w, ports_t *ports) noexcept nogil:
    """Write the worker's held train (if any) to its port (the worker's queue)."""
    cdef gro_t *g = &w.gro
    if g.n == 0:
        return
    cdef port_t *out = &ports.slots[g.out]
    cdef port_stats_t *st = &w.stats[g.out]
    cdef int segments = g.n - 1
    if segments == 1:
        memset(g.vhdr, 0, VNET_HLEN)        # a plain frame, checksums complete
    else:
        gro_finish(g.vhdr, <unsigned char *>g.iov[1].iov_base, g.total, g.hlen, g.mss)
    cdef ssize_t written = writev(out.fds[w.index], g.iov, g.n)
    g.n = 0
    if written == g.total + VNET_HLEN:
        st.tx_packets += 1
        st.tx_bytes += g.total
        if segments > 1:
            g.merged += segments
        return
    st.tx_dropped += 1
    w.totals.drops[write_error_reason(written)] += 1


cdef void gro_add(worker_t *w, ports_t *ports, uint32_t out, unsigned char *frame,
                  ssize_t n, ssize_t hlen) noexcept nogil:
    """Hold a mergeable frame (hlen: tcp_gro_header_len) for port out: it
    continues the held train or starts a new one (the old one is written)."""
    cdef ssize_t payload = n - hlen, l4 = gro_l4(frame)
    cdef uint32_t seq = be32(frame + l4 + 4)
    cdef unsigned char *first
    cdef gro_t *g = &w.gro
    if g.n and (out != g.out or g.n == GRO_MAX_IOV + 2 or hlen != g.hlen
                or frame[12] != (<unsigned char *>g.iov[1].iov_base)[12]
                or seq != g.next_seq or payload > g.mss or g.total + payload > 65535
                or not gro_same_flow(<unsigned char *>g.iov[1].iov_base, frame, hlen)):
        gro_flush(w, ports)
    if g.n == 0:
        g.out, g.hlen, g.mss = out, hlen, payload
        g.total = n
        g.iov[0].iov_base = g.vhdr
        g.iov[0].iov_len = VNET_HLEN
        g.iov[1].iov_base = frame
        g.iov[1].iov_len = n
        g.n = 2
    else:
        first = <unsigned char *>g.iov[1].iov_base
        g.iov[g.n].iov_base = frame + hlen
        g.iov[g.n].iov_len = payload
        g.n += 1
        g.total += payload
        first[l4 + 14] = frame[l4 + 14]     # the latest window
        first[l4 + 15] = frame[l4 + 15]
        first[l4 + 13] |= frame[l4 + 13] & 0x08     # PSH
    g.next_seq = seq + payload
    if payload < g.mss or frame[l4 + 13] & 0x08:
        gro_flush(w, ports)              # a short or pushed segment ends the train
