# Port security: a secured port may only send from its own MAC and IPv4
# addresses; pods may not act as IPv6 routers (RA guard). C-only helpers.

cdef inline bint owns_ip(const port_t *p, uint32_t ip) noexcept nogil:
    cdef uint32_t i
    for i in range(p.n_sec_ips):
        if p.sec_ips[i] == ip:
            return True
    return False


cdef inline bint spoofed(const port_t *p, const unsigned char *frame, ssize_t n,
                         ssize_t l2) noexcept nogil:
    """True when a frame from secured port p claims a source that is not
    the port's: Ethernet source, IPv4 source, ARP sender MAC or IP. ARP
    probes (sender 0.0.0.0, RFC 5227) pass; IPv6 may only come from
    link-local or unspecified addresses (no IPv6 is assigned); other
    EtherTypes are checked at layer 2 only. Frames too short to check
    and stacked VLAN tags count as spoofed."""
    if mac48(frame + 6) != p.sec_mac:
        return True
    cdef uint16_t ethertype = (frame[l2 - 2] << 8) | frame[l2 - 1]
    cdef const unsigned char *l3 = frame + l2
    cdef uint32_t spa
    if ethertype == ETH_P_IP:
        return n < l2 + 20 or not owns_ip(p, be32(l3 + 12))
    if ethertype == ETH_P_ARP:
        # htype Ethernet, ptype IPv4, 6-byte and 4-byte addresses.
        if n < l2 + 28 or be32(l3) != 0x00010800 or l3[4] != 6 or l3[5] != 4:
            return True
        if mac48(l3 + 8) != p.sec_mac:
            return True
        spa = be32(l3 + 14)
        return spa != 0 and not owns_ip(p, spa)
    if ethertype == ETH_P_IPV6:
        if n < l2 + 40:
            return True
        if l3[8] == 0xFE and (l3[9] & 0xC0) == 0x80:      # fe80::/10
            return False
        return be32(l3 + 8) | be32(l3 + 12) | be32(l3 + 16) | be32(l3 + 20) != 0
    return ethertype == 0x8100 or ethertype == 0x88A8


cdef enum:
    ICMPV6_ROUTER_ADVERTISEMENT = 134
    ICMPV6_REDIRECT = 137
    IPV6_MAX_EXT_HEADERS = 8   # more than this before the upper layer: refused (RFC 7113)


cdef inline bint csum_offload_ok(const unsigned char *hdr, const unsigned char *frame,
                                 ssize_t n, ssize_t l2) noexcept nogil:
    """Whether a NEEDS_CSUM offload header aims at the TCP or UDP checksum
    field of the frame's own IPv4 or IPv6 (no extension headers) packet.
    Completing a checksum writes two bytes where the pod says: anywhere
    else, it would rewrite a source address after port security passed it."""
    cdef ssize_t start = le16(hdr + 6), offset = le16(hdr + 8), l4
    cdef uint16_t ethertype = (frame[l2 - 2] << 8) | frame[l2 - 1]
    cdef uint8_t proto
    if ethertype == ETH_P_IP:
        if n < l2 + 20 or frame[l2] >> 4 != 4 or (frame[l2] & 0x0F) < 5:
            return False
        l4 = l2 + (frame[l2] & 0x0F) * 4
        proto = frame[l2 + 9]
    elif ethertype == ETH_P_IPV6:
        if n < l2 + 40 or frame[l2] >> 4 != 6:
            return False
        l4 = l2 + 40
        proto = frame[l2 + 6]
    else:
        return False
    if start != l4:
        return False
    if proto == IPPROTO_TCP:
        return offset == 16 and l4 + 20 <= n
    if proto == IPPROTO_UDP:
        return offset == 6 and l4 + 8 <= n
    return False


cdef inline bint router_message(const unsigned char *frame, ssize_t n, ssize_t l2) noexcept nogil:
    """An IPv6 Router Advertisement or Redirect (RA guard, RFC 6105): only
    routers send them, and pods are not routers. The extension header chain
    is followed (RFC 7113: an RA hidden behind options or in a first fragment
    is still an RA); a chain that cannot be followed to its end counts as one."""
    cdef uint16_t ethertype = (frame[l2 - 2] << 8) | frame[l2 - 1]
    if ethertype != ETH_P_IPV6 or n < l2 + 40:
        return False
    cdef uint8_t nh = frame[l2 + 6], next_nh
    cdef ssize_t off = l2 + 40
    cdef int k
    for k in range(IPV6_MAX_EXT_HEADERS + 1):
        if nh == IPPROTO_ICMPV6:
            if off >= n:
                return True
            return frame[off] == ICMPV6_ROUTER_ADVERTISEMENT or frame[off] == ICMPV6_REDIRECT
        if off + 8 > n:
            return nh in (0, 43, 44, 51, 60)        # a chain cut short
        next_nh = frame[off]
        if nh == 0 or nh == 43 or nh == 60:         # hop-by-hop, routing, destination options
            off += (frame[off + 1] + 1) * 8
        elif nh == 44:                              # fragment
            if ((frame[off + 2] << 8) | frame[off + 3]) & 0xFFF8:
                return False                        # not the first: no header chain in it
            off += 8
        elif nh == 51:                              # authentication header
            off += (frame[off + 1] + 2) * 4
        else:
            return False                            # an upper layer other than ICMPv6
        nh = next_nh
    return True
