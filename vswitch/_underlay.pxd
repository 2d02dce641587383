# Addresses of either family, and the underlay's. The data plane keys every
# IP address the same way (ip_key_t: VTEPs, neighbours, conntrack, policy
# ranges), as 128 bits with IPv4 mapped to ::ffff:a.b.c.d (RFC 4291). A
# VTEP is IPv4 or IPv6 (one family per node, that of its vtep_ip); each
# peer's socket address is kept in a sockaddr_in6-sized slot holding the
# family's sockaddr.

from libc.stdint cimport uint64_t


cdef struct ip_key_t:
    uint64_t hi               # the address's first 64 bits (0 for IPv4)
    uint64_t lo               # its last 64 (0xffff << 32 | the IPv4 address, for IPv4)
