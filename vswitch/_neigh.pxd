# The neighbour table: (network, IPv4 or IPv6 address) -> MAC of every pod
# address the cluster knows (see _neigh.pxi). ARP requests and IPv6
# Neighbor Solicitations for these are answered by the switch itself (ARP
# and ND suppression), so they never cross the underlay.

from libc.stdint cimport uint16_t, uint32_t, uint64_t

cdef enum:
    NEIGH_MIN_SLOTS = 1024
    ARP_FRAME_LEN = 42        # Ethernet header + an IPv4-over-Ethernet ARP packet
    NA_FRAME_LEN = 86         # Ethernet, IPv6, a Neighbor Advertisement with its MAC option


cdef struct neigh_entry_t:    # 32 bytes
    ip_key_t ip               # the address (_underlay.pxd: IPv4 mapped)
    uint64_t mac
    uint64_t network          # 0 = empty slot (network ids are >= 1)


cdef struct neigh_t:
    # Written by the control plane only, each change inside `seq`; workers
    # read without a lock (the seqcount protocol, _sync.pxd). A grown
    # table's old slots are freed after a grace period (Datapath.reclaim).
    seqcount_t seq
    neigh_entry_t *slots
    uint64_t mask             # capacity - 1, a power of two; kept at most half full
    uint64_t count
    uint64_t multiplier       # the hash's secret (random, odd), as the FDB's
    uint32_t shift
