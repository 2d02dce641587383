# Addresses (see _underlay.pxd): keys of either family, and the underlay's
# socket addresses and outer headers made of them. C-only helpers, and the conversion from
# and to the Python integers the control plane passes (int of the
# ipaddress.IPv6Address, the mapped one for IPv4).

cdef inline bint key_is_v4(const ip_key_t *k) noexcept nogil:
    return k.hi == 0 and (k.lo >> 32) == 0xFFFF


cdef inline bint key_is_zero(const ip_key_t *k) noexcept nogil:
    return k.hi == 0 and k.lo == 0


cdef inline bint key_eq(const ip_key_t *a, const ip_key_t *b) noexcept nogil:
    return a.hi == b.hi and a.lo == b.lo


cdef inline bint key_lt(const ip_key_t *a, const ip_key_t *b) noexcept nogil:
    return a.hi < b.hi or (a.hi == b.hi and a.lo < b.lo)


cdef inline ip_key_t key_of_ip4(uint32_t address) noexcept nogil:
    cdef ip_key_t k
    k.hi, k.lo = 0, (<uint64_t>0xFFFF << 32) | address
    return k


cdef inline ip_key_t key_of_ip6(const unsigned char *address) noexcept nogil:
    cdef ip_key_t k
    k.hi, k.lo = be64(address), be64(address + 8)
    return k


cdef inline ip_key_t key_of_sockaddr(const sockaddr_in6 *a) noexcept nogil:
    """The key of a received datagram's source (either family)."""
    if a.sin6_family == AF_INET:
        return key_of_ip4(ntohl((<const sockaddr_in *>a).sin_addr.s_addr))
    return key_of_ip6(a.sin6_addr.s6_addr)


cdef inline uint32_t sockaddr_of_key(sockaddr_in6 *out, const ip_key_t *k,
                                     uint16_t port) noexcept nogil:
    """Write the socket address of key k and port (host order); its length."""
    cdef sockaddr_in *a4
    memset(out, 0, sizeof(sockaddr_in6))
    if key_is_v4(k):
        a4 = <sockaddr_in *>out
        a4.sin_family, a4.sin_port = AF_INET, htons(port)
        a4.sin_addr.s_addr = htonl(<uint32_t>k.lo)
        return sizeof(sockaddr_in)
    out.sin6_family, out.sin6_port = AF_INET6, htons(port)
    put64(out.sin6_addr.s6_addr, k.hi)
    put64(out.sin6_addr.s6_addr + 8, k.lo)
    return sizeof(sockaddr_in6)


cdef inline ssize_t outer_ip_header(unsigned char *out, const ip_key_t *src,
                                    const ip_key_t *dst, ssize_t payload) noexcept nogil:
    """An outer IPv4 (DF, as Linux's VXLAN sends) or IPv6 header for
    payload bytes of UDP, for captured copies; its length."""
    if key_is_v4(src):
        memset(out, 0, IP4_HLEN)
        out[0], out[8], out[9] = 0x45, 64, 17
        put16(out + 2, <uint16_t>(payload + IP4_HLEN))
        out[6] = 0x40
        put32(out + 12, <uint32_t>src.lo)
        put32(out + 16, <uint32_t>dst.lo)
        ip4_set_checksum(out, IP4_HLEN)
        return IP4_HLEN
    memset(out, 0, IP6_HLEN)
    out[0], out[6], out[7] = 0x60, 17, 64
    put16(out + 4, <uint16_t>payload)
    put64(out + 8, src.hi)
    put64(out + 16, src.lo)
    put64(out + 24, dst.hi)
    put64(out + 32, dst.lo)
    return IP6_HLEN


cdef inline ip_key_t key_from_int(object address):
    cdef ip_key_t k
    k.hi, k.lo = address >> 64, address & 0xFFFFFFFFFFFFFFFF
    return k


cdef inline object key_to_int(const ip_key_t *k):
    return (<object>k.hi << 64) | k.lo
