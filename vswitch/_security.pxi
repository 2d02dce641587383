# Port security: a secured port may only send from its own MAC and IPv4
# addresses. Included by _fastpath.pyx; C-only helpers.

cdef enum:
    ETH_P_IP = 0x0800
    ETH_P_ARP = 0x0806
    ETH_P_IPV6 = 0x86DD


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
