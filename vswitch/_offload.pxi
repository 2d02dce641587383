# Offloads: the virtio_net_hdr that IFF_VNET_HDR fds put before each frame
# (linux/virtio_net.h). Between two ports that both carry it, frame and
# header pass unchanged; towards a port without it, a partial checksum is
# completed here. A TCP superframe bound for the tunnel is cut into
# wire-size segments here (the payload is not copied: each segment is its
# own copy of the headers plus a slice of the superframe).
# C-only helpers; the header's layout is in _offload.pxd.

cdef inline bint vnet_hdr_valid(const unsigned char *hdr, ssize_t n) noexcept nogil:
    """Whether the header describes frame bytes that exist (n = frame length)."""
    cdef uint8_t gso = hdr[1] & ~VNET_GSO_ECN
    if gso != VNET_GSO_NONE and gso != VNET_GSO_TCPV4 and gso != VNET_GSO_TCPV6 \
            and gso != VNET_GSO_UDP and gso != VNET_GSO_UDP_L4:
        return False
    if hdr[0] & VNET_F_NEEDS_CSUM:
        return le16(hdr + 6) + le16(hdr + 8) + 2 <= n
    return gso == VNET_GSO_NONE           # the kernel sends GSO only with NEEDS_CSUM


cdef inline bint vnet_is_gso(const unsigned char *hdr) noexcept nogil:
    return (hdr[1] & ~VNET_GSO_ECN) != VNET_GSO_NONE


cdef void complete_checksum(unsigned char *hdr, unsigned char *frame, ssize_t n) noexcept nogil:
    """Finish a CHECKSUM_PARTIAL frame: the field at csum_start+csum_offset
    holds the pseudo-header sum; add everything from csum_start to the end
    and store the complement. Then mark the header as checksummed."""
    cdef ssize_t start = le16(hdr + 6), field = start + le16(hdr + 8)
    cdef uint16_t csum = csum_fold(csum_add(0, frame + start, n - start))
    if csum == 0:
        csum = 0xFFFF                       # 0 means "no checksum" to UDP
    put16(frame + field, csum)
    hdr[0] = (hdr[0] & ~VNET_F_NEEDS_CSUM) | VNET_F_DATA_VALID


cdef inline ssize_t tso_header_len(const unsigned char *hdr, const unsigned char *frame,
                                   ssize_t n, ssize_t l2) noexcept nogil:
    """Length of the headers every segment of a TCP superframe repeats
    (csum_start + the TCP header; hdr_len is not trusted), or -1 if this is
    not a TCP superframe that can be cut here."""
    cdef uint8_t gso = hdr[1] & ~VNET_GSO_ECN
    cdef ssize_t l4 = le16(hdr + 6)
    if le16(hdr + 4) == 0 or l4 + 20 > n:
        return -1
    if gso == VNET_GSO_TCPV4:
        if frame[l2] >> 4 != 4 or l4 != l2 + (frame[l2] & 0x0F) * 4 or frame[l2 + 9] != 6:
            return -1
    elif gso == VNET_GSO_TCPV6:
        if frame[l2] >> 4 != 6 or l4 != l2 + 40 or frame[l2 + 6] != 6:
            return -1                       # extension headers: not cut here
    else:
        return -1
    cdef ssize_t hlen = l4 + (frame[l4 + 12] >> 4) * 4
    return hlen if (frame[l4 + 12] >> 4) >= 5 and hlen <= n else -1


cdef void tso_segment_headers(unsigned char *seg, const unsigned char *hdr,
                              const unsigned char *frame, ssize_t l2, ssize_t hlen,
                              uint32_t index, const unsigned char *payload, ssize_t size,
                              bint last) noexcept nogil:
    """Write into seg[0:hlen] the headers of segment `index` (carrying
    payload[0:size]) of a TCP superframe: IP length (and IPv4 ID and header
    checksum), TCP sequence number, flags, and the full TCP checksum."""
    memcpy(seg, frame, hlen)
    cdef ssize_t l4 = le16(hdr + 6), tcp_len = hlen - l4 + size
    cdef unsigned char *ip = seg + l2
    cdef unsigned char *tcp = seg + l4
    cdef uint64_t pseudo
    if ip[0] >> 4 == 4:
        put16(ip + 2, <uint16_t>(l4 - l2 + tcp_len))
        put16(ip + 4, <uint16_t>(((ip[4] << 8) | ip[5]) + index))
        ip4_set_checksum(ip, l4 - l2)
        pseudo = csum_add(6 + tcp_len, ip + 12, 8)
    else:
        put16(ip + 4, <uint16_t>tcp_len)
        pseudo = csum_add(6 + tcp_len, ip + 8, 32)
    cdef uint32_t seq = ((<uint32_t>tcp[4] << 24) | (tcp[5] << 16) | (tcp[6] << 8) | tcp[7]) \
        + index * le16(hdr + 4)
    tcp[4] = seq >> 24
    tcp[5] = (seq >> 16) & 0xFF
    tcp[6] = (seq >> 8) & 0xFF
    tcp[7] = seq & 0xFF
    if not last:
        tcp[13] &= ~0x09                    # FIN and PSH only on the last segment
    if index:
        tcp[13] &= ~0x80                    # CWR only on the first
    tcp[16] = tcp[17] = 0
    put16(tcp + 16, csum_fold(csum_add(csum_add(pseudo, tcp, hlen - l4), payload, size)))
