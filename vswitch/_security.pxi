# Port security: a secured port may only send from its own MAC and IPv4
# and IPv6 addresses (its link-local one included), and its neighbour
# discovery may only speak for those; pods may not act as IPv6 routers (RA
# guard). C-only helpers.

cdef enum:
    ICMPV6_MLD_REPORT = 131
    ICMPV6_MLD_DONE = 132
    ICMPV6_ROUTER_SOLICITATION = 133
    ICMPV6_ROUTER_ADVERTISEMENT = 134
    ICMPV6_NEIGHBOR_SOLICITATION = 135
    ICMPV6_NEIGHBOR_ADVERTISEMENT = 136
    ICMPV6_REDIRECT = 137
    ICMPV6_MLD2_REPORT = 143
    ND_SOURCE_LL_ADDR = 1     # neighbour discovery options
    ND_TARGET_LL_ADDR = 2


cdef inline bint owns_ip(const port_t *p, uint32_t ip) noexcept nogil:
    cdef uint32_t i
    for i in range(p.n_sec_ips):
        if p.sec_ips[i] == ip:
            return True
    return False


cdef inline bint owns_ip6(const port_t *p, const unsigned char *a) noexcept nogil:
    cdef ip_key_t key = key_of_ip6(a)
    cdef uint32_t i
    for i in range(p.n_sec_ip6s):
        if key_eq(&p.sec_ip6s[i], &key):
            return True
    return False


cdef inline bint owns_address(const port_t *p, const ip_key_t *k) noexcept nogil:
    """Whether k (either family) is one of the port's own addresses."""
    cdef uint32_t i
    if key_is_v4(k):
        return owns_ip(p, <uint32_t>k.lo)
    for i in range(p.n_sec_ip6s):
        if key_eq(&p.sec_ip6s[i], k):
            return True
    return False


cdef inline ssize_t icmp6_offset(const unsigned char *frame, ssize_t n, ssize_t l2) noexcept nogil:
    """Where the ICMPv6 message of an IPv6 frame (n >= l2 + 40) starts, past
    its extension headers (an NA behind options is an NA to its receiver),
    with at least its 4-byte header in the frame; -1 if it is not ICMPv6, or
    a later fragment, or behind a chain that cannot be followed (RA guard
    drops those)."""
    cdef ssize_t off
    cdef bint later
    if ip6_upper_layer(frame + l2, n - l2, &off, &later) != IPPROTO_ICMPV6 or later:
        return -1
    return l2 + off if l2 + off + 4 <= n else -1


cdef inline bint unspecified_allowed(const unsigned char *frame, ssize_t n, ssize_t l2) noexcept nogil:
    """The unspecified source (::) is for duplicate address detection only:
    its Neighbor Solicitations, and the MLD reports that join their group."""
    cdef ssize_t icmp = icmp6_offset(frame, n, l2)
    return icmp >= 0 and frame[icmp] in (ICMPV6_NEIGHBOR_SOLICITATION, ICMPV6_MLD_REPORT,
                                         ICMPV6_MLD2_REPORT)


cdef inline bint nd_spoofed(const port_t *p, const unsigned char *frame, ssize_t n,
                            ssize_t l2) noexcept nogil:
    """True when neighbour discovery from secured port p speaks for another:
    a Neighbor Advertisement whose target is not the port's address, or a
    link-layer address option (in a solicitation or advertisement) that is
    not its MAC. A malformed option counts as spoofed."""
    cdef uint16_t ethertype = (frame[l2 - 2] << 8) | frame[l2 - 1]
    if ethertype != ETH_P_IPV6 or n < l2 + 40:
        return False
    cdef ssize_t icmp = icmp6_offset(frame, n, l2), opt, end, size
    if icmp < 0:
        return False
    cdef uint8_t kind = frame[icmp]
    if kind == ICMPV6_NEIGHBOR_ADVERTISEMENT:
        if icmp + 24 > n or not owns_ip6(p, frame + icmp + 8):
            return True
        opt = icmp + 24
    elif kind == ICMPV6_NEIGHBOR_SOLICITATION:
        opt = icmp + 24
    elif kind == ICMPV6_ROUTER_SOLICITATION:
        opt = icmp + 8
    else:
        return False
    end = min(n, l2 + 40 + be16(frame + l2 + 4))
    while opt + 2 <= end:
        size = frame[opt + 1] * 8
        if size == 0 or opt + size > end:
            return True
        if (frame[opt] == ND_SOURCE_LL_ADDR or frame[opt] == ND_TARGET_LL_ADDR) and \
                (size < 8 or mac48(frame + opt + 2) != p.sec_mac):
            return True
        opt += size
    return False


cdef inline bint spoofed(const port_t *p, const unsigned char *frame, ssize_t n,
                         ssize_t l2) noexcept nogil:
    """True when a frame from secured port p claims a source that is not
    the port's: Ethernet source, IPv4 or IPv6 source, ARP sender MAC or
    IP. ARP probes (sender 0.0.0.0, RFC 5227) pass, and so does the
    unspecified IPv6 source of duplicate address detection; other
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
        if be64(l3 + 8) | be64(l3 + 16) == 0:
            return not unspecified_allowed(frame, n, l2)
        return not owns_ip6(p, l3 + 8)
    return ethertype == 0x8100 or ethertype == 0x88A8


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


cdef inline bint for_routers(const unsigned char *frame, ssize_t n) noexcept nogil:
    """A multicast message only routers listen to: an IPv6 Router
    Solicitation or MLD listener report or done. A switch delivers these
    from pods to router ports alone, as a bridge with MLD snooping does:
    flooded, every new pod's reports would cost a write to every port."""
    cdef ssize_t l2 = eth_header_len(frame, n), icmp
    if l2 < 0 or n < l2 + 40 or frame[0] != 0x33 or frame[1] != 0x33 or \
            frame[l2 - 2] != 0x86 or frame[l2 - 1] != 0xDD:
        return False
    icmp = icmp6_offset(frame, n, l2)
    return icmp >= 0 and frame[icmp] in (ICMPV6_MLD_REPORT, ICMPV6_MLD_DONE,
                                         ICMPV6_ROUTER_SOLICITATION, ICMPV6_MLD2_REPORT)


cdef inline bint router_message(const unsigned char *frame, ssize_t n, ssize_t l2) noexcept nogil:
    """An IPv6 Router Advertisement or Redirect (RA guard, RFC 6105): only
    routers send them, and pods are not routers. The extension header chain
    is followed (RFC 7113: an RA hidden behind options or in a first fragment
    is still an RA); a chain that cannot be followed to its end counts as one."""
    cdef uint16_t ethertype = (frame[l2 - 2] << 8) | frame[l2 - 1]
    if ethertype != ETH_P_IPV6 or n < l2 + 40:
        return False
    cdef ssize_t off
    cdef bint later
    cdef int proto = ip6_upper_layer(frame + l2, n - l2, &off, &later)
    if proto < 0:
        return True                                 # a chain that cannot be followed
    if later or proto != IPPROTO_ICMPV6:
        return False                                # a later fragment holds no header
    return off >= n - l2 or frame[l2 + off] == ICMPV6_ROUTER_ADVERTISEMENT \
        or frame[l2 + off] == ICMPV6_REDIRECT
