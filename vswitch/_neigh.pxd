# The neighbour table: (network, IPv4 address) -> MAC of every pod address
# the cluster knows (see _neigh.pxi). ARP requests for these are answered
# by the switch itself (ARP suppression), so they never cross the underlay.

from libc.stdint cimport uint32_t, uint64_t

cdef enum:
    NEIGH_MIN_SLOTS = 1024
    ARP_FRAME_LEN = 42        # Ethernet header + an IPv4-over-Ethernet ARP packet


cdef struct neigh_entry_t:    # 16 bytes
    uint64_t key              # network << 32 | IPv4 address; 0 = empty slot (network ids >= 1)
    uint64_t mac


cdef struct neigh_t:
    neigh_entry_t *slots
    uint64_t mask             # capacity - 1, a power of two; kept at most half full
    uint64_t count
    uint64_t multiplier       # the hash's secret (random, odd), as the FDB's
    uint32_t shift
    uint64_t answered         # ARP requests answered from the table
    unsigned char reply[VNET_HLEN + ARP_FRAME_LEN]   # the answer being written (zero vnet header)
