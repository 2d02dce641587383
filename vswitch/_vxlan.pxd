# VXLAN (RFC 7348) sizes and flags.

cdef enum:
    VXLAN_HLEN = 8
    UDP_HLEN = 8
    VXLAN_FLAG_VNI = 0x08
    OUTER_OVERHEAD = IP4_HLEN + UDP_HLEN + VXLAN_HLEN   # what the tunnel adds to a frame
    UDP_GSO_MAX_SEGS = 64     # datagrams in one UDP_SEGMENT send (the kernel's older limit)
    UDP_GSO_MAX_BYTES = 65535 - IP4_HLEN - UDP_HLEN     # its payload must fit one IPv4 packet
