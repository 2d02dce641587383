# VXLAN (RFC 7348): the 8-byte header, the outer UDP header we write
# ourselves (the source port carries a hash of the inner flow, as Linux
# does, so the underlay can spread flows), and the checks on receipt.
# Included by _fastpath.pyx; C-only helpers.

cdef enum:
    VXLAN_FLAG_VNI = 0x08
    VXLAN_SPORT_MIN = 49152
    VXLAN_SPORT_RANGE = 16384


cdef inline uint32_t flow_hash(const unsigned char *frame, ssize_t n) noexcept nogil:
    """Hash of the inner flow: MACs and EtherType, plus IPv4 addresses and
    L4 ports when present, so one TCP/UDP flow keeps one outer port."""
    cdef uint64_t h = 0xcbf29ce484222325ULL
    cdef ssize_t i, end = 14
    if n >= 34 and frame[12] == 0x08 and frame[13] == 0x00:
        end = 34                                   # IPv4 header without options
        if n >= 38 and (frame[23] == 6 or frame[23] == 17) and (frame[14] & 0x0F) == 5:
            end = 38                               # + source and destination ports
    for i in range(end):
        if 14 <= i < 26:
            continue                               # IPv4 fields that vary per packet
        h = (h ^ frame[i]) * 0x100000001b3ULL
    return <uint32_t>(h ^ (h >> 32))


cdef inline void vxlan_encap_header(unsigned char *out, uint32_t vni, uint16_t dport,
                                    const unsigned char *frame, ssize_t n) noexcept nogil:
    """Write UDP (8) + VXLAN (8) headers for `frame` into out[0:16]. The UDP
    checksum is 0, which RFC 7348 allows over IPv4 (and Linux sends)."""
    cdef uint16_t sport = VXLAN_SPORT_MIN + flow_hash(frame, n) % VXLAN_SPORT_RANGE
    cdef uint16_t length = UDP_HLEN + VXLAN_HLEN + n
    out[0] = sport >> 8
    out[1] = sport & 0xFF
    out[2] = dport >> 8
    out[3] = dport & 0xFF
    out[4] = length >> 8
    out[5] = length & 0xFF
    out[6] = out[7] = 0
    out[8] = VXLAN_FLAG_VNI
    out[9] = out[10] = out[11] = 0
    out[12] = (vni >> 16) & 0xFF
    out[13] = (vni >> 8) & 0xFF
    out[14] = vni & 0xFF
    out[15] = 0


cdef inline int64_t vxlan_vni(const unsigned char *hdr) noexcept nogil:
    """The VNI of a VXLAN header, or -1 if its flags or reserved bits are
    wrong (like Linux, reserved bits set make the packet invalid)."""
    if hdr[0] != VXLAN_FLAG_VNI or hdr[1] or hdr[2] or hdr[3] or hdr[7]:
        return -1
    return (hdr[4] << 16) | (hdr[5] << 8) | hdr[6]
