# Ethernet frame parsing. Included by _fastpath.pyx; C-only helpers.

cdef inline uint64_t mac48(const unsigned char *p) noexcept nogil:
    """The 6 bytes at p as a 48-bit integer, first byte most significant."""
    return ((<uint64_t>p[0] << 40) | (<uint64_t>p[1] << 32) | (<uint64_t>p[2] << 24) |
            (<uint64_t>p[3] << 16) | (<uint64_t>p[4] << 8) | <uint64_t>p[5])


cdef inline bint is_multicast(const unsigned char *mac) noexcept nogil:
    # The I/G bit; broadcast is a multicast address too.
    return mac[0] & 1


cdef inline ssize_t eth_header_len(const unsigned char *frame, ssize_t n) noexcept nogil:
    """Length of the Ethernet header with an optional 802.1Q/802.1ad tag,
    or -1 when the frame is too short to hold it."""
    if n < ETH_HLEN:
        return -1
    cdef uint16_t ethertype = (frame[12] << 8) | frame[13]
    if ethertype == 0x8100 or ethertype == 0x88A8:
        if n < ETH_HLEN + VLAN_HLEN:
            return -1
        return ETH_HLEN + VLAN_HLEN
    return ETH_HLEN


def mac_to_str(uint64_t mac):
    return ":".join(f"{(mac >> s) & 0xFF:02x}" for s in range(40, -8, -8))

