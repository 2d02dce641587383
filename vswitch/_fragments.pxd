# Fragments NetworkPolicy let through (see _fragments.pxi): a later fragment
# carries no ports, so it takes the verdict its packet's first fragment got.
# Bounded and keyed like Linux's reassembly queues: network, addresses,
# protocol and identification, for as long as Linux waits for a packet's
# fragments.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef enum:
    FRAG_SLOTS = 4096             # a power of two: first fragments remembered at once
    FRAG_PROBE = 8                # slots a key may lie from its home
    FRAG_TIMEOUT_MS = 30000       # as net.ipv4.ipfrag_time


cdef struct frag_entry_t:         # 48 bytes
    ip_key_t src                  # (_underlay.pxd: IPv4 mapped)
    ip_key_t dst
    uint32_t id                   # IPv4's 16-bit or IPv6's 32-bit identification
    uint32_t deadline_ms
    uint16_t network              # 0: an empty slot
    uint8_t proto


cdef struct frags_t:
    frag_entry_t *slots
    uint64_t multiplier           # the hash's secret (random, odd)
    uint64_t passed               # later fragments let through on their first's verdict
