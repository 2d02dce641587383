# GRO on decapsulation (see _gro.pxd): which frames may merge, holding a
# train of segments, and writing it to the pod's TAP as one superframe.


cdef inline void gro_init(gro_t *g) noexcept nogil:
    g.n = 0
    g.merged = 0


cdef inline ssize_t tcp4_gro_header_len(const unsigned char *frame, ssize_t n) noexcept nogil:
    """Header length of a frame GRO may merge (untagged IPv4 without
    options or fragmentation, TCP with only ACK or ACK+PSH, a payload, and
    both checksums right), or -1."""
    if n < 55 or frame[12] != 0x08 or frame[13] != 0x00:
        return -1
    cdef const unsigned char *ip = frame + 14
    cdef const unsigned char *tcp = frame + 34
    if ip[0] != 0x45 or ip[9] != 6 or (ip[6] & 0x3F) or ip[7] or be16(ip + 2) != n - 14:
        return -1
    cdef ssize_t hlen = 34 + (tcp[12] >> 4) * 4
    if (tcp[12] >> 4) < 5 or hlen >= n or (tcp[13] & ~0x18) or not (tcp[13] & 0x10):
        return -1
    if csum_fold(csum_add(0, ip, 20)) != 0:
        return -1
    if csum_fold(csum_add(csum_add(6 + n - 34, ip + 12, 8), tcp, n - 34)) != 0:
        return -1
    return hlen


cdef inline bint gro_same_flow(const unsigned char *a, const unsigned char *b,
                               ssize_t hlen) noexcept nogil:
    """Same Ethernet header, IP TOS/TTL/addresses, ports, ack, header length
    and options: b may continue a."""
    return memcmp(a, b, 14) == 0 and a[15] == b[15] and a[22] == b[22] \
        and memcmp(a + 26, b + 26, 12) == 0 and memcmp(a + 42, b + 42, 5) == 0 \
        and memcmp(a + 54, b + 54, hlen - 54) == 0


cdef void gro_finish(unsigned char *vhdr, unsigned char *first, ssize_t total, ssize_t hlen,
                     uint16_t mss) noexcept nogil:
    """Turn the first segment's headers into a superframe's (IP length and
    checksum, TCP pseudo-header sum for CHECKSUM_PARTIAL) and write the
    virtio_net_hdr that tells the pod's kernel what it gets."""
    put16(first + 16, <uint16_t>(total - 14))
    ip4_set_checksum(first + 14, 20)
    put16(first + 50, ~csum_fold(csum_add(6 + total - 34, first + 26, 8)))
    vhdr[0] = VNET_F_NEEDS_CSUM
    vhdr[1] = VNET_GSO_TCPV4
    vhdr[2] = hlen & 0xFF
    vhdr[3] = hlen >> 8
    vhdr[4] = mss & 0xFF
    vhdr[5] = mss >> 8
    vhdr[6] = 34
    vhdr[7] = 0
    vhdr[8] = 16
    vhdr[9] = 0


cdef void gro_flush(gro_t *g, ports_t *ports, counters_t *c) noexcept nogil:
    """Write the held train (if any) to its port."""
    if g.n == 0:
        return
    cdef port_t *out = &ports.slots[g.out]
    cdef int segments = g.n - 1
    if segments == 1:
        memset(g.vhdr, 0, VNET_HLEN)        # a plain frame, checksums complete
    else:
        gro_finish(g.vhdr, <unsigned char *>g.iov[1].iov_base, g.total, g.hlen, g.mss)
    cdef ssize_t w = writev(out.fd, g.iov, g.n)
    g.n = 0
    if w == g.total + VNET_HLEN:
        out.tx_packets += 1
        out.tx_bytes += g.total
        if segments > 1:
            g.merged += segments
        return
    out.tx_dropped += 1
    c.drops[write_error_reason(w)] += 1


cdef void gro_add(gro_t *g, ports_t *ports, counters_t *c, uint32_t out, unsigned char *frame,
                  ssize_t n, ssize_t hlen) noexcept nogil:
    """Hold a mergeable frame (hlen: tcp4_gro_header_len) for port out: it
    continues the held train or starts a new one (the old one is written)."""
    cdef ssize_t payload = n - hlen
    cdef uint32_t seq = be32(frame + 38)
    cdef unsigned char *first
    if g.n and (out != g.out or g.n == GRO_MAX_IOV + 2 or hlen != g.hlen
                or seq != g.next_seq or payload > g.mss or g.total + payload > 65535
                or not gro_same_flow(<unsigned char *>g.iov[1].iov_base, frame, hlen)):
        gro_flush(g, ports, c)
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
        first[48] = frame[48]               # the latest window
        first[49] = frame[49]
        first[47] |= frame[47] & 0x08       # PSH
    g.next_seq = seq + payload
    if payload < g.mss or frame[47] & 0x08:
        gro_flush(g, ports, c)              # a short or pushed segment ends the train
