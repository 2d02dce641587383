# VXLAN (RFC 7348): the 8-byte header, the inner flow hash that picks the
# outer source port (one of the tunnel's sending sockets), and the checks on
# receipt. C-only helpers; sizes and flags are in _vxlan.pxd.

cdef inline uint64_t _mix(uint64_t h, uint64_t v) noexcept nogil:
    h = (h ^ v) * 0x9E3779B97F4A7C15ULL
    return h ^ (h >> 29)


cdef inline uint32_t flow_hash(const unsigned char *frame, ssize_t n) noexcept nogil:
    """Hash of the inner flow: MACs and EtherType, plus IPv4 or IPv6
    addresses and L4 ports when present, so one TCP/UDP flow keeps one
    outer port. A few word loads and multiplies: it runs for every datagram."""
    cdef uint64_t macs = 0, rest = 0, addrs = 0, ports = 0, a6 = 0
    if n < 14:
        return 0
    memcpy(&macs, frame, 8)
    memcpy(&rest, frame + 8, 6)
    if n >= 34 and frame[12] == 0x08 and frame[13] == 0x00:
        memcpy(&addrs, frame + 26, 8)                     # IPv4 source and destination
        if n >= 38 and (frame[23] == 6 or frame[23] == 17) and (frame[14] & 0x0F) == 5:
            memcpy(&ports, frame + 34, 4)                 # + source and destination ports
    elif n >= 54 and frame[12] == 0x86 and frame[13] == 0xDD:
        memcpy(&addrs, frame + 30, 8)                     # the IPv6 addresses' low halves
        memcpy(&a6, frame + 46, 8)
        addrs ^= a6 * 0x9E3779B97F4A7C15ULL
        if n >= 58 and (frame[20] == 6 or frame[20] == 17):
            memcpy(&ports, frame + 54, 4)
    cdef uint64_t h = _mix(_mix(_mix(_mix(0xcbf29ce484222325ULL, macs), rest), addrs), ports)
    return <uint32_t>(h ^ (h >> 32))


cdef inline void vxlan_header(unsigned char *out, uint32_t vni) noexcept nogil:
    """The 8-byte VXLAN header: flags 0x08 (VNI valid), reserved bits zero."""
    out[0] = VXLAN_FLAG_VNI
    out[1] = out[2] = out[3] = 0
    out[4] = (vni >> 16) & 0xFF
    out[5] = (vni >> 8) & 0xFF
    out[6] = vni & 0xFF
    out[7] = 0


cdef inline void udp_header(unsigned char *out, uint16_t sport, uint16_t dport,
                            ssize_t payload) noexcept nogil:
    """A UDP header (checksum 0) for captured copies of what the kernel sent."""
    cdef uint16_t length = UDP_HLEN + payload
    out[0], out[1] = sport >> 8, sport & 0xFF
    out[2], out[3] = dport >> 8, dport & 0xFF
    out[4], out[5] = length >> 8, length & 0xFF
    out[6] = out[7] = 0


cdef inline int64_t vxlan_vni(const unsigned char *hdr) noexcept nogil:
    """The VNI of a VXLAN header, or -1 if its flags or reserved bits are
    wrong (like Linux, reserved bits set make the packet invalid)."""
    if hdr[0] != VXLAN_FLAG_VNI or hdr[1] or hdr[2] or hdr[3] or hdr[7]:
        return -1
    return (hdr[4] << 16) | (hdr[5] << 8) | hdr[6]
