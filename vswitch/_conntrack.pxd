# Connection tracking: the connections that NetworkPolicy allowed, so that
# their packets in both directions pass with one lookup and no rule walk
# (see _conntrack.pxi). A connection is keyed by its two endpoints in a
# canonical order (the lower (address, port) first), so that a packet and
# its reply find the same entry; addresses of either family as 128 bits.

from libc.stdint cimport uint16_t, uint32_t, uint64_t
from posix.mman cimport (MAP_ANONYMOUS, MAP_FAILED, MAP_PRIVATE, PROT_READ, PROT_WRITE, madvise,
                         mmap, munmap)

cdef extern from "<sys/mman.h>":
    int MADV_HUGEPAGE

cdef enum:
    CT_MIN_SLOTS = 1024
    CT_SWEEP_WHEN_FULL = 1024     # slots an insert into a full table sweeps first
    CT_NO_PORT = 0xFFFF           # an entry's in/out port: beyond the tunnel
    CT_GATEWAY_REMOTE = MAX_PORTS     # via_gateway's count for connections to peers
    CT_GATEWAY_COUNTS = MAX_PORTS + 1
    CT_OWNERS = MAX_PORTS + 1     # owned's counts: per port, then the tunnel's (CT_NO_PORT)
    CT_EARLY_DROP_SCAN = 64       # slots a full table looks through for an unreplied entry
    # Zones (key.rest >> 56): a connection seen on a path through a host port
    # is another entry than the same addresses seen pod to pod, and the two
    # legs of a routed one (pod -> host port, host port -> pod) are two
    # entries: an allowed leg never stands in for the other's check.
    CT_ZONE_DIRECT = 0
    CT_ZONE_ROUTED_A = 1          # a host port on the path; endpoint a is on the other side
    CT_ZONE_ROUTED_B = 2          # ... endpoint b is
    # Flags of an entry.
    CT_ORIG_A = 1                 # the connection was opened from endpoint a (the lower)
    CT_REPLIED = 2                # the responder has sent
    CT_FIN_A = 4                  # TCP FIN seen from a
    CT_FIN_B = 8                  # TCP FIN seen from b
    CT_CLOSED = 16                # TCP RST seen
    CT_VIA_GATEWAY = 32           # it came from a host port (in_port) to a pod or peer (out_port)
    # Timeouts in ms, as Linux's conntrack and Cilium's have them (roughly).
    CT_TCP_OPENING_MS = 60000             # a TCP connection not answered yet
    CT_TCP_ESTABLISHED_MS = 21600000      # 6 h, as Cilium's
    CT_TCP_CLOSING_MS = 10000             # after FIN both ways, or RST
    CT_UNREPLIED_MS = 30000               # UDP, ICMP echo, others: one way only
    CT_REPLIED_MS = 120000                # ... answered
    CT_REFRESH_MS = 1000                  # a deadline moves in steps of this (at least)


cdef struct ct_key_t:             # 40 bytes
    ip_key_t a                    # endpoint a's address (_underlay.pxd: IPv4 mapped)
    ip_key_t b                    # endpoint b's
    uint64_t rest                 # zone << 56 | network << 40 | protocol << 32 | a's port << 16
                                  # | b's port


cdef struct ct_entry_t:           # 64 bytes: one cache line
    ct_key_t key                  # key.rest 0: an empty slot (network ids are >= 1)
    uint32_t deadline_ms          # CLOCK_MONOTONIC ms (mod 2^32) when it expires
    uint32_t generation           # the policy generation it was last allowed under
    uint16_t flags
    uint16_t in_port              # where its first packet came from (CT_NO_PORT: the tunnel)
    uint16_t out_port             # where it went (CT_NO_PORT: a peer)
    uint16_t owner                # the port it is charged to (ct_t.owned; CT_NO_PORT: the tunnel)
    uint64_t pad2


cdef struct ct_t:
    # Shared by all workers, entirely under `lock` (the fragments table and
    # the gateway marks too): only frames of pods a policy selects, or that
    # cross a host port while some pod is, take it. One lock, not striped:
    # a connection's packets are few lookups next to their copies.
    pthread_mutex_t lock
    ct_entry_t *slots
    uint64_t mask                 # capacity - 1, a power of two, >= 2 * max_entries
    uint64_t count                # entries, expired ones not yet swept included
    uint64_t max_entries          # new connections beyond it are dropped (conntrack_full)
    uint64_t max_per_owner        # ... and beyond this many of one pod's (conntrack_pod_full)
    uint64_t secrets[5]           # the hash's multipliers, one per key word (random, odd)
    uint32_t shift
    uint32_t generation           # bumped when policy changes: entries are checked again
    uint64_t sweep_at             # where the next expiry sweep goes on
    uint64_t early_at             # where the next early drop looks
    uint64_t created
    uint64_t expired
    uint64_t revoked              # connections a policy change no longer allowed
    uint64_t early_dropped        # unreplied connections evicted to make room
    uint32_t *via_gateway         # CT_VIA_GATEWAY connections per port, then all peers' (ct_gateway_count)
    uint32_t *owned               # entries charged to each port, then to the tunnel (CT_OWNERS)
