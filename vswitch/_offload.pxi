# Offloads: the virtio_net_hdr that IFF_VNET_HDR fds put before each frame
# (linux/virtio_net.h). Between two ports that both carry it, frame and
# header pass unchanged; towards a port without it, a partial checksum is
# completed here. A TCP superframe bound for the tunnel is cut into
# wire-size segments here (the payload is not copied: each segment is its
# own copy of the headers plus a slice of the superframe).
# Included by _fastpath.pyx; C-only helpers.

from libc.string cimport memcmp, memcpy

cdef extern from "<endian.h>":
    """
    #define HOST_LITTLE_ENDIAN (__BYTE_ORDER == __LITTLE_ENDIAN)
    """
    bint HOST_LITTLE_ENDIAN

cdef inline uint16_t le16(const unsigned char *p) noexcept nogil:
    return p[0] | (p[1] << 8)


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


cdef inline uint64_t csum_add(uint64_t total, const unsigned char *p, ssize_t n) noexcept nogil:
    """Add big-endian 16-bit words of p[0:n] to a ones'-complement sum (an
    odd last byte is padded, so only the last block may have odd length).
    Eight bytes a step, in host order: a ones'-complement sum in the other
    byte order is the same sum byte-swapped (RFC 1071 2(B))."""
    cdef uint64_t acc = 0, w
    cdef ssize_t i = 0
    while i + 8 <= n:
        memcpy(&w, p + i, 8)
        acc += (w & 0xFFFFFFFFULL) + (w >> 32)   # 32-bit halves: no carry is lost
        i += 8
    if i < n:
        w = 0
        memcpy(&w, p + i, n - i)                # the tail, zero-padded
        acc += (w & 0xFFFFFFFFULL) + (w >> 32)
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    if HOST_LITTLE_ENDIAN:
        acc = ((acc & 0xFF) << 8) | (acc >> 8)
    return total + acc


cdef inline uint16_t csum_fold(uint64_t total) noexcept nogil:
    """The checksum to store: the folded sum, complemented."""
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~(<uint16_t>total)


cdef inline void put16(unsigned char *p, uint16_t v) noexcept nogil:
    p[0] = v >> 8
    p[1] = v & 0xFF


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
        ip[10] = ip[11] = 0
        put16(ip + 10, csum_fold(csum_add(0, ip, l4 - l2)))
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


cdef inline ssize_t tcp4_gro_header_len(const unsigned char *frame, ssize_t n) noexcept nogil:
    """Header length of a frame GRO may merge (untagged IPv4 without
    options or fragmentation, TCP with only ACK or ACK+PSH, a payload, and
    both checksums right), or -1."""
    if n < 55 or frame[12] != 0x08 or frame[13] != 0x00:
        return -1
    cdef const unsigned char *ip = frame + 14
    cdef const unsigned char *tcp = frame + 34
    if ip[0] != 0x45 or ip[9] != 6 or (ip[6] & 0x3F) or ip[7] or ((ip[2] << 8) | ip[3]) != n - 14:
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


cdef inline uint32_t be32(const unsigned char *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef void gro_finish(unsigned char *vhdr, unsigned char *first, ssize_t total, ssize_t hlen,
                     uint16_t mss) noexcept nogil:
    """Turn the first segment's headers into a superframe's (IP length and
    checksum, TCP pseudo-header sum for CHECKSUM_PARTIAL) and write the
    virtio_net_hdr that tells the pod's kernel what it gets."""
    put16(first + 16, <uint16_t>(total - 14))
    first[24] = first[25] = 0
    put16(first + 24, csum_fold(csum_add(0, first + 14, 20)))
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
