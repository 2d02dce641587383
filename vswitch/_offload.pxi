# Offloads: the virtio_net_hdr that IFF_VNET_HDR fds put before each frame
# (linux/virtio_net.h). Between two ports that both carry it, frame and
# header pass unchanged; towards a port without it, a partial checksum is
# completed here and a GSO superframe cannot go (segmentation comes with
# the overlay). Included by _fastpath.pyx; C-only helpers.

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


cdef void complete_checksum(unsigned char *hdr, unsigned char *frame, ssize_t n) noexcept nogil:
    """Finish a CHECKSUM_PARTIAL frame: the field at csum_start+csum_offset
    holds the pseudo-header sum; add everything from csum_start to the end
    and store the complement. Then mark the header as checksummed."""
    cdef ssize_t start = le16(hdr + 6), field = start + le16(hdr + 8), i
    cdef uint64_t total = 0
    i = start
    while i + 1 < n:
        total += (frame[i] << 8) | frame[i + 1]
        i += 2
    if i < n:
        total += frame[i] << 8
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    cdef uint16_t csum = ~(<uint16_t>total)
    if csum == 0:
        csum = 0xFFFF                       # 0 means "no checksum" to UDP
    frame[field] = csum >> 8
    frame[field + 1] = csum & 0xFF
    hdr[0] = (hdr[0] & ~VNET_F_NEEDS_CSUM) | VNET_F_DATA_VALID
