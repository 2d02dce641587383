# Frame and header helpers shared by every concept of the data plane: sizes,
# byte order, the Internet checksum (written once, here), Ethernet parsing
# and the clocks. Plain C, inline; included by _fastpath.pxd.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.string cimport memcpy
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC, CLOCK_REALTIME

cdef extern from "<endian.h>":
    """
    #define HOST_LITTLE_ENDIAN (__BYTE_ORDER == __LITTLE_ENDIAN)
    """
    bint HOST_LITTLE_ENDIAN


cdef enum:
    FRAME_HEADROOM = 64       # room to prepend headers without copying
    FRAME_BUF = 65536 + 128   # one TSO superframe plus its headers
    ETH_HLEN = 14
    VLAN_HLEN = 4
    IP4_HLEN = 20             # without options
    IP6_HLEN = 40             # without extension headers
    IPV6_MAX_EXT_HEADERS = 8  # more before the upper layer: not followed (RFC 7113)
    ETH_P_IP = 0x0800
    ETH_P_ARP = 0x0806
    ETH_P_IPV6 = 0x86DD
    IPPROTO_ICMP = 1
    IPPROTO_TCP = 6
    IPPROTO_UDP = 17
    IPPROTO_ICMPV6 = 58
    IPPROTO_SCTP = 132
    TCP_FIN = 0x01
    TCP_SYN = 0x02
    TCP_RST = 0x04
    TCP_ACK = 0x10


# ------------------------------------------------------------ byte order

cdef inline uint16_t le16(const unsigned char *p) noexcept nogil:
    return p[0] | (p[1] << 8)


cdef inline uint16_t be16(const unsigned char *p) noexcept nogil:
    return (p[0] << 8) | p[1]


cdef inline uint32_t be32(const unsigned char *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline uint64_t be64(const unsigned char *p) noexcept nogil:
    return (<uint64_t>be32(p) << 32) | be32(p + 4)


cdef inline void put16(unsigned char *p, uint16_t v) noexcept nogil:
    p[0] = v >> 8
    p[1] = v & 0xFF


cdef inline void put32(unsigned char *p, uint32_t v) noexcept nogil:
    put16(p, v >> 16)
    put16(p + 2, v & 0xFFFF)


cdef inline void put64(unsigned char *p, uint64_t v) noexcept nogil:
    put32(p, <uint32_t>(v >> 32))
    put32(p + 4, <uint32_t>v)


# ------------------------------------------------------ Internet checksum

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


cdef inline void ip4_set_checksum(unsigned char *ip, ssize_t hlen) noexcept nogil:
    """Compute and store an IPv4 header's checksum."""
    ip[10] = ip[11] = 0
    put16(ip + 10, csum_fold(csum_add(0, ip, hlen)))


# ------------------------------------------------------------- Ethernet

cdef inline uint64_t mac48(const unsigned char *p) noexcept nogil:
    """The 6 bytes at p as a 48-bit integer, first byte most significant."""
    return ((<uint64_t>p[0] << 40) | (<uint64_t>p[1] << 32) | (<uint64_t>p[2] << 24) |
            (<uint64_t>p[3] << 16) | (<uint64_t>p[4] << 8) | <uint64_t>p[5])


cdef inline void put_mac(unsigned char *p, uint64_t mac) noexcept nogil:
    cdef int k
    for k in range(6):
        p[k] = (mac >> (40 - 8 * k)) & 0xFF


cdef inline bint is_multicast(const unsigned char *mac) noexcept nogil:
    # The I/G bit; broadcast is a multicast address too.
    return mac[0] & 1


cdef inline ssize_t eth_header_len(const unsigned char *frame, ssize_t n) noexcept nogil:
    """Length of the Ethernet header with an optional 802.1Q/802.1ad tag,
    or -1 when the frame is too short to hold it."""
    if n < ETH_HLEN:
        return -1
    cdef uint16_t ethertype = be16(frame + 12)
    if ethertype == 0x8100 or ethertype == 0x88A8:
        if n < ETH_HLEN + VLAN_HLEN:
            return -1
        return ETH_HLEN + VLAN_HLEN
    return ETH_HLEN


cdef inline int ip6_upper_layer(const unsigned char *ip, ssize_t avail, ssize_t *offset,
                                bint *later_fragment,
                                const unsigned char **fragment=NULL) noexcept nogil:
    """The upper-layer protocol of the IPv6 packet of avail (>= IP6_HLEN)
    bytes at ip, past its extension headers; offset: where it starts;
    later_fragment: the packet is a fragment other than the first (its
    protocol is named, but no header of it is here); fragment (if not
    NULL): its fragment header, NULL when it has none. -1: a chain cut short
    by avail, or longer than IPV6_MAX_EXT_HEADERS."""
    cdef uint8_t nh = ip[6]
    cdef ssize_t off = IP6_HLEN
    cdef int _k
    later_fragment[0] = False
    if fragment != NULL:
        fragment[0] = NULL
    for _k in range(IPV6_MAX_EXT_HEADERS + 1):
        if nh != 0 and nh != 43 and nh != 44 and nh != 51 and nh != 60:
            offset[0] = off
            return nh
        if off + 8 > avail:
            return -1
        if nh == 0 or nh == 43 or nh == 60:     # hop-by-hop, routing, destination options
            nh, off = ip[off], off + (ip[off + 1] + 1) * 8
        elif nh == 44:                          # fragment
            if fragment != NULL:
                fragment[0] = ip + off
            if be16(ip + off + 2) & 0xFFF8:
                later_fragment[0], offset[0] = True, off + 8    # what follows is data
                return ip[off]
            nh, off = ip[off], off + 8
        else:                                   # authentication header
            nh, off = ip[off], off + (ip[off + 1] + 2) * 4
    return -1


# ---------------------------------------------------------------- clocks

cdef inline uint64_t monotonic_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec


cdef inline uint64_t realtime_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec
