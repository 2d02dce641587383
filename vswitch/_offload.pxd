# struct virtio_net_hdr (linux/virtio_net.h): its size and fields.

cdef enum:
    VNET_HLEN = 10            # before each frame on IFF_VNET_HDR fds
    VNET_F_NEEDS_CSUM = 1
    VNET_F_DATA_VALID = 2
    VNET_GSO_NONE = 0
    VNET_GSO_TCPV4 = 1
    VNET_GSO_UDP = 3
    VNET_GSO_TCPV6 = 4
    VNET_GSO_UDP_L4 = 5
    VNET_GSO_ECN = 0x80
